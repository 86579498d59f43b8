/**
 * The package as a user gets it: `npm pack` of this repository, installed
 * offline into a fresh project, then a user's first commands there — init,
 * validate, compile --check, their own tsc, and plan against a network
 * namespace this test creates. The steps run in order, each on the state
 * the one before left, as a user's would.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { execa } from "execa";

const REPO = fileURLToPath(new URL("../../../", import.meta.url));

/** `npm pack --json`: what the tarball holds (the same list `npm pack --dry-run --json` prints). */
interface PackResult {
  filename: string;
  integrity: string;
  size: number;
  files: { path: string }[];
}

/** Where a packed file may come from; anything else (tests, benchmarks, demo, CI, maps) must stay out. */
const ALLOWED = [/^bin\/[^/]+\.js$/, /^dist\/src\/.+\.(js|d\.ts)$/, /^templates\//, /^schemas\//, /^(README\.md|LICENSE|package\.json)$/];
const FORBIDDEN = /^(tests|bench|demo|docs|deploy|examples|policies|generated|scripts|src|\.ci|\.github)\/|\.map$|\.test\.|^tsconfig/;

/**
 * The environment a user's shell gives npm: without the npm_* variables
 * `npm test` exports (npm_config_local_prefix, npm_config_call, …), which
 * would point nested npm and npx commands at this repository, and without
 * the node_modules/.bin folders it puts on PATH, where npx would find this
 * repository's tsc if the project had none.
 */
const USER_ENV = {
  ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("npm_"))),
  PATH: (process.env.PATH ?? "").split(path.delimiter).filter((dir) => !dir.endsWith(path.join("node_modules", ".bin"))).join(path.delimiter),
};

let work = "";
let project = "";
let packed: PackResult;
const netns = `icpkg${randomBytes(4).toString("hex")}`;

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), "intercept-package-"));
  const pack = await execa("npm", ["pack", "--json", "--pack-destination", work], { cwd: REPO, env: USER_ENV, extendEnv: false });
  [packed] = JSON.parse(pack.stdout) as PackResult[]; // npm's warnings and prepack's output go to stderr
  project = path.join(work, "project");
  await mkdir(project);
  await writeLockedProject(project, packed!);
  await npm("install", "--offline", "--no-audit", "--no-fund", path.join(work, packed!.filename));
}, { timeout: 120_000 });

after(async () => {
  // Removed even when a step failed; a namespace that was never made is not an error here.
  await execa("ip", ["netns", "del", netns], { reject: false });
  if (work) await rm(work, { recursive: true, force: true });
});

test("the tarball holds the CLI, compiled JS, declarations, templates, schema, README and LICENSE, and no tests, benchmarks, demo or CI files", () => {
  const files = packed.files.map((file) => file.path);
  assert.deepEqual(files.filter((file) => FORBIDDEN.test(file)), []);
  assert.deepEqual(files.filter((file) => !ALLOWED.some((pattern) => pattern.test(file))), []);
  for (const needed of [
    "bin/intercept.js",
    "dist/src/cli.js",
    "dist/src/api.js",
    "dist/src/api.d.ts",
    "dist/src/validate/policy-validator.js",
    "templates/bpf/policy.bpf.c.hbs",
    "templates/init/policies/example.ts",
    "schemas/policy.schema.json",
    "README.md",
    "LICENSE",
  ]) {
    assert.ok(files.includes(needed), `${needed} is missing from the tarball`);
  }
});

test("npx intercept --version prints the package's version, whatever the cwd's package.json says", async () => {
  const { version } = JSON.parse(await readFile(path.join(REPO, "package.json"), "utf8")) as { version: string };
  const result = await npx("intercept", "--version");
  assert.equal(result.exitCode, 0, result.stderr);
  assert.equal(result.stdout.trim(), version);
});

test("npx intercept init scaffolds a repository where validate, compile --check and the user's tsc pass", async () => {
  const init = await npx("intercept", "init");
  assert.equal(init.exitCode, 0, init.stderr);
  for (const file of ["policies/example.ts", "tsconfig.json", ".gitignore", ".github/workflows/intercept.yml", "README.md", "generated/example.bpf.c"]) {
    assert.ok(existsSync(path.join(project, file)), `init did not write ${file}`);
  }
  for (const args of [["intercept", "validate"], ["intercept", "compile", "--check"], ["tsc", "--noEmit", "-p", "."]]) {
    const result = await npx(...args);
    assert.equal(result.exitCode, 0, `npx ${args.join(" ")}: ${result.stdout}${result.stderr}`);
  }
});

