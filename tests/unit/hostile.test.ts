/**
 * Hostile policy files: each ends in located errors, never in a crash, a
 * hang, or an echo of a file's content, and nothing outside intercept's own
 * files is touched. The corpus in tests/golden/hostile has its expected
 * output beside each file (checked in golden.test.ts); what needs symlinks,
 * FIFOs or megabytes is built here, in a temporary directory.
 */
import "../support/temporary-cache.js";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { after, test } from "node:test";
import { execa } from "execa";
import { formatDiagnostics, MAX_LINE_TEXT, reportableDiagnostics, type Diagnostic } from "../../src/diagnostics.js";
import { loadPolicies } from "../../src/load/index.js";
import {
  MAX_NESTING_DEPTH,
  MAX_POLICY_BYTES,
  MAX_YAML_ALIASES,
  POLICY_DEADLINE_MS,
  POLICY_HEAP_MB,
} from "../../src/load/limits.js";
import { validatePolicies } from "../../src/validate/index.js";
import { hugeStringPolicy, RECURSIVE_TYPE } from "../support/hostile-policies.js";

const HOSTILE = "tests/golden/hostile";
const scratch = await mkdtemp(path.join(tmpdir(), "intercept-hostile-"));
after(() => rm(scratch, { recursive: true, force: true }));

async function diagnosticsOf(paths: string[]): Promise<{ diagnostics: Diagnostic[]; valid: string[] }> {
  const loaded = await loadPolicies(paths);
  const validated = validatePolicies(loaded.policies);
  return {
    diagnostics: reportableDiagnostics([...loaded.diagnostics, ...validated.diagnostics]),
    valid: validated.policies.map((p) => p.file),
  };
}

/** Code, place and message of each diagnostic, for exact comparison. */
function summary(diagnostics: Diagnostic[]): string[] {
  return diagnostics.map((d) => `${d.file}:${d.line}:${d.column}: ${d.code}: ${d.message}`);
}

/** Every diagnostic a user may see is bounded and printable. */
function assertHarmless(rendered: string, diagnostics: Diagnostic[]): void {
  // eslint-disable-next-line no-control-regex
  assert.doesNotMatch(
    rendered,
    /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/,
    "no control or bidi characters reach a terminal",
  );
  for (const diagnostic of diagnostics) {
    assert.ok((diagnostic.lineText ?? "").length <= MAX_LINE_TEXT + 1, "source lines are cut");
    assert.ok(diagnostic.message.length <= 301, "messages are cut");
  }
}

const corpus = (await readdir(HOSTILE)).filter((name) => /\.(ts|ya?ml)$/.test(name)).sort();

// Each file's rendered output is pinned in golden.test.ts (so `npm run test:update-golden` covers it); here, its bounds.
for (const name of corpus) {
  test(`hostile: ${name} gives bounded errors, and no policy`, async () => {
    const { diagnostics, valid } = await diagnosticsOf([path.join(HOSTILE, name)]);
    assert.deepEqual(valid, []);
    assert.ok(diagnostics.length > 0);
    assertHarmless(formatDiagnostics(diagnostics, { colour: false }), diagnostics);
  });
}

test("hostile: a bound is one error, where it was crossed", async () => {
  const codes = async (name: string) =>
    (await diagnosticsOf([path.join(HOSTILE, name)])).diagnostics.map((d) => `${d.line}:${d.column} ${d.code}`);
  assert.deepEqual(await codes("alias-bomb.yaml"), ["7:12 policy/too-large"]);
  assert.deepEqual(await codes("alias-count.yaml"), [
    `3:${"interceptors: [".length + 1 + MAX_YAML_ALIASES * "*p, ".length} yaml/too-many-aliases`,
  ]);
  // The policy's own mapping is the first level, so the 32nd bracket opens the 33rd.
  assert.deepEqual(await codes("deep-flow.yaml"), [`2:${"interceptors: ".length + MAX_NESTING_DEPTH} yaml/too-deep`]);
  assert.deepEqual(await codes("deep-brackets.ts"), [
    `4:${"export default definePolicy({ interceptors: ".length + MAX_NESTING_DEPTH - 1} ts/too-deep`,
  ]);
  assert.deepEqual(await codes("spread-object.ts"), ["46:46 policy/too-large"]);
  assert.deepEqual(await codes("spread-array.ts"), ["46:45 policy/too-large"]);
  assert.deepEqual(await codes("many-errors.yaml"), [
    ...Array.from({ length: 20 }, (_, i) => `${i + 3}:1 schema/unknown-property`),
    "23:1 report/truncated",
  ]);
});

