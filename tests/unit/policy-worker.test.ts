/**
 * The policy worker (src/reconcile/policy-worker): policies are read, evaluated
 * and validated off the main thread, a deadline or the heap limit ends a
 * read with one located diagnostic at the file it was on, the main thread's
 * event loop keeps turning meanwhile, and the worker is reused, or replaced
 * once stopped.
 */
import "../support/temporary-cache.js";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { after, test } from "node:test";
import { POLICY_DEADLINE_MS } from "../../src/load/limits.js";
import { validPolicies } from "../../src/reconcile/desired.js";
import { closePolicyWorker, loadAndValidate } from "../../src/reconcile/policy-worker/client.js";
import { PolicyError } from "../../src/errors.js";
import { RECURSIVE_TYPE, largeYamlPolicy } from "../support/hostile-policies.js";

const scratch = await mkdtemp(path.join(tmpdir(), "intercept-worker-"));
after(async () => {
  await closePolicyWorker();
  await rm(scratch, { recursive: true, force: true });
});

async function write(name: string, text: string): Promise<string> {
  const file = path.join(scratch, name);
  await writeFile(file, text);
  return file;
}

const VALID_TS =
  'import { definePolicy } from "intercept-bpf";\nexport default definePolicy({ interceptors: [{ originalPort: 8000, port: 9000 }] });\n';

test("a load and validation in the worker come back as plain data, with working source maps", async () => {
  const file = await write("web.yaml", "name: web\ninterceptors:\n  - { originalPort: 8000, port: 9000 }\n");
  const checked = await loadAndValidate([file]);
  assert.deepEqual(checked.diagnostics, []);
  assert.deepEqual(checked.validation.diagnostics, []);
  assert.deepEqual(
    checked.validation.policies.map((policy) => policy.name),
    ["web"],
  );
  const [loaded] = checked.policies;
  assert.deepEqual(loaded!.sourceMap.locate("/interceptors/0/port"), {
    file,
    line: 3,
    column: 33,
    length: 4,
    lineText: "  - { originalPort: 8000, port: 9000 }",
  });
});

test("a deadline crossed is one located policy/too-slow at the file being read; the next read gets a new worker", async () => {
  const slow = await write("large.yaml", largeYamlPolicy());
  const started = performance.now();
  const loaded = await loadAndValidate([slow], { deadlineMs: 50 });
  assert.ok(performance.now() - started < 2_000, "stopped at the deadline, not at the end of the file");
  assert.deepEqual(loaded.policies, []);
  // Parsing a megabyte of YAML takes far longer than 50 ms; on a busy machine, even reading it from disk may.
  assert.equal(loaded.diagnostics.length, 1);
  const [diagnostic] = loaded.diagnostics;
  assert.match(
    `${diagnostic!.file}:${diagnostic!.line}:${diagnostic!.column}: ${diagnostic!.code}: ${diagnostic!.message}`,
    new RegExp(
      `^${slow}:1:1: policy/too-slow: (reading|evaluating) this policy took longer than 50 ms: a policy needs a fraction of that$`,
    ),
  );
  const valid = await write("valid.ts", VALID_TS);
  assert.deepEqual(
    (await validPolicies([valid])).policies.map((policy) => policy.name),
    ["valid"],
  );
});

test("through validPolicies (plan, apply, status, the agent) a crossed bound is a PolicyError", async () => {
  const slow = await write("large-too.yaml", largeYamlPolicy());
  await assert.rejects(validPolicies([slow], { deadlineMs: 50 }), (error: unknown) => {
    assert.ok(error instanceof PolicyError);
    assert.deepEqual(
      error.diagnostics.map((d) => d.code),
      ["policy/too-slow"],
    );
    return true;
  });
});

