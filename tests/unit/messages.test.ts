/**
 * Messages that match the state, each by its exact text: a new hook is not
 * an interrupted apply, a missing policies folder is not "1 error", an
 * emptied saved plan is not "the kernel changed", and nothing a saved
 * plan holds reaches the terminal unescaped.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { policiesNote } from "../../src/commands/status.js";
import { PolicyError } from "../../src/errors.js";
import { executePlan, loadDesired, makePlan, planRun } from "../../src/reconcile/index.js";
import { savedPlanNamespace, savedPlanRun, saveRun } from "../../src/reconcile/saved-plan-run.js";
import { desiredPolicy } from "../support/desired.js";
import { FakeDatapath } from "../support/fake-datapath.js";

const scratch = await mkdtemp(path.join(tmpdir(), "intercept-messages-"));
after(() => rm(scratch, { recursive: true, force: true }));

const objects = { objectFor: (hash: string) => ({ objectPath: `${hash}.bpf.o`, prefixes: [] }) };
/** Identifies programs as tests/support/desired.ts does: by their C source. */
const builder = {
  identify: async (compiled: { source: string }) => createHash("sha256").update(compiled.source).digest("hex"),
  object: async (_: unknown, contentHash: string) => `${contentHash}.bpf.o`,
};

test("steer-only to rewrite: egress is a new hook, not half of an interrupted switch", async () => {
  const steer = desiredPolicy("demo", [{ originalPort: 8000, port: 9000, strategy: "steer" }]);
  const rewrite = desiredPolicy("demo", [{ originalPort: 8000, port: 9000, strategy: "rewrite" }]);
  assert.deepEqual(steer.hooks, ["ingress"], "a steer-only policy has an ingress program alone");
  const fake = new FakeDatapath();
  fake.addLink("eth0");
  await executePlan(makePlan([steer], await fake.observe()), fake, objects);
  const [, attachment] = makePlan([rewrite], await fake.observe()).changes;
  const [from, to] = [steer, rewrite].map((d) => `demo@${d.program.version.slice(0, 8)}`);
  assert.equal(attachment?.reason, `switch from ${from} to ${to}, adding the egress hook`);
  await executePlan(makePlan([rewrite], await fake.observe()), fake, objects);
  const [, back] = makePlan([steer], await fake.observe()).changes;
  assert.equal(back?.reason, `switch from ${to} to ${from}, removing the egress hook`);
});

test('status with no policies folder says what is missing, not "1 error in the policies"', async () => {
  const missing = path.join(scratch, "no-such-folder");
  const error = await loadDesired([missing], builder).then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  assert.ok(error instanceof PolicyError);
  assert.equal(
    policiesNote(error),
    `no policies to name the rules: ${JSON.stringify(missing)} does not exist; rules are shown by index (give the policies' paths)`,
  );
  const invalid = path.join(scratch, "invalid.yaml");
  await writeFile(invalid, "interceptors:\n  - { port: 0, originalPort: 8000 }\n");
  const invalidError = await loadDesired([invalid], builder).then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  assert.ok(invalidError instanceof PolicyError);
  assert.equal(
    policiesNote(invalidError),
    "1 error in the policies: rules are shown by index (run `intercept validate`)",
  );
});