test("the CLI reports the whole corpus at once: exit 1, no stack trace, a bounded report", async () => {
  const result = await execa("node", ["bin/intercept.js", "validate", HOSTILE], { reject: false });
  assert.equal(result.exitCode, 1);
  assert.doesNotMatch(result.stderr, /^\s+at /m, "no stack trace");
  assert.doesNotMatch(result.stderr, /unexpected error/);
  assert.match(result.stderr, new RegExp(`\\n\\d+ errors in ${corpus.length} files$`));
  assert.ok(result.stderr.length < 40_000, `${result.stderr.length} characters`);
});

test("megabyte-scale nesting ends in one located error, not a RangeError", { timeout: 60_000 }, async () => {
  const depth = 200_000;
  const cases = [
    {
      name: "deep.yaml",
      text: `interceptors: ${"[".repeat(depth)}${"]".repeat(depth)}\n`,
      expected: `1:${"interceptors: ".length + MAX_NESTING_DEPTH}: yaml/too-deep`,
    },
    {
      name: "deep-block.yaml",
      text: `interceptors:\n  ${"- ".repeat(depth)}x\n`,
      expected: `2:${3 + 2 * (MAX_NESTING_DEPTH - 1)}: yaml/too-deep`,
    },
    {
      name: "deep.ts",
      text: `export default ${"(".repeat(depth)}1${")".repeat(depth)};\n`,
      expected: `1:${"export default ".length + MAX_NESTING_DEPTH + 1}: ts/too-deep`,
    },
    { name: "ternary.ts", text: `export default ${"1 ? 1 : ".repeat(depth / 4)}1;\n`, expected: "1:1: ts/too-deep" },
    { name: "arrows.ts", text: `export default ${"a => ".repeat(depth / 4)}1;\n`, expected: "1:1: ts/too-deep" },
  ];
  for (const { name, text, expected } of cases) {
    const file = path.join(scratch, name);
    await writeFile(file, text);
    const { diagnostics } = await diagnosticsOf([file]);
    assert.deepEqual(
      diagnostics.map((d) => `${d.line}:${d.column}: ${d.code}`),
      [expected],
      name,
    );
    await rm(file);
  }
});

test("a FIFO or a device is refused without being opened for a blocking read", { timeout: 10_000 }, async () => {
  const dir = path.join(scratch, "fifo");
  await mkdir(dir);
  await execa("mkfifo", [path.join(dir, "pipe.yaml")]);
  await symlink("/dev/zero", path.join(scratch, "zero.yaml"));
  const { diagnostics } = await diagnosticsOf([dir, path.join(scratch, "zero.yaml")]);
  assert.deepEqual(summary(diagnostics), [
    `${dir}/pipe.yaml:1:1: load/not-a-file: not a policy: not a regular file`,
    `${scratch}/zero.yaml:1:1: load/not-a-policy: not a policy: it resolves to /dev/zero, which is not a .ts, .yaml, .yml file`,
  ]);
});

/** A folder the policies must never touch or reveal: a secret, and a tree a policy would delete if it ran. */
async function makeDecoy(): Promise<{ dir: string; secret: string; snapshot: () => Promise<string> }> {
  const dir = await mkdtemp(path.join(scratch, "decoy-"));
  const secret = path.join(dir, "shadow");
  await writeFile(secret, "root:$6$SECRETHASH$abcdefgh:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n");
  await writeFile(path.join(dir, "secret.yaml"), "password: SECRETHASH\n");
  await mkdir(path.join(dir, "tree"));
  await writeFile(path.join(dir, "tree", "keep"), "keep me\n");
  const snapshot = async () => {
    const entries = await readdir(dir, { recursive: true });
    const described = await Promise.all(
      entries.sort().map(async (entry) => {
        const info = await stat(path.join(dir, entry));
        return `${entry} ${info.size} ${info.mtimeMs} ${info.mode}`;
      }),
    );
    return described.join("\n");
  };
  return { dir, secret, snapshot };
}