test(`a recursive type is stopped at the default deadline (${POLICY_DEADLINE_MS} ms), while the main thread's event loop keeps turning`, {
  timeout: 60_000,
}, async () => {
  // The compiler is started by a valid policy first (one not in the cache): here only the file's own time counts.
  await loadAndValidate([await write("warm.ts", `${VALID_TS}// not cached: ${scratch}\n`)]);
  const file = await write("recursive.ts", RECURSIVE_TYPE);
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const started = performance.now();
  const loaded = await loadAndValidate([file]);
  const elapsed = performance.now() - started;
  delay.disable();
  // The deadline, and what it does not count (messages, loading the parser), which a busy machine stretches.
  assert.ok(elapsed < POLICY_DEADLINE_MS + 3_000, `${Math.round(elapsed)} ms`);
  assert.equal(loaded.diagnostics.length, 1);
  const [diagnostic] = loaded.diagnostics;
  assert.match(
    `${diagnostic!.file}:${diagnostic!.line}:${diagnostic!.column}: ${diagnostic!.code}`,
    new RegExp(`^${file}:1:1: policy/too-(slow|large)$`),
  );
  // The main thread never ran the type checker: its longest stall is far below the worker's seconds.
  assert.ok(delay.max / 1e6 < 500, `longest event-loop stall ${Math.round(delay.max / 1e6)} ms`);
});

test("closing the worker ends the read in flight at once, and drops those queued", { timeout: 30_000 }, async () => {
  const file = await write("recursive-closed.ts", RECURSIVE_TYPE);
  const reading = assert.rejects(loadAndValidate([file]), /policy reading stopped: the process is ending/);
  const queued = assert.rejects(loadAndValidate([file]), /policy reading stopped: the process is ending/);
  await new Promise((resolve) => setTimeout(resolve, 200));
  const started = performance.now();
  await closePolicyWorker();
  await reading;
  await queued;
  assert.ok(performance.now() - started < 1_000);
  const valid = await write("after-close.yaml", "interceptors: []\n");
  assert.deepEqual((await loadAndValidate([valid])).diagnostics, []);
});

test("the files after one that crosses a bound are still read and validated, in a new worker", {
  timeout: 30_000,
}, async () => {
  const dir = path.join(scratch, "folder");
  await mkdir(dir);
  await writeFile(
    path.join(dir, "a-good.yaml"),
    "interfaces: { include: [eth0] }\ninterceptors:\n  - { originalPort: 8000, port: 9000 }\n",
  );
  await writeFile(path.join(dir, "b-slow.yaml"), largeYamlPolicy());
  await writeFile(
    path.join(dir, "c-bad.yaml"),
    "interfaces: { include: [eth1] }\ninterceptors:\n  - { originalPort: 8001, port: 0 }\n",
  );
  await writeFile(
    path.join(dir, "d-same.yaml"),
    "interfaces: { include: [eth2] }\ninterceptors:\n  - { originalPort: 8002, port: 8002 }\n",
  );
  // Far below what a megabyte of YAML takes, far above what a few lines do.
  const checked = await loadAndValidate([dir], { deadlineMs: 500 });
  assert.deepEqual(
    checked.policies.map((policy) => path.basename(policy.file)),
    ["a-good.yaml", "c-bad.yaml", "d-same.yaml"],
  );
  const codes = [...checked.diagnostics, ...checked.validation.diagnostics].map(
    (d) => `${path.basename(d.file)} ${d.code}`,
  );
  assert.deepEqual(codes, ["b-slow.yaml policy/too-slow", "c-bad.yaml schema/range", "d-same.yaml rule/same-port"]);
});

test("files read before one that crosses a bound keep their problems and their place, whichever worker read them", {
  timeout: 30_000,
}, async () => {
  const dir = path.join(scratch, "ordered");
  await mkdir(dir);
  // Read just before the slow one: its result may not have been posted when the worker is stopped (then it is read again).
  await writeFile(path.join(dir, "a-broken.yaml"), "interceptors: [\n");
  await writeFile(path.join(dir, "b-good.yaml"), "interfaces: { include: [eth0] }\ninterceptors: []\n");
  await writeFile(path.join(dir, "c-slow.yaml"), largeYamlPolicy());
  await writeFile(path.join(dir, "d-broken.yaml"), "interceptors: {\n");
  const checked = await loadAndValidate([dir], { deadlineMs: 500 });
  assert.deepEqual(
    checked.policies.map((policy) => path.basename(policy.file)),
    ["b-good.yaml"],
  );
  assert.deepEqual(
    checked.diagnostics.map((d) => `${path.basename(d.file)} ${d.code}`),
    ["a-broken.yaml yaml/syntax", "c-slow.yaml policy/too-slow", "d-broken.yaml yaml/syntax"],
  );
});
