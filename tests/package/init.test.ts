/** `intercept init`: the files it writes, refusing to overwrite, --force; every run in a temporary folder. */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { execa } from "execa";

const BIN = fileURLToPath(new URL("../../../bin/intercept.js", import.meta.url));
const SCAFFOLD = [".github/workflows/intercept.yml", ".gitignore", "README.md", "generated/example.bpf.c", "policies/example.ts", "tsconfig.json"];

let work = "";

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), "intercept-init-"));
});

after(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

test("init DIR writes the scaffold, and validate and compile --check pass in it straight away", async () => {
  const repo = path.join(work, "new-repo");
  const init = await intercept(work, "init", "new-repo");
  assert.equal(init.exitCode, 0, init.stderr);
  assert.deepEqual(await filesIn(repo), SCAFFOLD);
  assert.match(init.stdout, /^wrote new-repo\/policies\/example\.ts$/m);
  assert.match(init.stdout, /npm init -y && npm install intercept/, "no package.json there: the next steps say how to install");

  const tsconfig = JSON.parse(await readFile(path.join(repo, "tsconfig.json"), "utf8"));
  assert.deepEqual(tsconfig.include, ["policies"]);
  assert.equal(tsconfig.compilerOptions.noEmit, true);
  assert.equal(tsconfig.compilerOptions.strict, true);
  assert.equal(tsconfig.compilerOptions.moduleResolution, "Bundler");
  assert.deepEqual((await readFile(path.join(repo, ".gitignore"), "utf8")).split("\n").filter((line) => line && !line.startsWith("#")), ["build/", "node_modules/"]);
  const workflow = await readFile(path.join(repo, ".github/workflows/intercept.yml"), "utf8");
  const steps = ["npx intercept validate", "npx intercept compile --check", "npx intercept plan"].map((step) => workflow.indexOf(step));
  assert.ok(steps.every((at, i) => at >= 0 && (i === 0 || at > steps[i - 1]!)), "the workflow runs validate, compile --check, then plan");
  assert.match(await readFile(path.join(repo, "policies/example.ts"), "utf8"), /export default definePolicy\(\{/);

  for (const args of [["validate"], ["compile", "--check"]]) {
    const result = await intercept(repo, ...args);
    assert.equal(result.exitCode, 0, `${args.join(" ")}: ${result.stderr}`);
  }
});

test("the YAML form in the example's comment is the same policy: it compiles to the same generated C", async () => {
  const repo = path.join(work, "yaml-check");
  assert.equal((await intercept(work, "init", "yaml-check")).exitCode, 0);
  const example = await readFile(path.join(repo, "policies/example.ts"), "utf8");
  const yaml = example.split("\n").filter((line) => line.startsWith("//   ")).map((line) => line.slice("//   ".length)).join("\n");
  assert.match(yaml, /interceptors:/);
  // Named example.yaml, so it compiles to generated/example.bpf.c, which init wrote from the TS form.
  const yamlFile = path.join(work, "yaml-form", "example.yaml");
  await mkdir(path.dirname(yamlFile), { recursive: true });
  await writeFile(yamlFile, `${yaml}\n`);
  const check = await intercept(repo, "compile", "--check", yamlFile);
  assert.equal(check.exitCode, 0, check.stderr);
});

test("init refuses to overwrite: one line naming the first existing file, exit 1, nothing written", async () => {
  const repo = path.join(work, "existing");
  await mkdir(repo);
  await writeFile(path.join(repo, "README.md"), "mine\n");
  await writeFile(path.join(repo, "tsconfig.json"), "mine\n");
  const init = await intercept(repo, "init");
  assert.equal(init.exitCode, 1);
  assert.equal(init.stderr, "intercept: tsconfig.json already exists: nothing written (--force overwrites the scaffold's files)");
  assert.deepEqual(await filesIn(repo), ["README.md", "tsconfig.json"]);
  assert.equal(await readFile(path.join(repo, "tsconfig.json"), "utf8"), "mine\n");
});

test("init --force overwrites the scaffold's files and leaves every other file alone", async () => {
  const repo = path.join(work, "forced");
  await mkdir(repo);
  await writeFile(path.join(repo, "tsconfig.json"), "mine\n");
  await writeFile(path.join(repo, "package.json"), "{}\n");
  const init = await intercept(repo, "init", "--force");
  assert.equal(init.exitCode, 0, init.stderr);
  assert.doesNotMatch(init.stdout, /npm install intercept/, "a package.json exists: no install step");
  assert.deepEqual(await filesIn(repo), [...SCAFFOLD, "package.json"].sort());
  assert.equal(JSON.parse(await readFile(path.join(repo, "tsconfig.json"), "utf8")).include[0], "policies");
  assert.equal(await readFile(path.join(repo, "package.json"), "utf8"), "{}\n");
  assert.equal((await intercept(repo, "compile", "--check")).exitCode, 0);
});

test("init takes one folder at most (exit 2, usage)", async () => {
  const init = await intercept(work, "init", "one", "two");
  assert.equal(init.exitCode, 2);
  assert.match(init.stderr, /^intercept: init takes one folder at most, got 2: one two$/m);
  assert.deepEqual((await readdir(work)).filter((name) => name === "one" || name === "two"), []);
});

async function intercept(cwd: string, ...args: string[]) {
  const result = await execa("node", [BIN, ...args], { cwd, reject: false, stdin: "ignore" });
  return { exitCode: result.exitCode ?? 1, stdout: String(result.stdout), stderr: String(result.stderr) };
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