test("a symlink to a secret named on the command line: a short error, never its lines", async () => {
  const decoy = await makeDecoy();
  const before = await decoy.snapshot();
  await symlink(decoy.secret, path.join(scratch, "shadow.yaml"));
  await symlink(decoy.secret, path.join(scratch, "shadow"));
  const { diagnostics } = await diagnosticsOf([path.join(scratch, "shadow.yaml"), path.join(scratch, "shadow")]);
  assert.deepEqual(summary(diagnostics), [
    `${scratch}/shadow:1:1: load/not-a-policy: not a policy: only .ts, .yaml, .yml files are read`,
    `${scratch}/shadow.yaml:1:1: load/not-a-policy: not a policy: it resolves to ${decoy.secret}, which is not a .ts, .yaml, .yml file`,
  ]);
  const cli = await execa("node", ["bin/intercept.js", "validate", path.join(scratch, "shadow.yaml"), "--json"], {
    reject: false,
  });
  assert.equal(cli.exitCode, 1);
  assert.doesNotMatch(`${cli.stdout}${cli.stderr}`, /SECRETHASH|root:/);
  assert.equal(await decoy.snapshot(), before);
});

test("symlinks in a policy folder: followed inside it, refused (and not read) outside; a policy is never run", async () => {
  const decoy = await makeDecoy();
  const before = await decoy.snapshot();
  const dir = path.join(scratch, "links");
  await mkdir(path.join(dir, "real"), { recursive: true });
  await writeFile(
    path.join(dir, "real", "web.yaml"),
    "interfaces: { include: [eth0] }\ninterceptors: [{ originalPort: 8000, port: 9000 }]\n",
  );
  await writeFile(
    path.join(dir, "runs.ts"),
    [
      'import { rmSync } from "node:fs";',
      'import { definePolicy } from "intercept-bpf";',
      `rmSync(${JSON.stringify(decoy.dir)}, { recursive: true, force: true });`,
      "export default definePolicy({ interceptors: [] });",
    ].join("\n"),
  );
  await symlink("real/web.yaml", path.join(dir, "web-link.yaml"));
  await symlink("real", path.join(dir, "real-link"));
  await symlink(decoy.secret, path.join(dir, "shadow.yaml"));
  await symlink(path.join(decoy.dir, "secret.yaml"), path.join(dir, "secret.yaml"));
  await symlink(path.join(decoy.dir, "tree"), path.join(dir, "team"));
  await symlink(decoy.secret, path.join(dir, "README"));
  await symlink("nowhere.yaml", path.join(dir, "gone.yaml"));
  await symlink("loop.yaml", path.join(dir, "loop.yaml"));
  await symlink("user@host.1234", path.join(dir, ".#web.yaml"));
  await writeFile(path.join(dir, ".hidden.yaml"), "not: [a policy\n");
  const { diagnostics } = await diagnosticsOf([dir]);
  assert.deepEqual(summary(diagnostics), [
    `${dir}/gone.yaml:1:1: load/broken-symlink: symlink to nowhere.yaml, which does not exist`,
    `${dir}/loop.yaml:1:1: load/unreadable: cannot follow symlink: too many levels of symbolic links (ELOOP)`,
    `${dir}/runs.ts:1:1: ts/import: only \`import { definePolicy } from "intercept-bpf"\` and type imports are allowed`,
    `${dir}/runs.ts:3:1: ts/not-data: a statement with an effect is not allowed at the top level: policies are data`,
    `${dir}/secret.yaml:1:1: load/symlink-outside: symlink leads outside the policy folder (to ${decoy.dir}/secret.yaml): refused`,
    `${dir}/shadow.yaml:1:1: load/symlink-outside: symlink leads outside the policy folder (to ${decoy.secret}): refused`,
    `${dir}/team:1:1: load/symlink-outside: symlink leads outside the policy folder (to ${decoy.dir}/tree): refused`,
    // The link inside the folder is followed: a second policy on eth0 with the same rule, which conflicts.
    `${dir}/web-link.yaml:2:18: rule/duplicate-original-port: web_link: interceptors[0] overlaps web: interceptors[0]: a tcp packet to port 8000 would match both; both policies select eth0, where their rules run in one program: narrow one rule (exceptPorts, exceptSources), or the policies' interfaces or namespaces`,
  ]);
  assert.doesNotMatch(formatDiagnostics(diagnostics, { colour: false }), /SECRETHASH/);
  assert.equal(existsSync(decoy.dir), true, "the decoy folder still exists");
  assert.equal(await decoy.snapshot(), before, "and nothing in it changed");
});

