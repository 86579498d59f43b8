/**
 * The package as a user gets it: `npm pack` of this repository, installed
 * offline under its name (intercept-bpf) into a fresh project, then a
 * user's first commands there — init in an empty folder and in their own
 * repository, the workflow's pull-request job as written, their own tsc,
 * and plan, apply --plan and destroy in a network namespace this test
 * creates. The steps run in order, each on the state the one before left,
 * as a user's would.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { parse } from "yaml";

const REPO = fileURLToPath(new URL("../../../", import.meta.url));

/** `npm pack --json`: what the tarball holds (the same list `npm pack --dry-run --json` prints). */
interface PackResult {
  filename: string;
  integrity: string;
  size: number;
  files: { path: string }[];
}

/** Where a packed file may come from; anything else (tests, benchmarks, demo, CI, maps) must stay out. */
const ALLOWED = [
  /^bin\/[^/]+\.js$/,
  /^dist\/src\/.+\.(js|d\.ts)$/,
  /^templates\//,
  /^schemas\//,
  /^(README\.md|LICENSE|package\.json)$/,
  // The CNI plugin: its C (to build it for another architecture) and the static binary `npm pack` built.
  /^cni\/[a-z_]+\.[ch]$/,
  /^dist\/cni\/intercept-cni$/,
];
const FORBIDDEN =
  /^(tests|bench|demo|lab|docs|deploy|examples|policies|generated|scripts|src|\.ci|\.github)\/|\.map$|\.test\.|^tsconfig/;

/**
 * The environment a user's shell gives npm: without the npm_* variables
 * `npm test` exports (npm_config_local_prefix, npm_config_call, …), which
 * would point nested npm and npx commands at this repository, and without
 * the node_modules/.bin folders it puts on PATH, where npx would find this
 * repository's tsc if the project had none.
 */
const USER_ENV = {
  ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("npm_"))),
  PATH: (process.env.PATH ?? "")
    .split(path.delimiter)
    .filter((dir) => !dir.endsWith(path.join("node_modules", ".bin")))
    .join(path.delimiter),
};

let work = "";
let project = "";
let packed: PackResult;
const netns = `icpkg${randomBytes(4).toString("hex")}`;
let netnsKey: string | undefined;

/** The user's files before init: a README, a .gitignore, and the package.json `npm install intercept-bpf` left. */
const USER_README = "# Edge policies\n\nOurs.\n";
const USER_GITIGNORE = "node_modules/\n.env\n";
let userManifest = "";

before(
  async () => {
    work = await mkdtemp(path.join(tmpdir(), "intercept-package-"));
    const pack = await execa("npm", ["pack", "--json", "--pack-destination", work], {
      cwd: REPO,
      env: USER_ENV,
      extendEnv: false,
    });
    [packed] = JSON.parse(pack.stdout) as PackResult[]; // npm's warnings and prepack's output go to stderr
    assert.equal(
      packed!.filename,
      `intercept-bpf-${(JSON.parse(await readFile(path.join(REPO, "package.json"), "utf8")) as { version: string }).version}.tgz`,
    );
    project = path.join(work, "project");
    await mkdir(project);
    userManifest = `${JSON.stringify({ name: "edge-policies", version: "1.0.0", private: true, scripts: { lint: "echo ok" }, dependencies: { "intercept-bpf": `file:../${packed!.filename}` } }, null, 2)}\n`;
    await writeFile(path.join(project, "package.json"), userManifest);
    await writeLock(project, packed!);
    await npm("ci", "--offline", "--no-audit", "--no-fund");
    await writeFile(path.join(project, "README.md"), USER_README);
    await writeFile(path.join(project, ".gitignore"), USER_GITIGNORE);
  },
  { timeout: 180_000 },
);

after(async () => {
  // Removed even when a step failed; a namespace that was never made is not an error here.
  await execa("ip", ["netns", "del", netns], { reject: false });
  if (netnsKey) {
    await rm(`/sys/fs/bpf/intercept/${netnsKey}`, { recursive: true, force: true });
    await rm(`/run/intercept/locks/${netnsKey}.lock`, { force: true });
  }
  if (work) await rm(work, { recursive: true, force: true });
});

