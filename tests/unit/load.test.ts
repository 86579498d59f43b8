import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { loadPolicies } from "../../src/load/index.js";
import { validatePolicies } from "../../src/validate/index.js";

const scratch = await mkdtemp(path.join(tmpdir(), "intercept-load-"));
after(() => rm(scratch, { recursive: true, force: true }));

async function load(name: string, text: string) {
  const file = path.join(scratch, name);
  await writeFile(file, text);
  const loaded = await loadPolicies([file]);
  assert.deepEqual(loaded.diagnostics, []);
  return loaded.policies[0]!.value;
}

test("the TS and classic YAML forms of the demo are the same policy", async () => {
  const loaded = await loadPolicies(["policies/demo.ts", "examples/config.yaml"]);
  assert.deepEqual(loaded.diagnostics, []);
  const [ts, yaml] = loaded.policies.map((policy) => policy.value);
  assert.deepEqual(ts, yaml);
});

test("TS policies: as const, satisfies, consts, shorthand, spreads, negative numbers", async () => {
  const value = await load("forms.ts", `
    import { definePolicy, type Interceptor, type Policy } from "intercept";
    const web = { originalPort: 8000, port: 9000 } as const satisfies Interceptor;
    const tls: Interceptor = { ...web, originalPort: 8443, port: 9443, description: 'tls' };
    const interfaces = { include: ["eth*"] };
    const base = [web, tls] as const;
    export default definePolicy({
      name: "forms",
      interfaces,
      interceptors: [...base, { originalPort: 53, port: 5353, protocol: "udp", enabled: false }],
    } satisfies Policy);
  `);
  assert.deepEqual(value, {
    name: "forms",
    interfaces: { include: ["eth*"] },
    interceptors: [
      { originalPort: 8000, port: 9000 },
      { originalPort: 8443, port: 9443, description: "tls" },
      { originalPort: 53, port: 5353, protocol: "udp", enabled: false },
    ],
  });
});

test("TS policies: an aliased definePolicy and a plain object default export", async () => {
  assert.deepEqual(await load("alias.ts", `
    import { definePolicy as policy } from "intercept";
    export default policy({ interceptors: [] });
  `), { interceptors: [] });
  assert.deepEqual(await load("plain.ts", `
    import type { Policy } from "intercept";
    const p: Policy = { interceptors: [{ originalPort: 1, port: 2 }] };
    export default p;
  `), { interceptors: [{ originalPort: 1, port: 2 }] });
});

test("errors in spread values point where the value was written", async () => {
  const file = path.join(scratch, "spread.ts");
  await writeFile(file, [
    'import { definePolicy } from "intercept";',
    "const shared = { originalPort: 8000, port: 70000 };",
    "export default definePolicy({ interceptors: [{ ...shared }] });",
  ].join("\n"));
  const loaded = await loadPolicies([file]);
  const { diagnostics } = validatePolicies(loaded.policies);
  assert.equal(diagnostics.length, 1);
  assert.equal(`${diagnostics[0]!.line}:${diagnostics[0]!.column}`, "2:44");
});

test("validation fills defaults and names the policy after its file", async () => {
  const file = path.join(scratch, "my-proxy.yaml");
  await writeFile(file, "interceptors:\n  - { port: 9000, originalPort: 8000 }\n");
  const { policies, diagnostics } = validatePolicies((await loadPolicies([file])).policies);
  assert.deepEqual(diagnostics, []);
  assert.deepEqual(policies[0], {
    name: "my_proxy",
    file: path.relative(process.cwd(), file).startsWith("..") ? file : path.relative(process.cwd(), file),
    interfaces: { include: null, exclude: [] },
    rules: [{ index: 0, originalPort: 8000, port: 9000, protocol: "tcp", family: "any", strategy: "steer", onProxyDown: "drop", enabled: true }],
  });
});

test("a missing file is a located error, and other files are still checked", async () => {
  const good = path.join(scratch, "good.yaml");
  await writeFile(good, "interceptors: []\n");
  const loaded = await loadPolicies([path.join(scratch, "nope.yaml"), good]);
  assert.equal(loaded.policies.length, 1);
  assert.match(loaded.diagnostics[0]!.message, /no such policy file/);
});