test("a Kubernetes ConfigMap volume: every policy read once, under its own name", async () => {
  const dir = path.join(scratch, "configmap");
  const version = "..2026_11_25_10_00_00.123456789";
  await mkdir(path.join(dir, version), { recursive: true });
  await writeFile(
    path.join(dir, version, "demo.yaml"),
    "interfaces: { include: [eth0] }\ninterceptors: [{ originalPort: 8000, port: 9000 }]\n",
  );
  await writeFile(
    path.join(dir, version, "web.ts"),
    'import { definePolicy } from "intercept-bpf";\nexport default definePolicy({ interfaces: { include: ["eth1"] }, interceptors: [{ originalPort: 8443, port: 9443 }] });\n',
  );
  await symlink(version, path.join(dir, "..data"));
  await symlink("..data/demo.yaml", path.join(dir, "demo.yaml"));
  await symlink("..data/web.ts", path.join(dir, "web.ts"));
  const { diagnostics, valid } = await diagnosticsOf([dir]);
  assert.deepEqual(diagnostics, []);
  assert.deepEqual(valid, [path.join(dir, "demo.yaml"), path.join(dir, "web.ts")]);
  const cli = await execa("node", ["bin/intercept.js", "validate", dir], { reject: false });
  assert.equal(cli.exitCode, 0, cli.stderr);
  assert.equal(cli.stdout, `2 policies valid: ${dir}/demo.yaml, ${dir}/web.ts`);
});

test("a folder without policy files validates, and says there was nothing to validate", async () => {
  const dir = path.join(scratch, "empty");
  await mkdir(dir);
  await writeFile(path.join(dir, "notes.txt"), "no policies here\n");
  const cli = await execa("node", ["bin/intercept.js", "validate", dir], { reject: false });
  assert.equal(cli.exitCode, 0);
  assert.equal(cli.stdout, `no policy files (.ts, .yaml, .yml) in ${dir}: nothing to validate`);
  assert.deepEqual(JSON.parse((await execa("node", ["bin/intercept.js", "validate", dir, "--json"])).stdout), {
    formatVersion: "1.1",
    kind: "validate",
    valid: true,
    files: [],
    diagnostics: [],
  });
});

test("a huge file is refused before it is read, whatever its content", async () => {
  const file = path.join(scratch, "huge.ts");
  await writeFile(file, `// ${"x".repeat(3 * 1024 * 1024)}\n`);
  const { diagnostics } = await diagnosticsOf([file]);
  assert.deepEqual(summary(diagnostics), [
    `${file}:1:1: load/too-large: file is ${3 * 1024 * 1024 + 4} bytes; a policy may be at most ${MAX_POLICY_BYTES} bytes`,
  ]);
});

/**
 * `intercept validate FILE` in a child process that reports its own peak
 * RSS (the policy worker's included: it is a thread of the same process).
 */