test("the tarball holds the CLI, compiled JS, declarations, templates, schema, README and LICENSE, and no tests, benchmarks, lab or CI files", () => {
  const files = packed.files.map((file) => file.path);
  assert.deepEqual(
    files.filter((file) => FORBIDDEN.test(file)),
    [],
  );
  assert.deepEqual(
    files.filter((file) => !ALLOWED.some((pattern) => pattern.test(file))),
    [],
  );
  for (const needed of [
    "bin/intercept.js",
    "dist/cni/intercept-cni",
    "dist/src/cli.js",
    "dist/src/api.js",
    "dist/src/api.d.ts",
    "dist/src/validate/policy-validator.js",
    "dist/src/commands/demo.js",
    "dist/src/demo/servers-process.js",
    "dist/src/demo/request-process.js",
    "templates/bpf/policy.bpf.c.hbs",
    "templates/init/policies/example.ts",
    "templates/init/github/workflows/intercept.yml",
    "schemas/policy.schema.json",
    "README.md",
    "LICENSE",
  ]) {
    assert.ok(files.includes(needed), `${needed} is missing from the tarball`);
  }
});

test("npx --no-install intercept --version prints the package's version, whatever the cwd's package.json says", async () => {
  const { version } = JSON.parse(await readFile(path.join(REPO, "package.json"), "utf8")) as { version: string };
  const result = await npx("intercept", "--version");
  assert.equal(result.exitCode, 0, result.stderr);
  assert.equal(result.stdout.trim(), version);
});

test("npx --no-install intercept demo runs from the installed package, and says it worked", async () => {
  const demo = await npx("intercept", "demo");
  assert.equal(demo.exitCode, 0, `${demo.stdout}${demo.stderr}`);
  assert.match(demo.stdout, /^=== OK: port 8000 was answered through the proxy/m);
  assert.match(demo.stdout, /^Removed icd[0-9a-f]{6}-server, icd[0-9a-f]{6}-client and their pins\.$/m);
});

test("init in an empty folder writes the scaffold and a package.json that lists intercept-bpf and typescript; validate passes there", async () => {
  const init = await npx("intercept", "init", "fresh");
  assert.equal(init.exitCode, 0, init.stderr);
  const fresh = path.join(project, "fresh");
  assert.deepEqual(await filesIn(fresh), [
    ".github/workflows/intercept.yml",
    ".gitignore",
    "README.md",
    "generated/example.bpf.c",
    "package.json",
    "policies/example.ts",
    "tsconfig.json",
  ]);
  const manifest = JSON.parse(await readFile(path.join(fresh, "package.json"), "utf8")) as {
    devDependencies: Record<string, string>;
  };
  assert.deepEqual(Object.keys(manifest.devDependencies), ["intercept-bpf", "typescript"]);
  // fresh/ has a package.json of its own now, and nothing installed: the installed CLI, by its path.
  const validate = await execa(path.join(project, "node_modules/.bin/intercept"), ["validate"], {
    cwd: fresh,
    env: USER_ENV,
    extendEnv: false,
    reject: false,
  });
  assert.equal(validate.exitCode, 0, String(validate.stderr));
});

