import { TEST_CACHE_DIR } from "../support/temporary-cache.js";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { reportableDiagnostics } from "../../src/diagnostics.js";
import { loadPolicies } from "../../src/load/index.js";
import { readPolicyTextSync } from "../../src/load/text.js";
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
  const value = await load(
    "forms.ts",
    `
    import { definePolicy, type Interceptor, type Policy } from "intercept-bpf";
    const web = { originalPort: 8000, port: 9000 } as const satisfies Interceptor;
    const tls: Interceptor = { ...web, originalPort: 8443, port: 9443, description: 'tls' };
    const interfaces = { include: ["eth*"] };
    const base = [web, tls] as const;
    export default definePolicy({
      name: "forms",
      interfaces,
      interceptors: [...base, { originalPort: 53, port: 5353, protocol: "udp", enabled: false }],
    } satisfies Policy);
  `,
  );
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
  assert.deepEqual(
    await load(
      "alias.ts",
      `
    import { definePolicy as policy } from "intercept-bpf";
    export default policy({ interceptors: [] });
  `,
    ),
    { interceptors: [] },
  );
  assert.deepEqual(
    await load(
      "plain.ts",
      `
    import type { Policy } from "intercept-bpf";
    const p: Policy = { interceptors: [{ originalPort: 1, port: 2 }] };
    export default p;
  `,
    ),
    { interceptors: [{ originalPort: 1, port: 2 }] },
  );
});

test('TS policies written for the package\'s old name ("intercept") still load and type-check', async () => {
  assert.deepEqual(
    await load(
      "legacy.ts",
      `
    import { definePolicy, type Interceptor } from "intercept";
    const web: Interceptor = { originalPort: 8000, port: 9000 };
    export default definePolicy({ interceptors: [web] });
  `,
    ),
    { interceptors: [{ originalPort: 8000, port: 9000 }] },
  );
});

test("errors in spread values point where the value was written", async () => {
  const file = path.join(scratch, "spread.ts");
  await writeFile(
    file,
    [
      'import { definePolicy } from "intercept-bpf";',
      "const shared = { originalPort: 8000, port: 70000 };",
      "export default definePolicy({ interceptors: [{ ...shared }] });",
    ].join("\n"),
  );
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
    rules: [
      {
        index: 0,
        originalPorts: [{ first: 8000, last: 8000 }],
        exceptPorts: [],
        sources: [],
        exceptSources: [],
        destinations: [],
        port: 9000,
        protocol: "tcp",
        family: "any",
        strategy: "steer",
        onProxyDown: "drop",
        enabled: true,
      },
    ],
  });
});

test("a missing file is a located error, and other files are still checked", async () => {
  const good = path.join(scratch, "good.yaml");
  await writeFile(good, "interceptors: []\n");
  const loaded = await loadPolicies([path.join(scratch, "nope.yaml"), good]);
  assert.equal(loaded.policies.length, 1);
  assert.match(loaded.diagnostics[0]!.message, /no such policy file/);
});

/** Code, place and message of every problem of @files, sorted, as a user would read them. */
async function problemsOf(...files: string[]): Promise<string[]> {
  const loaded = await loadPolicies(files);
  const validated = validatePolicies(loaded.policies);
  assert.deepEqual(validated.policies, [], "a policy with a problem is never valid");
  return reportableDiagnostics([...loaded.diagnostics, ...validated.diagnostics]).map(
    (d) => `${d.line}:${d.column} ${d.code}`,
  );
}

async function write(name: string, text: string): Promise<string> {
  const file = path.join(scratch, name);
  await writeFile(file, text);
  return file;
}

test("the rules that passed the schema are still checked against each other", async () => {
  const file = await write(
    "partly.yaml",
    [
      "interceptors:",
      "  - { originalPort: 8000, port: 0 }",
      "  - { originalPort: 8001, port: 9001 }",
      "  - { originalPort: 8001, port: 9002 }",
    ].join("\n"),
  );
  assert.deepEqual(await problemsOf(file), ["2:33 schema/range", "4:7 rule/duplicate-original-port"]);
});

