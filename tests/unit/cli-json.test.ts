/**
 * Machine output: plan, status and validate --json, and errors under --json,
 * are checked against their JSON Schemas in schemas/, from real output
 * (the CLI where no kernel is needed; the same functions over the fake
 * datapath where it is).
 */
import "../support/temporary-cache.js";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { Ajv2020 } from "ajv/dist/2020.js";
import { intercept } from "../../lab/network.js";
import { createLogger } from "../../src/agent/log.js";
import { statusJson } from "../../src/commands/status.js";
import { FORMAT_VERSION } from "../../src/model/output-format.js";
import { planJson } from "../../src/plan/index.js";
import { executePlan, makePlan } from "../../src/reconcile/index.js";
import { inspect } from "../../src/reconcile/inspect.js";
import { desiredPolicy } from "../support/desired.js";
import { FakeDatapath } from "../support/fake-datapath.js";

const SCHEMAS = ["validate-output", "error-output", "plan-output", "status-output"] as const;

async function validators() {
  const ajv = new Ajv2020({ allErrors: true, strict: true, allowUnionTypes: true });
  for (const name of SCHEMAS) ajv.addSchema(JSON.parse(await readFile(`schemas/${name}.schema.json`, "utf8")));
  return (name: (typeof SCHEMAS)[number], document: unknown) => {
    const validate = ajv.getSchema(`urn:intercept:${name}`)!;
    assert.ok(
      validate(document),
      `${name}: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(document, null, 2).slice(0, 2000)}`,
    );
  };
}

const INVALID = ["tests/golden/invalid/bad-ports.yaml", "tests/golden/invalid/missing-interceptors.yaml"];
const objects = { objectFor: (hash: string) => ({ objectPath: `${hash}.bpf.o`, prefixes: [] }) };

test("validate --json: valid and invalid policies match schemas/validate-output.schema.json", async () => {
  const check = await validators();
  const valid = await intercept("validate", "policies/demo.ts", "--json");
  assert.equal(valid.exitCode, 0);
  check("validate-output", JSON.parse(valid.stdout));
  const invalid = await intercept("validate", ...INVALID, "--json");
  assert.equal(invalid.exitCode, 1);
  const document = JSON.parse(invalid.stdout);
  check("validate-output", document);
  assert.equal(document.diagnostics.length, 6);
  // A schema that accepted anything would pass the above: a wrong document must fail it.
  assert.throws(() => check("validate-output", { ...document, formatVersion: 2 }), /formatVersion/);
  assert.throws(
    () => check("validate-output", { ...document, diagnostics: [{ ...document.diagnostics[0], line: 0 }] }),
    /line/,
  );
});

test("plan --json with invalid policies: the error document with every diagnostic on stdout, exit 1", async () => {
  const check = await validators();
  const plan = await intercept("plan", ...INVALID, "--json", "--netns", "never-opened");
  assert.equal(plan.exitCode, 1);
  const document = JSON.parse(plan.stdout);
  check("error-output", document);
  assert.equal(document.kind, "error");
  assert.equal(document.error.code, "policy-invalid");
  const validate = JSON.parse((await intercept("validate", ...INVALID, "--json")).stdout);
  assert.deepEqual(document.diagnostics, validate.diagnostics, "the same diagnostics validate --json prints");
  assert.equal(
    plan.stderr,
    "intercept: 6 errors in the policies",
    "stderr keeps its one line; the diagnostics are in the JSON",
  );
});

test("--json errors of every kind carry their code: a bad flag, a bad value, status too", async () => {
  const check = await validators();
  for (const [args, code] of [
    [["plan", "--json", "--nets", "edge"], "usage"],
    [["status", "--json", "--netns", "../etc"], "usage"],
    [["validate", "--json", "no/such/file.yaml"], undefined],
  ] as const) {
    const result = await intercept(...args);
    assert.equal(result.exitCode, 1, args.join(" "));
    const document = JSON.parse(result.stdout);
    if (code === undefined) {
      check("validate-output", document); // a missing file is a diagnostic of validate's, not a failure of the command
      assert.equal(document.diagnostics[0].code, "load/not-found");
      continue;
    }
    check("error-output", document);
    assert.equal(document.error.code, code, args.join(" "));
  }
});

