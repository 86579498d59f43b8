/**
 * Rule strategies in validation: the defaults, and what steer allows that
 * rewrite does not (the refusals are golden: tests/golden/invalid/strategies.yaml).
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { loadPolicies } from "../../src/load/index.js";
import { validatePolicies } from "../../src/validate/index.js";

const scratch = await mkdtemp(path.join(tmpdir(), "intercept-strategy-"));
after(() => rm(scratch, { recursive: true, force: true }));

async function validate(yaml: string) {
  const file = path.join(scratch, "policy.yaml");
  await writeFile(file, yaml);
  const loaded = await loadPolicies([file]);
  const { policies, diagnostics } = validatePolicies(loaded.policies);
  return { rules: policies[0]?.rules ?? [], messages: [...loaded.diagnostics, ...diagnostics].map((d) => d.message) };
}

test("defaults: tcp steers and drops when the proxy is down, udp rewrites", async () => {
  const { rules, messages } = await validate(`interceptors:
  - { originalPort: 8000, port: 9000 }
  - { originalPort: 53, port: 5353, protocol: udp }
  - { originalPort: 8443, port: 9443, strategy: rewrite }
  - { originalPort: 8080, port: 9080, onProxyDown: pass }
`);
  assert.deepEqual(messages, []);
  assert.deepEqual(
    rules.map(({ strategy, onProxyDown }) => ({ strategy, onProxyDown })),
    [
      { strategy: "steer", onProxyDown: "drop" },
      { strategy: "rewrite", onProxyDown: undefined },
      { strategy: "rewrite", onProxyDown: undefined },
      { strategy: "steer", onProxyDown: "pass" },
    ],
  );
  assert.ok(!("onProxyDown" in rules[1]!), "a rewrite rule carries no onProxyDown at all");
});

test("many-to-one: steer rules share a target port", async () => {
  const { messages } = await validate(`interceptors:
  - { originalPort: 8000, port: 9000 }
  - { originalPort: 8001, port: 9000 }
  - { originalPort: 8443, port: 9000, family: ipv6 }
`);
  assert.deepEqual(messages, []);
});

test("a steer rule may target another rule's originalPort (steering is not transitive)", async () => {
  const { messages } = await validate(`interceptors:
  - { originalPort: 8000, port: 9000 }
  - { originalPort: 9000, port: 9100 }
  - { originalPort: 7000, port: 9100, strategy: rewrite }
`);
  assert.deepEqual(messages, []);
});

test("a steer rule and a rewrite rule may share a target: the replies differ by source port", async () => {
  const { messages } = await validate(`interceptors:
  - { originalPort: 8000, port: 9000 }
  - { originalPort: 7000, port: 9000, strategy: rewrite }
`);
  assert.deepEqual(messages, []);
});

test("two rewrite rules still may not share a target, and the error points at steer", async () => {
  const { messages } = await validate(`interceptors:
  - { originalPort: 8000, port: 9000, strategy: rewrite }
  - { originalPort: 8001, port: 9000, strategy: rewrite }
`);
  assert.deepEqual(messages, [
    `tcp port 9000 is already the target of rewrite rule interceptors[0]: their replies could not be told apart (a tcp rule may use strategy: "steer", which has no such restriction)`,
  ]);
});

test("an originalPort is still intercepted once per protocol, whatever the strategies", async () => {
  const { messages } = await validate(`interceptors:
  - { originalPort: 8000, port: 9000 }
  - { originalPort: 8000, port: 9001, strategy: rewrite }
`);
  assert.deepEqual(messages, ["tcp originalPort 8000 is already intercepted by interceptors[0]"]);
});
