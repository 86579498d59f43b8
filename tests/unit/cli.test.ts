/** The CLI's contract for commands that need no kernel: output formats and exit codes. */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { rm, writeFile } from "node:fs/promises";
import { test } from "node:test";
import { intercept } from "../../demo/lab.js";

test("validate: all errors of all files, sorted, exit 1; --json prints them as data", async () => {
  const files = ["tests/golden/invalid/bad-ports.yaml", "tests/golden/invalid/missing-interceptors.yaml"];
  const text = await intercept("validate", ...files);
  assert.equal(text.exitCode, 1);
  const lines = text.stderr.trim().split("\n");
  assert.equal(lines.length, 6);
  assert.deepEqual(lines, [...lines].sort((a, b) => a.localeCompare(b, undefined, { numeric: true })));
  const json = await intercept("validate", ...files, "--json");
  assert.equal(json.exitCode, 1);
  const diagnostics = JSON.parse(json.stdout) as { file: string; line: number; column: number; message: string }[];
  assert.equal(diagnostics.length, 6);
  assert.deepEqual(diagnostics[0], { file: "tests/golden/invalid/bad-ports.yaml", line: 2, column: 11, message: "interceptors[0].port must be between 1 and 65535, got 0" });
});

test("validate: good policies in both forms pass with exit 0", async () => {
  const result = await intercept("validate", "policies/demo.ts");
  assert.equal(result.exitCode, 0, result.stderr);
  assert.equal((await intercept("validate", "examples/config.yaml", "--json")).stdout.trim(), "[]");
});

test("compile --check exits 0 on a clean tree, 1 for a stale file; unknown commands and options exit 2 (usage)", async () => {
  assert.equal((await intercept("compile", "--check")).exitCode, 0);
  const stale = "generated/deleted_policy.bpf.c";
  await writeFile(stale, "/* its policy is gone */\n");
  try {
    const check = await intercept("compile", "--check");
    assert.equal(check.exitCode, 1);
    assert.match(check.stderr, /generated\/deleted_policy\.bpf\.c: out of date/);
    assert.match((await intercept("compile")).stdout, /generated\/deleted_policy\.bpf\.c \(removed: no policy\)/);
    assert.equal(existsSync(stale), false);
  } finally {
    await rm(stale, { force: true });
  }
  const unknown = await intercept("frobnicate");
  assert.equal(unknown.exitCode, 2);
  assert.match(unknown.stderr, /unknown command "frobnicate"/);
  assert.equal((await intercept("plan", "--bogus")).exitCode, 2);
});