test("plan --json (as plan builds it from the kernel) matches schemas/plan-output.schema.json", async () => {
  const check = await validators();
  const fake = new FakeDatapath({ name: "edge" });
  fake.addLink("eth0");
  fake.addLink("eth1");
  const web = desiredPolicy("web", [
    { originalPort: 8080, port: 15006 },
    { originalPort: 53, port: 5353, protocol: "udp" },
  ]);
  const created = planJson(makePlan([web], await fake.observe()));
  check("plan-output", created);
  assert.deepEqual([created.formatVersion, created.kind, created.namespace], [FORMAT_VERSION, "plan", "edge"]);
  await executePlan(makePlan([web], await fake.observe()), fake, objects);
  const grown = desiredPolicy("web", [
    { originalPort: 8080, port: 15006, enabled: false },
    { originalPort: 53, port: 5353, protocol: "udp" },
    { originalPort: 9090, port: 15006 },
  ]);
  const replaced = planJson(makePlan([grown], await fake.observe()));
  check("plan-output", replaced);
  check("plan-output", planJson(makePlan([], await fake.observe())));
  assert.throws(
    () => check("plan-output", { ...replaced, changes: [{ ...replaced.changes[0], type: "program.explode" }] }),
    /type/,
  );
});

test("status --json (as status builds it from the kernel) matches schemas/status-output.schema.json", async () => {
  const check = await validators();
  const fake = new FakeDatapath();
  fake.addLink("eth0");
  const demo = desiredPolicy("demo", [
    { originalPort: 8000, port: 9000 },
    { originalPort: 53, port: 5353, protocol: "udp" },
  ]);
  await executePlan(makePlan([demo], await fake.observe()), fake, objects);
  fake.count(demo.program, 0, "steered", { packets: 1, bytes: 60 });
  fake.leaveIncompleteVersion({ policy: "demo", version: "0123456789abcdef" });
  const report = await inspect(fake, [demo]);
  const document = statusJson(report, undefined);
  check("status-output", document);
  assert.equal(document.kind, "status");
  assert.ok(document.drift.length > 0, "the incomplete version is drift");
  assert.equal(document.programs[0]!.rules[0]!.counters?.steered.packets, 1);
  check("status-output", statusJson(await inspect(fake, []), "2 errors in the policies: rules are shown by index"));
});

test("the agent's JSON log lines carry a level: error for failures, warn for rollbacks and waits, info otherwise", () => {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger("json", (line) => lines.push(JSON.parse(line)));
  log("applied", "policies applied: 1 added, 0 changed, 0 destroyed", { add: 1 });
  log("rolled back", "program.demo: load failed");
  log("error", "reading the policies: EACCES");
  assert.deepEqual(
    lines.map((line) => [line.level, line.event]),
    [
      ["info", "applied"],
      ["warn", "rolled back"],
      ["error", "error"],
    ],
  );
  assert.deepEqual(Object.keys(lines[0]!), ["time", "level", "event", "message", "add"]);
  const text: string[] = [];
  createLogger("text", (line) => text.push(line))("error", "boom");
  assert.match(text[0]!, /^\S+ error: boom\n$/, "text lines stay as they were");
});

test("a logger's batch writes the lines logged meanwhile together, in order, in writes of about 64 KiB", () => {
  const writes: string[] = [];
  const log = createLogger("json", (text) => writes.push(text));
  log("applied", "before");
  log.batch!(() => {
    for (let i = 0; i < 3; i++) log("flow", `flow ${i}`, { slot: i });
    log.batch!(() => log("flow", "nested")); // goes with the outer batch
    assert.equal(writes.length, 1, "nothing of the batch written before its end");
  });
  log("applied", "after");
  assert.equal(writes.length, 3);
  const batch = writes[1]!
    .split("\n")
    .slice(0, -1)
    .map((line) => JSON.parse(line));
  assert.deepEqual(
    batch.map((line) => line.message),
    ["flow 0", "flow 1", "flow 2", "nested"],
  );
  assert.equal(batch[2].slot, 2);
  writes.length = 0;
  log.batch!(() => {
    for (let i = 0; i < 1000; i++) log("flow", "x".repeat(200));
  });
  assert.ok(writes.length > 1 && writes.length < 10, `${writes.length} writes`);
  assert.ok(writes.every((text) => text.length < 80 * 1024 && text.endsWith("\n")));
  assert.equal(writes.join("").split("\n").length - 1, 1000);
  assert.throws(
    () =>
      log.batch!(() => {
        log("flow", "kept");
        throw new Error("boom");
      }),
    /boom/,
  );
  assert.match(writes.at(-1)!, /"message":"kept"/, "a batch that throws still writes what it logged");
});