describe("saved plans", () => {
  const demo = desiredPolicy("demo", [{ originalPort: 8000, port: 9000, strategy: "rewrite" }]);

  /** A plan saved for @fake by `plan --out`, as JSON to edit. */
  async function savedFor(fake: FakeDatapath, name: string): Promise<{ file: string; plan: Record<string, unknown> }> {
    const file = path.join(scratch, `${name}.plan`);
    await saveRun(file, await planRun([demo], fake));
    return { file, plan: JSON.parse(await readFile(file, "utf8")) };
  }

  /** What `apply --plan FILE` does before it changes anything: the namespace, then the plan checked against the kernel. */
  async function applyRefusal(file: string, fake: FakeDatapath): Promise<string> {
    try {
      await savedPlanNamespace(file, undefined);
      await savedPlanRun(file, fake, builder);
    } catch (error) {
      return (error as Error).message;
    }
    assert.fail(`${file} was not refused: ${await readFile(file, "utf8").then((t) => t.slice(0, 300))}`);
  }

  test('a plan emptied of its changes is refused as such, not as "the kernel changed"', async () => {
    const fake = new FakeDatapath();
    fake.addLink("eth0");
    const { file, plan } = await savedFor(fake, "emptied");
    await writeFile(file, JSON.stringify({ ...plan, changes: [] }));
    assert.equal(
      await applyRefusal(file, fake),
      `${file} holds no changes, but its policies give 2 changes here: run \`intercept plan\` again`,
    );
  });

  test("a refusal names what moved: the version a link runs, by name", async () => {
    const fake = new FakeDatapath();
    fake.addLink("v0");
    const steer = desiredPolicy("demo", [{ originalPort: 8000, port: 9000, strategy: "steer" }]);
    const other = desiredPolicy("demo", [{ originalPort: 8000, port: 9001, strategy: "steer" }]);
    await executePlan(makePlan([steer], await fake.observe()), fake, objects);
    const { file } = await savedFor(fake, "moved");
    await executePlan(makePlan([other], await fake.observe()), fake, objects); // someone else applies
    const [was, now] = [steer, other].map((d) => `version ${d.program.version} of demo`);
    assert.equal(
      await applyRefusal(file, fake),
      `the kernel changed since ${file} was made (${JSON.stringify(JSON.parse(await readFile(file, "utf8")).createdAt)}): ` +
        `link v0: ingress now runs ${now}, the plan expected ${was}; ${now} appeared; ${was} is gone: ` +
        "run `intercept plan` again",
    );
  });

  test("rewording a change's reason does not make a saved plan stale: reasons are for display", async () => {
    const fake = new FakeDatapath();
    fake.addLink("eth0");
    const { file, plan } = await savedFor(fake, "reworded");
    const changes = (plan.changes as { reason: string }[]).map((change) => ({ ...change, reason: "worded otherwise" }));
    await writeFile(file, JSON.stringify({ ...plan, changes }));
    const run = await savedPlanRun(file, fake, builder);
    assert.equal(run.plan.changes.length, changes.length);
  });

  test("changing a change's reasonCode makes a saved plan stale: codes are decisions", async () => {
    const fake = new FakeDatapath();
    fake.addLink("eth0");
    const { file, plan } = await savedFor(fake, "recoded");
    const changes = plan.changes as { type: string; reasonCode: string }[];
    assert.deepEqual(
      changes.map((change) => `${change.type} ${change.reasonCode}`),
      ["program.create policy-added", "attachment.create link-selected"],
    );
    const recoded = changes.map((change, i) => (i === 0 ? { ...change, reasonCode: "interrupted-load" } : change));
    await writeFile(file, JSON.stringify({ ...plan, changes: recoded }));
    assert.equal(
      await applyRefusal(file, fake),
      `${file}: its changes are not what its policies give here (the file was edited, or templates or clang differ): ` +
        "run `intercept plan` again",
    );
  });

  test("control characters in every string field are printed escaped, never raw", async () => {
    const fake = new FakeDatapath();
    fake.addLink("eth0");
    const { file, plan } = await savedFor(fake, "hostile");
    const hostile = "\u001b[2J\u0007\u009b31m";
    const policy = (plan.policies as { source: string; definition: Record<string, unknown> }[])[0]!;
    const change = (plan.changes as Record<string, unknown>[])[0]!;
    const observed = plan.observed as { links: Record<string, unknown>[] };
    const edits: Record<string, Record<string, unknown>> = {
      format: { ...plan, format: hostile },
      namespace: { ...plan, namespace: hostile },
      namespaceKey: { ...plan, namespaceKey: hostile },
      observed: { ...plan, observed: hostile },
      "observed.links[0].name": {
        ...plan,
        observed: { ...observed, links: [{ ...observed.links[0], name: hostile }] },
      },
      "observed.links[0].filters": {
        ...plan,
        observed: { ...observed, links: [{ ...observed.links[0], filters: { [hostile]: 7 } }] },
      },
      "observed.programs": {
        ...plan,
        observed: { ...observed, programs: [{ ref: { policy: hostile, version: hostile }, programIds: {} }] },
      },
      "observed key": { ...plan, observed: { ...observed, [hostile]: hostile } },
      "policies[0].source": {
        ...plan,
        policies: [{ ...policy, source: hostile, definition: { ...policy.definition, name: "Bad Name" } }],
      },
      "policies[0].definition.name": {
        ...plan,
        policies: [{ ...policy, definition: { ...policy.definition, name: hostile } }],
      },
      "policies[0].definition key": {
        ...plan,
        policies: [{ ...policy, definition: { ...policy.definition, [hostile]: 1 } }],
      },
      "changes[0].type": { ...plan, changes: [{ ...change, type: hostile }] },
      "changes[0].address": { ...plan, changes: [{ ...change, address: hostile }] },
      "changes[0].reason": { ...plan, changes: [{ ...change, reason: hostile }] },
      "a key": { ...plan, [hostile]: hostile },
      "not JSON": { raw: `{"format": "intercept-plan", ${hostile}` },
    };
    for (const [field, edited] of Object.entries(edits)) {
      await writeFile(file, "raw" in edited ? String(edited.raw) : JSON.stringify(edited));
      const message = await applyRefusal(file, fake);
      // eslint-disable-next-line no-control-regex
      assert.doesNotMatch(message, /[\u0000-\u001f\u007f-\u009f]/, `${field}: ${JSON.stringify(message)}`);
    }
    // createdAt is printed only when the kernel moved; where a field is quoted, its escapes show.
    await fake.addQdisc(fake.addLink("eth1")); // the kernel moves: the refusal quotes createdAt
    await writeFile(file, JSON.stringify({ ...plan, createdAt: hostile }));
    assert.equal(
      await applyRefusal(file, fake),
      `the kernel changed since ${file} was made ("\\u001b[2J\\u0007\\u009b31m"): link eth1 appeared; ` +
        "the qdiscs intercept made (by ifindex) now [3], the plan expected []: run `intercept plan` again",
    );
    await writeFile(
      file,
      JSON.stringify({
        ...plan,
        policies: [{ ...policy, source: hostile, definition: { ...policy.definition, name: "Bad Name" } }],
      }),
    );
    assert.match(await applyRefusal(file, fake), /^\S+: policy "\\u001b\[2J\\u0007\\u009b31m": /);
  });
});
