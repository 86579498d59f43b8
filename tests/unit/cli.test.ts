/** The CLI's contract for commands that need no kernel: output formats and exit codes. */
import "../support/temporary-cache.js";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { cp, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { intercept, interceptIn } from "../../lab/network.js";

test("validate: all errors of all files, sorted, exit 1; --json prints them as a document", async () => {
  const files = ["tests/golden/invalid/bad-ports.yaml", "tests/golden/invalid/missing-interceptors.yaml"];
  const text = await intercept("validate", ...files);
  assert.equal(text.exitCode, 1);
  const headers = text.stderr.split("\n").filter((line) => /^\S+:\d+:\d+: error\[/.test(line));
  assert.equal(headers.length, 6);
  assert.deepEqual(
    headers,
    [...headers].sort((a, b) => a.localeCompare(b, undefined, { numeric: true })),
  );
  assert.equal(
    headers[0],
    "tests/golden/invalid/bad-ports.yaml:2:11: error[schema/range]: interceptors[0].port must be between 1 and 65535, got 0",
  );
  assert.match(text.stderr, /\n {2}2 \| {3}- port: 0\n {4}\| {11}\^\n/, "the source line with a caret under the value");
  assert.match(text.stderr, /\n6 errors in 2 files$/);
  const json = await intercept("validate", ...files, "--json");
  assert.equal(json.exitCode, 1);
  const document = JSON.parse(json.stdout) as {
    formatVersion: string;
    kind: string;
    valid: boolean;
    files: string[];
    diagnostics: object[];
  };
  assert.equal(document.formatVersion, "1.1");
  assert.equal(document.kind, "validate");
  assert.equal(document.valid, false);
  assert.deepEqual(document.files, files);
  const { diagnostics } = document;
  assert.equal(diagnostics.length, 6);
  assert.deepEqual(diagnostics[0], {
    code: "schema/range",
    severity: "error",
    file: "tests/golden/invalid/bad-ports.yaml",
    line: 2,
    column: 11,
    length: 1,
    lineText: "  - port: 0",
    message: "interceptors[0].port must be between 1 and 65535, got 0",
  });
});

test("validate: good policies in both forms pass with exit 0", async () => {
  const result = await intercept("validate", "policies/demo.ts");
  assert.equal(result.exitCode, 0, result.stderr);
  assert.deepEqual(JSON.parse((await intercept("validate", "examples/config.yaml", "--json")).stdout), {
    formatVersion: "1.1",
    kind: "validate",
    valid: true,
    files: ["examples/config.yaml"],
    diagnostics: [],
  });
});

test("compile --check exits 0 on a clean tree, 1 for a stale file; unknown commands and options exit 1 (usage)", async () => {
  // A copy of the repository's policies and generated C: the test writes only there.
  const repository = await mkdtemp(path.join(tmpdir(), "intercept-compile-"));
  try {
    await cp("policies", path.join(repository, "policies"), { recursive: true });
    await cp("generated", path.join(repository, "generated"), { recursive: true });
    assert.equal((await interceptIn(repository, "compile", "--check")).exitCode, 0);
    const stale = path.join(repository, "generated/deleted_policy.bpf.c");
    await writeFile(stale, "/* its policy is gone */\n");
    const check = await interceptIn(repository, "compile", "--check");
    assert.equal(check.exitCode, 1);
    assert.match(check.stderr, /generated\/deleted_policy\.bpf\.c: out of date/);
    assert.match(
      (await interceptIn(repository, "compile")).stdout,
      /generated\/deleted_policy\.bpf\.c \(removed: no policy\)/,
    );
    assert.equal(existsSync(stale), false);
  } finally {
    await rm(repository, { recursive: true, force: true });
  }
  const unknown = await intercept("frobnicate");
  assert.equal(unknown.exitCode, 1);
  assert.match(unknown.stderr, /unknown command "frobnicate"/);
  assert.equal((await intercept("plan", "--bogus")).exitCode, 1);
});
