/**
 * Nodes without clang: objects built once (`build --out DIR`, as CI does)
 * are applied with `--objects DIR` by a CLI that cannot find clang; a
 * tampered object and a changed policy are refused before the kernel is
 * touched. In namespaces this test creates.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { execa } from "execa";
import { intercept, Lab } from "../../lab/network.js";

let lab: Lab;
let scratch: string;
let objects: string;
let noClang: string;

before(async () => {
  lab = await Lab.create();
  scratch = await mkdtemp(path.join(tmpdir(), "intercept-prebuilt-"));
  await lab.startInServer(["node", "dist/demo/test-server.js"], /ready/);
  objects = path.join(scratch, "objects");
  const built = await intercept("build", "policies/demo.ts", "--out", objects);
  assert.equal(built.exitCode, 0, built.stderr);
  // Every tool intercept runs on a node, and no clang.
  noClang = path.join(scratch, "bin");
  await mkdir(noClang);
  for (const tool of ["node", "ip", "tc", "bpftool", "nsenter", "mount", "flock", "ss"]) {
    await symlink((await execa("which", [tool])).stdout.trim(), path.join(noClang, tool));
  }
});

after(async () => {
  await lab?.destroy();
  await rm(scratch, { recursive: true, force: true });
});

/** The CLI with a PATH that has no clang. */
const withoutClang = async (...args: string[]) => {
  const result = await execa("node", ["bin/intercept.js", ...args], {
    reject: false,
    stdin: "ignore",
    env: { PATH: noClang },
    extendEnv: false,
  });
  return { exitCode: result.exitCode ?? 1, stdout: String(result.stdout), stderr: String(result.stderr) };
};

const ourFilters = async () =>
  String((await lab.runInServer(["tc", "filter", "show", "dev", lab.serverLink, "ingress"])).stdout);

describe("prebuilt objects", { concurrency: false }, () => {
  test("build --out writes each object and a manifest naming its C, content hash, clang and sha256", async () => {
    const manifest = JSON.parse(await readFile(path.join(objects, "manifest.json"), "utf8"));
    assert.equal(manifest.format, "intercept-objects");
    assert.match(manifest.clang, /clang version/);
    assert.deepEqual(
      manifest.objects.map((o: { policy: string; object: string; minimumKernel: string }) => [
        o.policy,
        o.object,
        o.minimumKernel,
      ]),
      [["demo", "demo.bpf.o", "5.9"]],
    );
    assert.ok(existsSync(path.join(objects, "demo.bpf.o")));
  });

  test("without clang, --objects plans and applies, and traffic is intercepted", async () => {
    const plan = await withoutClang(
      "plan",
      "policies/demo.ts",
      "--netns",
      lab.serverNs,
      "--objects",
      objects,
      "--no-color",
    );
    assert.equal(plan.exitCode, 0, plan.stderr);
    assert.match(plan.stdout, /\+ program\.demo/);
    const applied = await withoutClang(
      "apply",
      "--yes",
      "policies/demo.ts",
      "--netns",
      lab.serverNs,
      "--objects",
      objects,
    );
    assert.equal(applied.exitCode, 0, applied.stderr);
    assert.match((await lab.curl(8000)).response, /\r\nServer: intercept\r\n/i);
    assert.equal(
      (
        await withoutClang(
          "plan",
          "policies/demo.ts",
          "--netns",
          lab.serverNs,
          "--objects",
          objects,
          "--detailed-exitcode",
        )
      ).exitCode,
      0,
      "the kernel matches",
    );
    assert.equal((await withoutClang("destroy", "--yes", "--netns", lab.serverNs)).exitCode, 0);
  });

  test("a tampered object is refused, naming the policy; nothing changes", async () => {
    const tampered = path.join(scratch, "tampered");
    await cp(objects, tampered, { recursive: true });
    const object = path.join(tampered, "demo.bpf.o");
    const bytes = await readFile(object);
    bytes[bytes.length - 1] ^= 0xff;
    await writeFile(object, bytes);
    const result = await withoutClang(
      "apply",
      "--yes",
      "policies/demo.ts",
      "--netns",
      lab.serverNs,
      "--objects",
      tampered,
    );
    assert.equal(result.exitCode, 1);
    assert.equal(
      result.stderr.trim(),
      `intercept: policy demo: ${object} is not the object its manifest names (sha256 differs): build the objects again`,
    );
    assert.equal(await ourFilters(), "");
  });

  test("a changed policy is refused, not run with the old program; nothing changes", async () => {
    const changed = path.join(scratch, "demo.yaml");
    await writeFile(changed, "name: demo\ninterceptors:\n  - { originalPort: 8000, port: 9001 }\n");
    const result = await withoutClang("apply", "--yes", changed, "--netns", lab.serverNs, "--objects", objects);
    assert.equal(result.exitCode, 1);
    assert.equal(
      result.stderr.trim(),
      `intercept: policy demo: its C is not the C ${path.join(objects, "demo.bpf.o")} was built from (the policy or intercept changed since): build the objects again`,
    );
    assert.equal(await ourFilters(), "");
  });

  test("a policy with no object, on a node without clang: one line that says what to do", async () => {
    const other = path.join(scratch, "other.yaml");
    await writeFile(other, "interceptors:\n  - { originalPort: 7000, port: 7100 }\n");
    const result = await withoutClang("apply", "--yes", other, "--netns", lab.serverNs, "--objects", objects);
    assert.equal(result.exitCode, 1);
    assert.equal(
      result.stderr.trim(),
      `intercept: policy other has no prebuilt object in ${objects} and clang is not installed: build the objects in CI (\`intercept build --out DIR\`) or install clang`,
    );
    assert.equal(await ourFilters(), "");
  });
});
