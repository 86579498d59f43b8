/**
 * The outbound section from policy file to C: the issue's form is valid in
 * YAML and TS alike, defaults and indexes are filled in, CIDRs become the
 * datapath's 16-byte form, the renderer refuses what validation would have,
 * and an outbound-only policy has cgroup programs and no tc program.
 */
import "../support/temporary-cache.js";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { cgroupPathProblem } from "../../src/cgroup-path.js";
import { compilePolicies } from "../../src/compile/index.js";
import { renderPolicy } from "../../src/compile/render.js";
import { loadPolicies } from "../../src/load/index.js";
import { validatePolicies, type ValidPolicy } from "../../src/validate/index.js";
import { parseCidr } from "../../src/validate/outbound.js";

const scratch = await mkdtemp(path.join(tmpdir(), "intercept-outbound-unit-"));
after(() => rm(scratch, { recursive: true, force: true }));

async function validate(name: string, text: string) {
  const file = path.join(scratch, name);
  await writeFile(file, text);
  const loaded = await loadPolicies([file]);
  const { policies, diagnostics } = validatePolicies(loaded.policies);
  return { policies, diagnostics: [...loaded.diagnostics, ...diagnostics] };
}

const ISSUE_FORM = `outbound:
  cgroups: ["system.slice/app.service"]
  exempt: { uids: [1337] }          # also: cgroups: [...], marks: [...]
  rules:
    - originalPort: 5432
      port: 15001
`;

test("the issue's YAML form is valid, and its TS form is the same policy", async () => {
  const yaml = await validate("issue.yaml", ISSUE_FORM);
  assert.deepEqual(yaml.diagnostics, []);
  const ts = await validate(
    "issue.ts",
    `
    import { definePolicy, type OutboundRule } from "intercept-bpf";
    const database: OutboundRule = { originalPort: 5432, port: 15001 };
    export default definePolicy({
      name: "issue",
      outbound: { cgroups: ["system.slice/app.service"], exempt: { uids: [1337] }, rules: [database] },
    });
  `,
  );
  assert.deepEqual(ts.diagnostics, []);
  assert.deepEqual(ts.policies[0], { ...yaml.policies[0], file: ts.policies[0]!.file });
  assert.deepEqual(yaml.policies[0]!.outbound, {
    cgroups: ["system.slice/app.service"],
    exempt: { uids: [1337], cgroups: [], marks: [] },
    rules: [{ index: 0, position: 0, originalPort: 5432, port: 15001, cidrs: [], enabled: true }],
  });
  assert.deepEqual(yaml.policies[0]!.rules, []);
});

test("outbound rules take the map keys after the interceptors", async () => {
  const { policies, diagnostics } = await validate(
    "both.yaml",
    `interceptors:\n  - { originalPort: 8000, port: 9000 }\n  - { originalPort: 8443, port: 9443 }\n${ISSUE_FORM}`,
  );
  assert.deepEqual(diagnostics, []);
  assert.equal(policies[0]!.outbound!.rules[0]!.index, 2);
  assert.match(compilePolicies(policies)[0]!.source, /#define RULE_COUNT 3\n/);
});

test("without outbound, interceptors are still required (the classic message)", async () => {
  const { diagnostics } = await validate("lonely.yaml", "name: lonely\n");
  assert.deepEqual(
    diagnostics.map((d) => d.message),
    ['the policy is missing required property "interceptors"'],
  );
});

test("CIDRs: both families in one 16-byte form, host bits refused with the network as the suggestion", () => {
  assert.deepEqual(parseCidr("10.0.0.0/8"), {
    kind: "valid",
    cidr: {
      family: "ipv4",
      bytes: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 10, 0, 0, 0],
      prefix: 104,
      text: "10.0.0.0/8",
    },
  });
  assert.deepEqual(parseCidr("fd00::/8"), {
    kind: "valid",
    cidr: { family: "ipv6", bytes: [253, ...Array(15).fill(0)], prefix: 8, text: "fd00::/8" },
  });
  assert.deepEqual(parseCidr("10.1.2.3/16"), {
    kind: "invalid",
    why: "has host bits set: the network is 10.1.0.0/16",
    suggestion: "10.1.0.0/16",
  });
  assert.equal(parseCidr("10.0.0.0/33").kind, "invalid");
  assert.equal(parseCidr("*/ #warning").kind, "invalid");
});

test("cgroup paths: relative to the mount, never its root, never out of it", () => {
  assert.equal(cgroupPathProblem("system.slice/app.service"), undefined);
  for (const bad of ["", "/", "/sys/fs/cgroup/x", "a/../b", "./a", "a//b", "a/", "a\u0007b"])
    assert.ok(cgroupPathProblem(bad), `${JSON.stringify(bad)} is refused`);
});