test("TS code where data must be: reported once, and the rest of the policy is still checked", async () => {
  const file = await write(
    "code.ts",
    [
      'import { definePolicy } from "intercept-bpf";',
      'const key = "port";',
      "export default definePolicy({",
      "  interceptors: [",
      '    { originalPort: 8000, port: Number("9000") },',
      "    { originalPort: 8001, [key]: 9001 },",
      "    { originalPort: 8002, port: 70000 },",
      "  ],",
      "});",
    ].join("\n"),
  );
  // No "missing port" for the first two (their port was written, just not as data), and tsc's view of Number is not repeated.
  assert.deepEqual(await problemsOf(file), ["5:33 ts/not-data", "6:27 ts/not-data", "7:33 schema/range"]);
});

test("a TS problem the schema cannot see still keeps the policy from being valid", async () => {
  const file = await write(
    "let.ts",
    'import { definePolicy } from "intercept-bpf";\nlet port = 9000;\nexport default definePolicy({ interceptors: [{ originalPort: 8000, port }] });\n',
  );
  assert.deepEqual(await problemsOf(file), ["2:1 ts/not-const"]);
});

test("a YAML file holds one document", async () => {
  const file = await write("two.yaml", "interceptors: []\n---\ninterceptors: []\n");
  assert.deepEqual(await problemsOf(file), ["2:1 yaml/syntax"]);
});

test("in a folder, hidden entries are skipped; a file named on the command line is read even when hidden", async () => {
  const dir = path.join(scratch, "hidden");
  await mkdir(path.join(dir, ".git"), { recursive: true });
  await writeFile(path.join(dir, ".git", "config.yaml"), "not a policy\n");
  await writeFile(path.join(dir, ".draft.yaml"), "interceptors: [\n");
  await writeFile(path.join(dir, "web.yaml"), "interceptors: []\n");
  const loaded = await loadPolicies([dir]);
  assert.deepEqual(loaded.diagnostics, []);
  assert.deepEqual(
    loaded.policies.map((policy) => path.basename(policy.file)),
    ["web.yaml"],
  );
  assert.deepEqual(
    (await problemsOf(path.join(dir, ".draft.yaml"))).map((problem) => problem.split(" ")[1]),
    ["yaml/syntax"],
  );
});

test("an evaluated TS policy is cached in the cache directory, not in the checkout", async () => {
  const file = await write(
    "cached.ts",
    'import { definePolicy } from "intercept-bpf";\nexport default definePolicy({ interceptors: [{ originalPort: 7000, port: 7001 }] });\n',
  );
  const entries = async (dir: string) => (existsSync(dir) ? (await readdir(dir)).length : 0);
  const [cacheBefore, checkoutBefore] = [
    await entries(path.join(TEST_CACHE_DIR, "policies")),
    await entries("build/cache/policies"),
  ];
  await loadPolicies([file]);
  assert.equal(await entries(path.join(TEST_CACHE_DIR, "policies")), cacheBefore + 1);
  assert.equal(await entries("build/cache/policies"), checkoutBefore, "where the cache used to be");
});

test("the policy worker's reader reads a file whole, whatever its size and whatever size it claims", async () => {
  const textOf = (read: ReturnType<typeof readPolicyTextSync>) => {
    assert.ok("source" in read, "error" in read ? read.error.message : "");
    return read.source.text;
  };
  // Around the first buffer's size (4096) and past it; each file is read after a larger one, into its buffer.
  for (const size of [70_000, 4097, 4096, 4095, 1]) {
    const file = path.join(scratch, `size-${size}.yaml`);
    const text = `${"#".repeat(size - 1)}\n`;
    await writeFile(file, text);
    assert.equal(textOf(readPolicyTextSync(file)), text, `${size} bytes`);
  }
  // procfs claims 0 bytes and may return fewer than asked before its end: read on until a read returns nothing.
  assert.equal(
    textOf(readPolicyTextSync("limits.yaml", "/proc/self/limits")),
    readFileSync("/proc/self/limits", "utf8"),
  );
});
