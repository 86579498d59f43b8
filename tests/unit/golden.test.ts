/**
 * Golden files: policy in → C out, and bad or hostile policy in → diagnostics out.
 * `npm run test:update-golden` rewrites them on purpose; review the diff.
 */
import "../support/temporary-cache.js";
import { existsSync } from "node:fs";
import { readdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import assert from "node:assert/strict";
import { compilePolicies, findDrift } from "../../src/compile/index.js";
import { SWITCH_LIMIT } from "../../src/compile/render.js";
import { formatDiagnostics, reportableDiagnostics, type Diagnostic } from "../../src/diagnostics.js";
import { loadPolicies } from "../../src/load/index.js";
import { validatePolicies } from "../../src/validate/index.js";
import { testPolicy } from "../support/bpf.js";
import { assertGolden } from "../support/golden.js";

const INVALID = "tests/golden/invalid";
const HOSTILE = "tests/golden/hostile";
const COMPILE = "tests/golden/compile";

async function diagnosticsOf(files: string[]): Promise<Diagnostic[]> {
  const loaded = await loadPolicies(files);
  const validated = validatePolicies(loaded.policies);
  return reportableDiagnostics([...loaded.diagnostics, ...validated.diagnostics]);
}

async function policyFiles(dir: string): Promise<string[]> {
  return (await readdir(dir))
    .filter((name) => /\.(ts|ya?ml)$/.test(name))
    .sort()
    .map((name) => path.join(dir, name));
}

for (const file of [...(await policyFiles(INVALID)), ...(await policyFiles(HOSTILE))]) {
  test(`${path.basename(path.dirname(file))}: ${path.basename(file)} gives located errors`, async () => {
    const diagnostics = await diagnosticsOf([file]);
    assert.ok(diagnostics.length > 0, "a bad policy must not validate");
    const rendered = formatDiagnostics(diagnostics, { colour: false });
    const headers = rendered.split("\n").filter((line) => /^\S/.test(line));
    assert.equal(headers.length, diagnostics.length, "one header line per diagnostic");
    for (const header of headers)
      assert.match(header, /^tests\/golden\/(invalid|hostile)\/[^:]+:\d+:\d+: error\[[a-z]+\/[a-z0-9-]+\]: \S/);
    await assertGolden(`${file}.expected`, rendered);
  });
}

test("a TypeScript policy is never executed", async () => {
  const marker = "/tmp/intercept-policy-ran";
  await rm(marker, { force: true });
  await diagnosticsOf([path.join(INVALID, "side-effect.ts")]);
  assert.equal(existsSync(marker), false);
});

for (const file of await policyFiles(COMPILE)) {
  test(`compile: ${path.basename(file)} renders the pinned C`, async () => {
    const loaded = await loadPolicies([file]);
    const { policies, diagnostics } = validatePolicies(loaded.policies);
    assert.deepEqual([...loaded.diagnostics, ...diagnostics], []);
    const [compiled] = compilePolicies(policies);
    await assertGolden(path.join(COMPILE, `${compiled!.policy.name}.bpf.c`), compiled!.source);
  });
}

test("the classic YAML form compiles to exactly the pinned C of the TS form", async () => {
  const loaded = await loadPolicies(["examples/config.yaml"]);
  const { policies, diagnostics } = validatePolicies(loaded.policies);
  assert.deepEqual([...loaded.diagnostics, ...diagnostics], []);
  const [compiled] = compilePolicies([{ ...policies[0]!, name: "demo" }]);
  assert.equal(compiled!.source, await readFile("generated/demo.bpf.c", "utf8"));
});

test("generated/ matches what compile writes for policies/ (no drift)", async () => {
  const loaded = await loadPolicies([]);
  const { policies } = validatePolicies(loaded.policies);
  assert.ok(policies.length > 0);
  assert.deepEqual(
    await findDrift(compilePolicies(policies), true),
    [],
    "run `npx --no-install intercept compile` and commit generated/",
  );
});

test(`up to ${SWITCH_LIMIT} rules match with a switch, above with lookup tables`, () => {
  const rules = (count: number) =>
    Array.from({ length: count }, (_, i) => ({ originalPort: 10_000 + i, port: 20_000 + i }));
  const strategyOf = (count: number) => {
    const [compiled] = compilePolicies([testPolicy(`rules_${count}`, rules(count))]);
    return /^ \* Ports: (switch|lookup tables)/m.exec(compiled!.source)?.[1];
  };
  assert.equal(strategyOf(1), "switch");
  assert.equal(strategyOf(SWITCH_LIMIT), "switch");
  assert.equal(strategyOf(SWITCH_LIMIT + 1), "lookup tables");
  const [forced] = compilePolicies([testPolicy("forced", rules(2))], "table");
  assert.match(
    forced!.source,
    /static const __u16 ingress_group_by_port\[2\]\[65536\]/,
    "a forced strategy is honoured",
  );
});