test("an outbound-only policy compiles to cgroup programs alone; the block holds only numbers", async () => {
  const { policies } = await validate(
    "only.yaml",
    `outbound:
  cgroups: ["app"]
  exempt: { uids: [1337, 0], marks: [7] }
  rules:
    - { originalPort: 5432, port: 15001, cidrs: ["10.0.0.0/8"] }
`,
  );
  const [compiled] = compilePolicies(policies);
  assert.deepEqual(compiled!.hooks, []);
  assert.deepEqual(compiled!.cgroupHooks, ["sock_ops", "getsockopt", "connect4", "connect6"]);
  assert.doesNotMatch(compiled!.source, /SEC\("tc"\)/);
  assert.match(compiled!.source, /\tcase 0:\n\tcase 1337:\n\t\treturn 1;/, "uids sorted, as case labels");
  assert.match(compiled!.source, /word_matches\(dst, 3, 0x0a000000, 0xff000000\)/);
  assert.doesNotMatch(compiled!.source, /"app"/, "cgroup paths never reach the C");
});

test("the renderer refuses outbound values validation would have refused (a tampered saved plan)", async () => {
  const { policies } = await validate("tamper.yaml", ISSUE_FORM);
  const valid = policies[0]!;
  const tampered = (change: (policy: ValidPolicy) => void) => {
    const copy = structuredClone(valid);
    change(copy);
    return () => renderPolicy(copy);
  };
  assert.throws(
    tampered((p) => (p.outbound!.rules[0]!.port = 70000)),
    /outbound\.rules\[0\]\.port is 70000/,
  );
  assert.throws(
    tampered((p) => (p.outbound!.exempt.uids = ["1337 */ #warning" as unknown as number])),
    /outbound\.exempt\.uids\[0\]/,
  );
  assert.throws(
    tampered((p) =>
      p.outbound!.rules[0]!.cidrs.push({ family: "ipv4", bytes: Array(16).fill(0), prefix: 0, text: "*/ #warning" }),
    ),
    /cidrs\[0\]\.text/,
  );
  assert.throws(
    tampered((p) => (p.outbound!.rules[0]!.index = 5)),
    /outbound\.rules\[0\]\.index is 5, not 0/,
  );
});

async function validateTwo(firstText: string, secondText: string) {
  const first = path.join(scratch, "first.yaml");
  const second = path.join(scratch, "second.yaml");
  await writeFile(first, firstText);
  await writeFile(second, secondText);
  const loaded = await loadPolicies([first, second]);
  return validatePolicies(loaded.policies).diagnostics;
}

test("two policies capturing one cgroup compose: rules for other ports are no conflict", async () => {
  const diagnostics = await validateTwo(
    ISSUE_FORM,
    ISSUE_FORM.replace("uids: [1337]", "uids: [1338]").replace("originalPort: 5432", "originalPort: 6379"),
  );
  assert.deepEqual(diagnostics, []);
});

test("two policies capturing one port on one cgroup: located in both files", async () => {
  const diagnostics = await validateTwo(ISSUE_FORM, ISSUE_FORM.replace("uids: [1337]", "uids: [1338]"));
  assert.deepEqual(
    diagnostics.map((d) => [
      path.basename(d.file),
      d.line,
      d.code,
      d.notes?.map((n) => [path.basename(n.file), n.line]),
    ]),
    [["second.yaml", 5, "outbound/overlapping-rules", [["first.yaml", 5]]]],
  );
  assert.equal(
    diagnostics[0]!.message,
    'outbound.rules[0] captures connections to port 5432 that first: outbound.rules[0] captures already on cgroup "system.slice/app.service": give each a cidrs list of its own, or one rule to both',
  );
  const apart = await validateTwo(
    ISSUE_FORM.replace("port: 15001", 'port: 15001\n      cidrs: ["10.0.0.0/8"]'),
    ISSUE_FORM.replace("port: 15001", 'port: 15001\n      cidrs: ["192.168.0.0/16"]'),
  );
  assert.deepEqual(apart, []);
});

test("a cgroup one policy captures and another exempts: located at the exemption, a note at the capture", async () => {
  const diagnostics = await validateTwo(
    ISSUE_FORM,
    ISSUE_FORM.replace('cgroups: ["system.slice/app.service"]', 'cgroups: ["system.slice/other.service"]').replace(
      "exempt: { uids: [1337] }",
      'exempt: { cgroups: ["system.slice/app.service"] }',
    ),
  );
  assert.deepEqual(
    diagnostics.map((d) => [
      path.basename(d.file),
      d.line,
      d.code,
      d.notes?.map((n) => [path.basename(n.file), n.line]),
    ]),
    [["second.yaml", 3, "outbound/exempt-captured", [["first.yaml", 2]]]],
  );
});