async function validateMeasured(
  file: string,
): Promise<{ stderr: string; exitCode: number | undefined; seconds: number; peakMb: number }> {
  const script = [
    'const { main } = await import("./dist/src/cli.js");',
    "const code = await main(process.argv.slice(1));",
    "process.stderr.write(`\\npeak-rss-kb ${process.resourceUsage().maxRSS}\\n`);",
    "process.exitCode = code;",
  ].join("\n");
  const started = performance.now();
  const result = await execa("node", ["--input-type=module", "-e", script, "validate", file], {
    reject: false,
    env: { NO_COLOR: "1" },
  });
  const seconds = (performance.now() - started) / 1000;
  const peak = /\npeak-rss-kb (\d+)$/.exec(result.stderr);
  assert.ok(peak, result.stderr);
  return {
    stderr: result.stderr.slice(0, peak.index),
    exitCode: result.exitCode,
    seconds,
    peakMb: Number(peak[1]) / 1024,
  };
}

/**
 * The memory any validate may use, whatever the file: the worker's heap
 * limit, and room for the main thread, the worker's young generation and
 * code (about 150 MB each way for a plain TS policy).
 */
const MEMORY_BOUND_MB = POLICY_HEAP_MB + 384;

test("exponential spreads, a 50 MB string and a recursive type: validate ends in a located error, in bounded time and memory", {
  timeout: 120_000,
}, async (t) => {
  const huge = path.join(scratch, "huge-string.ts");
  const hugeText = hugeStringPolicy(50);
  await writeFile(huge, hugeText);
  const recursive = path.join(scratch, "recursive.ts");
  await writeFile(recursive, RECURSIVE_TYPE);
  // What starting node and the TypeScript compiler costs on this machine now, with a policy that is not cached.
  const baseline = path.join(scratch, "baseline.ts");
  await writeFile(
    baseline,
    `import { definePolicy } from "intercept-bpf";\nexport default definePolicy({ interceptors: [] }); // ${scratch}\n`,
  );
  const startup = await validateMeasured(baseline);
  assert.equal(startup.exitCode, 0, startup.stderr);
  t.diagnostic(
    `a plain TS policy, not cached: ${startup.seconds.toFixed(1)} s, ${Math.round(startup.peakMb)} MB peak RSS`,
  );
  // The bound is 6 s on an idle machine, where a plain policy takes about 1.5 s; on a busy one, twice what a plain policy took.
  const quick = Math.max(6, 2 * startup.seconds);
  const cases = [
    {
      file: path.join(HOSTILE, "spread-object.ts"),
      expected: /^tests\/golden\/hostile\/spread-object\.ts:46:46: error\[policy\/too-large\]: `o40` expands to/,
      seconds: quick,
    },
    {
      file: path.join(HOSTILE, "spread-array.ts"),
      expected: /^tests\/golden\/hostile\/spread-array\.ts:46:45: error\[policy\/too-large\]: `a40` expands to/,
      seconds: quick,
    },
    {
      file: huge,
      expected: new RegExp(`^${huge}:1:1: error\\[load/too-large\\]: file is ${Buffer.byteLength(hugeText)} bytes`),
      seconds: quick,
    },
    // Stopped by the deadline, which does not count starting the compiler (or by the heap limit, whichever comes first).
    {
      file: recursive,
      expected: new RegExp(`^${recursive}:1:1: error\\[policy/too-(slow|large)\\]`),
      seconds: POLICY_DEADLINE_MS / 1000 + quick,
    },
  ];
  for (const { file, expected, seconds } of cases) {
    const run = await validateMeasured(file);
    assert.equal(run.exitCode, 1, file);
    assert.match(run.stderr, expected);
    assert.match(run.stderr, /\n1 error in 1 file\n$/);
    assert.ok(run.seconds <= seconds, `${file}: ${run.seconds.toFixed(1)} s (at most ${seconds.toFixed(1)})`);
    assert.ok(run.peakMb <= MEMORY_BOUND_MB, `${file}: ${Math.round(run.peakMb)} MB (at most ${MEMORY_BOUND_MB})`);
    t.diagnostic(`${path.basename(file)}: ${run.seconds.toFixed(1)} s, ${Math.round(run.peakMb)} MB peak RSS`);
  }
});