test("init in the user's repository changes nothing of theirs but the appended .gitignore lines and typescript in devDependencies", async () => {
  const lock = await readFile(path.join(project, "package-lock.json"), "utf8");
  const init = await npx("intercept", "init");
  assert.equal(init.exitCode, 0, init.stderr);
  assert.equal(await readFile(path.join(project, "README.md"), "utf8"), USER_README);
  assert.equal(await readFile(path.join(project, "package-lock.json"), "utf8"), lock);
  assert.equal(
    await readFile(path.join(project, ".gitignore"), "utf8"),
    `${USER_GITIGNORE}\n# intercept: build outputs, saved plans and caches (generated/ is committed)\nbuild/\nobjects/\n*.plan\nplan.json\nplan.txt\n`,
  );
  const { devDependencies } = JSON.parse(await readFile(path.join(REPO, "package.json"), "utf8")) as {
    devDependencies: { typescript: string };
  };
  const merged = JSON.parse(userManifest) as Record<string, unknown>;
  merged.devDependencies = { typescript: devDependencies.typescript };
  assert.equal(await readFile(path.join(project, "package.json"), "utf8"), `${JSON.stringify(merged, null, 2)}\n`);
  assert.match(init.stdout, /^left +README\.md \(yours/m);
  for (const file of [
    "policies/example.ts",
    "generated/example.bpf.c",
    ".github/workflows/intercept.yml",
    "tsconfig.json",
  ]) {
    assert.ok(existsSync(path.join(project, file)), `init did not write ${file}`);
  }
  // `npm install`, as the next steps say: the lock npm would write (offline here), then install it.
  await writeLock(project, packed, { typescript: true });
  await npm("ci", "--offline", "--no-audit", "--no-fund");
  assert.ok(existsSync(path.join(project, "node_modules/typescript/package.json")));
});

test("the workflow's pull-request job, step by step as written: validate, compile --check, tsc, build --out objects", async () => {
  const workflow = parse(await readFile(path.join(project, ".github/workflows/intercept.yml"), "utf8")) as {
    jobs: { check: { steps: { name?: string; run?: string }[] } };
  };
  // The runner's own setup (apt-get install clang) is this machine's already.
  const steps = workflow.jobs.check.steps.filter(
    (step) => step.run !== undefined && !step.name?.startsWith("Runner setup"),
  );
  assert.deepEqual(
    steps.map(({ run }) => run!.split(" ").slice(0, 4).join(" ")),
    [
      "npm ci --ignore-scripts",
      "npx --no-install intercept validate",
      "npx --no-install intercept compile",
      "npx --no-install tsc --noEmit",
      "npx --no-install intercept build",
    ],
  );
  for (const { run } of steps) {
    // GitHub runs a step as `bash -e {0}`; offline here, where npm has the lock's tarballs cached.
    const result = await execa("bash", ["-e", "-c", run!], {
      cwd: project,
      env: { ...USER_ENV, npm_config_offline: "true" },
      extendEnv: false,
      reject: false,
      stdin: "ignore",
    });
    assert.equal(result.exitCode, 0, `${run}:\n${String(result.stdout)}${String(result.stderr)}`);
  }
  const manifest = JSON.parse(await readFile(path.join(project, "objects/manifest.json"), "utf8")) as Record<
    string,
    unknown
  >;
  assert.ok(
    JSON.stringify(manifest).includes("example"),
    "build wrote the example's object into objects/manifest.json",
  );
});

test("a type error is reported by both the installed loader and the user's tsc (both read dist/src/api.d.ts)", async () => {
  const typo = path.join(project, "policies", "typo.ts");
  // A value the schema accepts but the type does not: only a type check against the API finds it.
  await writeFile(
    typo,
    'import { definePolicy } from "intercept-bpf";\n\nconst protocol: string = "tcp";\nexport default definePolicy({ name: "typo", interfaces: { include: ["x"] }, interceptors: [{ originalPort: 7000, port: 7100, protocol }] });\n',
  );
  try {
    const validate = await npx("intercept", "validate");
    assert.equal(validate.exitCode, 1);
    assert.match(
      validate.stderr,
      /policies\/typo\.ts:4:\d+: error\[ts\/type-error\]: Type 'string' is not assignable to type '"tcp" \| "udp" \| undefined'/,
    );
    const tsc = await npx("tsc", "--noEmit", "-p", ".");
    assert.notEqual(tsc.exitCode, 0);
    assert.match(tsc.stdout, /policies\/typo\.ts\(4,\d+\): error TS2322: Type 'string' is not assignable/);
  } finally {
    await rm(typo);
  }
});

test("plan --netns with the built objects, saved, then apply --plan applies exactly it, and destroy removes it", async () => {
  await execa("ip", ["netns", "add", netns]);
  netnsKey = `ns${(await stat(`/var/run/netns/${netns}`)).ino}`;
  await execa("ip", ["-n", netns, "link", "add", `${netns}a`, "type", "veth", "peer", "name", `${netns}b`]);
  const plan = await npx(
    "intercept",
    "plan",
    "--netns",
    netns,
    "--objects",
    "objects",
    "--out",
    "intercept.plan",
    "--no-color",
  );
  assert.equal(plan.exitCode, 0, plan.stderr);
  assert.match(plan.stdout, /in network namespace "icpkg[0-9a-f]+"/);
  assert.match(plan.stdout, /\+ program\.example\s+create: new policy, 1 rule/);
  assert.match(plan.stdout, new RegExp(`\\+ attachment\\.${netns}a\\s+create: attach example`));
  assert.match(plan.stdout, /Plan: 3 to add, 0 to change, 0 to destroy\./);
  const apply = await npx(
    "intercept",
    "apply",
    "--plan",
    "intercept.plan",
    "--objects",
    "objects",
    "--yes",
    "--no-color",
  );
  assert.equal(apply.exitCode, 0, `${apply.stdout}${apply.stderr}`);
  assert.match(apply.stdout, /Apply complete! Resources: 3 added, 0 changed, 0 destroyed\./);
  const destroy = await npx("intercept", "destroy", "--netns", netns, "--yes", "--no-color");
  assert.equal(destroy.exitCode, 0, `${destroy.stdout}${destroy.stderr}`);
});

/**
 * The project's lock file, for the package.json it has: the tarball, and
 * every other package at the version this repository's lock file pins
 * (with @typescript, the user's TypeScript as a devDependency too). `npm ci`
 * filled the npm cache with those tarballs but not the registry's metadata,
 * and npm only installs offline what a lock file names exactly: this is
 * the lock `npm install` would write.
 */
async function writeLock(dir: string, tarball: PackResult, { typescript = false } = {}): Promise<void> {
  const lock = JSON.parse(await readFile(path.join(REPO, "package-lock.json"), "utf8")) as {
    packages: Record<string, Record<string, unknown>>;
  };
  const manifest = JSON.parse(await readFile(path.join(REPO, "package.json"), "utf8")) as Record<string, unknown>;
  const user = JSON.parse(await readFile(path.join(dir, "package.json"), "utf8")) as {
    name: string;
    version: string;
    dependencies?: Record<string, string>;
    devDependencies?: Record<string, string>;
  };
  const resolved = `file:../${tarball.filename}`;
  const packages: Record<string, Record<string, unknown>> = {
    "": {
      name: user.name,
      version: user.version,
      dependencies: user.dependencies,
      ...(user.devDependencies && { devDependencies: user.devDependencies }),
    },
    "node_modules/intercept-bpf": {
      version: manifest.version,
      resolved,
      integrity: tarball.integrity,
      license: manifest.license,
      dependencies: manifest.dependencies,
      bin: manifest.bin,
      engines: manifest.engines,
    },
  };
  const registry = (await execa("npm", ["config", "get", "registry"], { env: USER_ENV, extendEnv: false })).stdout
    .trim()
    .replace(/\/$/, "");
  for (const [location, entry] of Object.entries(lock.packages)) {
    if (location === "") continue;
    const isTypescript = location === "node_modules/typescript";
    if (isTypescript ? !typescript : entry.dev && !entry.optional) continue;
    const { dev: _dev, devOptional: _devOptional, ...rest } = entry;
    // The tarball's address, which this repository's lock leaves out (omit-lockfile-registry-resolved):
    // with it npm takes the cached tarball by its integrity, without the registry's metadata.
    const name = location.slice(location.lastIndexOf("node_modules/") + "node_modules/".length);
    const resolved = rest.resolved ?? `${registry}/${name}/-/${name.split("/").pop()}-${String(rest.version)}.tgz`;
    packages[location] = { ...rest, resolved, ...(isTypescript && { dev: true }) };
  }
  await writeFile(
    path.join(dir, "package-lock.json"),
    JSON.stringify({ name: user.name, version: user.version, lockfileVersion: 3, requires: true, packages }, null, 2),
  );
}

/** Every file under @dir, relative and sorted; build/ (the policy cache) is not init's. */
async function filesIn(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => path.relative(dir, path.join(entry.parentPath, entry.name)))
    .filter((file) => !file.startsWith(`build${path.sep}`))
    .sort();
}

async function npm(...args: string[]) {
  return execa("npm", args, { cwd: project, env: USER_ENV, extendEnv: false, stdin: "ignore" });
}

/** A command in the project as its user types it (`npx --no-install`: never the registry's); stdout only is parsed (npm warns on stderr). */
async function npx(...args: string[]) {
  const result = await execa("npx", ["--no-install", ...args], {
    cwd: project,
    env: USER_ENV,
    extendEnv: false,
    reject: false,
    stdin: "ignore",
  });
  return { exitCode: result.exitCode ?? 1, stdout: String(result.stdout), stderr: String(result.stderr) };
}