test("a type error is reported by both the installed loader and the user's tsc (both read dist/src/api.d.ts)", async () => {
  const typo = path.join(project, "policies", "typo.ts");
  // A value the schema accepts but the type does not: only a type check against the API finds it.
  await writeFile(typo, 'import { definePolicy } from "intercept-bpf";\n\nconst protocol: string = "tcp";\nexport default definePolicy({ name: "typo", interfaces: { include: ["x"] }, interceptors: [{ originalPort: 7000, port: 7100, protocol }] });\n');
  try {
    const validate = await npx("intercept", "validate");
    assert.equal(validate.exitCode, 1);
    assert.match(validate.stderr, /policies\/typo\.ts:4:\d+: error\[ts\/type-error\]: Type 'string' is not assignable to type '"tcp" \| "udp" \| undefined'/);
    const tsc = await npx("tsc", "--noEmit", "-p", ".");
    assert.notEqual(tsc.exitCode, 0);
    assert.match(tsc.stdout, /policies\/typo\.ts\(4,\d+\): error TS2322: Type 'string' is not assignable/);
  } finally {
    await rm(typo);
  }
});

test("npx intercept plan --netns prints a create plan for the example policy", async () => {
  await execa("ip", ["netns", "add", netns]);
  await execa("ip", ["-n", netns, "link", "add", `${netns}a`, "type", "veth", "peer", "name", `${netns}b`]);
  const plan = await npx("intercept", "plan", "--netns", netns, "--no-color");
  assert.equal(plan.exitCode, 0, plan.stderr);
  assert.match(plan.stdout, /in network namespace "icpkg[0-9a-f]+"/);
  assert.match(plan.stdout, /\+ program\.example\s+create: new policy, 1 rule/);
  assert.match(plan.stdout, new RegExp(`\\+ attachment\\.${netns}a\\s+create: attach example`));
  assert.match(plan.stdout, /Plan: 3 to add, 0 to change, 0 to destroy\./);
});

/**
 * The project's package.json and lock file: the tarball, and every other
 * package at the version this repository's lock file pins. `npm ci` filled
 * the npm cache with those tarballs but not the registry's metadata, and
 * npm only installs offline what a lock file names exactly.
 */
async function writeLockedProject(dir: string, tarball: PackResult): Promise<void> {
  const lock = JSON.parse(await readFile(path.join(REPO, "package-lock.json"), "utf8")) as { packages: Record<string, Record<string, unknown>> };
  const manifest = JSON.parse(await readFile(path.join(REPO, "package.json"), "utf8")) as Record<string, unknown>;
  const resolved = `file:../${tarball.filename}`;
  // The user's own TypeScript, for their tsc; the repository's other dev tools stay out.
  const dependencies = { intercept: resolved, typescript: lock.packages["node_modules/typescript"]!.version };
  const packages: Record<string, Record<string, unknown>> = {
    "": { name: "policy-repo", version: "1.0.0", dependencies },
    "node_modules/intercept": {
      version: manifest.version,
      resolved,
      integrity: tarball.integrity,
      license: manifest.license,
      dependencies: manifest.dependencies,
      bin: manifest.bin,
      engines: manifest.engines,
    },
  };
  for (const [location, entry] of Object.entries(lock.packages)) {
    if (location === "" || (entry.dev && !entry.optional && location !== "node_modules/typescript")) continue;
    const { dev: _dev, devOptional: _devOptional, ...rest } = entry;
    packages[location] = rest;
  }
  await writeFile(path.join(dir, "package.json"), JSON.stringify({ name: "policy-repo", version: "1.0.0", private: true, dependencies }, null, 2));
  await writeFile(path.join(dir, "package-lock.json"), JSON.stringify({ name: "policy-repo", version: "1.0.0", lockfileVersion: 3, requires: true, packages }, null, 2));
}

async function npm(...args: string[]) {
  return execa("npm", args, { cwd: project, env: USER_ENV, extendEnv: false, stdin: "ignore" });
}

/** A command in the project as its user types it; stdout only is parsed (npm warns on stderr). */
async function npx(...args: string[]) {
  const result = await execa("npx", args, { cwd: project, env: USER_ENV, extendEnv: false, reject: false, stdin: "ignore" });
  return { exitCode: result.exitCode ?? 1, stdout: String(result.stdout), stderr: String(result.stderr) };
}
