/**
 * `intercept init`: what it writes in an empty folder, what it adds to a
 * repository that has files of its own (and what it leaves), --force's
 * diff, and the workflow it writes being the one docs/gitops.md shows.
 * Every run in a temporary folder.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { parse } from "yaml";

const REPO = fileURLToPath(new URL("../../../", import.meta.url));
const BIN = path.join(REPO, "bin/intercept.js");
const OWN = JSON.parse(readFileSync(path.join(REPO, "package.json"), "utf8")) as {
  version: string;
  devDependencies: { typescript: string };
};
const SCAFFOLD = [
  ".github/workflows/intercept.yml",
  ".gitignore",
  "README.md",
  "generated/example.bpf.c",
  "package.json",
  "policies/example.ts",
  "tsconfig.json",
];
const WORKFLOW = path.join(REPO, "templates/init/github/workflows/intercept.yml");
const IGNORED = ["node_modules/", "build/", "objects/", "*.plan", "plan.json", "plan.txt"];
const HEADER = "# intercept: build outputs, saved plans and caches (generated/ is committed)";

let work = "";

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), "intercept-init-"));
});

after(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

test("init DIR in an empty folder writes the scaffold, a package.json and a .gitignore; validate and compile --check pass at once", async () => {
  const repo = path.join(work, "new-repo");
  const init = await intercept(work, "init", "new-repo");
  assert.equal(init.exitCode, 0, init.stderr);
  assert.deepEqual(await filesIn(repo), SCAFFOLD);
  for (const file of SCAFFOLD)
    assert.match(init.stdout, new RegExp(`^wrote +new-repo/${file.replace(/[.*]/g, "\\$&")}$`, "m"));
  assert.match(init.stdout, /^ {2}npm install +#/m, "package.json is new: the next steps install it");
  assert.doesNotMatch(init.stdout, /npx (?!--no-install)/, "every npx in the next steps runs the installed copy");

  assert.deepEqual(JSON.parse(await readFile(path.join(repo, "package.json"), "utf8")), {
    name: "new-repo",
    version: "0.0.0",
    private: true,
    devDependencies: { "intercept-bpf": `^${OWN.version}`, typescript: OWN.devDependencies.typescript },
  });
  assert.equal(
    await readFile(path.join(repo, ".gitignore"), "utf8"),
    `${HEADER}\n${IGNORED.map((line) => `${line}\n`).join("")}`,
  );
  const tsconfig = JSON.parse(await readFile(path.join(repo, "tsconfig.json"), "utf8"));
  assert.deepEqual(tsconfig.include, ["policies"]);
  assert.equal(tsconfig.compilerOptions.noEmit, true);
  assert.match(
    await readFile(path.join(repo, "policies/example.ts"), "utf8"),
    /^import \{ definePolicy \} from "intercept-bpf";$/m,
  );
  assert.equal(
    await readFile(path.join(repo, ".github/workflows/intercept.yml"), "utf8"),
    await readFile(WORKFLOW, "utf8"),
  );

  for (const args of [["validate"], ["compile", "--check"]]) {
    const result = await intercept(repo, ...args);
    assert.equal(result.exitCode, 0, `${args.join(" ")}: ${result.stderr}`);
  }
});

test("the YAML form in the example's comment is the same policy: it compiles to the same generated C", async () => {
  const repo = path.join(work, "yaml-check");
  assert.equal((await intercept(work, "init", "yaml-check")).exitCode, 0);
  const example = await readFile(path.join(repo, "policies/example.ts"), "utf8");
  const yaml = example
    .split("\n")
    .filter((line) => line.startsWith("//   "))
    .map((line) => line.slice("//   ".length))
    .join("\n");
  assert.match(yaml, /interceptors:/);
  assert.match(yaml, /node_modules\/intercept-bpf\/schemas\/policy\.schema\.json/);
  // Named example.yaml, so it compiles to generated/example.bpf.c, which init wrote from the TS form.
  const yamlFile = path.join(work, "yaml-form", "example.yaml");
  await mkdir(path.dirname(yamlFile), { recursive: true });
  await writeFile(yamlFile, `${yaml}\n`);
  const check = await intercept(repo, "compile", "--check", yamlFile);
  assert.equal(check.exitCode, 0, check.stderr);
});

/** A repository with files of its own: README, tsconfig, .gitignore (no final newline), a 4-space package.json. */
async function userRepository(name: string) {
  const repo = path.join(work, name);
  await mkdir(repo);
  const files = {
    "README.md": "# Our edge hosts\n",
    "tsconfig.json": '{ "compilerOptions": { "strict": false } }\n',
    ".gitignore": "/node_modules\n.env\nobjects/",
    "package.json": JSON.stringify(
      {
        name: "edge",
        version: "2.1.0",
        scripts: { lint: "eslint ." },
        dependencies: { "intercept-bpf": "^0.1.0", express: "^4.0.0" },
      },
      null,
      4,
    ),
  };
  for (const [file, content] of Object.entries(files)) await writeFile(path.join(repo, file), content);
  return { repo, files };
}

test("init in a repository with files of its own: writes what is missing, appends to .gitignore, merges typescript into package.json, leaves the rest", async () => {
  const { repo, files } = await userRepository("existing");
  const init = await intercept(repo, "init");
  assert.equal(init.exitCode, 0, init.stderr);
  assert.deepEqual(await filesIn(repo), SCAFFOLD);

  assert.equal(await readFile(path.join(repo, "README.md"), "utf8"), files["README.md"]);
  assert.equal(await readFile(path.join(repo, "tsconfig.json"), "utf8"), files["tsconfig.json"]);
  // /node_modules and objects/ are there already (a leading slash counts): the other four are appended.
  assert.equal(
    await readFile(path.join(repo, ".gitignore"), "utf8"),
    `${files[".gitignore"]}\n\n${HEADER}\nbuild/\n*.plan\nplan.json\nplan.txt\n`,
  );
  // Exactly one key added, in the user's indentation, nothing else moved; intercept-bpf is listed already.
  const expected = JSON.parse(files["package.json"]) as Record<string, unknown>;
  expected.devDependencies = { typescript: OWN.devDependencies.typescript };
  assert.equal(await readFile(path.join(repo, "package.json"), "utf8"), JSON.stringify(expected, null, 4));

  assert.match(init.stdout, /^left +README\.md \(yours: --force replaces it, showing the diff first\)$/m);
  assert.match(init.stdout, /^left +tsconfig\.json \(yours: --force replaces it, showing the diff first\)$/m);
  assert.match(init.stdout, /^appended +\.gitignore: build\/ \*\.plan plan\.json plan\.txt$/m);
  assert.match(
    init.stdout,
    new RegExp(
      `^merged +package\\.json: devDependencies typescript@${OWN.devDependencies.typescript.replace(/[.^]/g, "\\$&")}$`,
      "m",
    ),
  );
  for (const file of ["policies/example.ts", "generated/example.bpf.c", ".github/workflows/intercept.yml"])
    assert.match(init.stdout, new RegExp(`^wrote +${file.replace(/\./g, "\\.")}$`, "m"));

  // A second run changes nothing and says so.
  const before = await snapshot(repo);
  const again = await intercept(repo, "init");
  assert.equal(again.exitCode, 0, again.stderr);
  assert.deepEqual(await snapshot(repo), before);
  assert.doesNotMatch(again.stdout, /^(wrote|appended|merged|replaced) /m);
  assert.match(again.stdout, /^unchanged +\.gitignore/m);
  assert.match(again.stdout, /^unchanged +package\.json/m);
  assert.doesNotMatch(again.stdout, /^ {2}npm install/m, "package.json unchanged: nothing new to install");
});

test("init --force replaces the user's scaffold files after printing each diff, and still only adds to .gitignore and package.json", async () => {
  const { repo, files } = await userRepository("forced");
  const init = await intercept(repo, "init", "--force");
  assert.equal(init.exitCode, 0, init.stderr);
  const readme = await readFile(path.join(REPO, "templates/init/README.md"), "utf8");
  assert.equal(await readFile(path.join(repo, "README.md"), "utf8"), readme);
  assert.match(
    init.stdout,
    /^--- a\/README\.md\tyours\n\+\+\+ b\/README\.md\tintercept init\n@@ -1,1 \+1,\d+ @@\n-# Our edge hosts\n\+# Policies\n/m,
  );
  assert.match(init.stdout, /^--- a\/tsconfig\.json\tyours$/m);
  assert.ok(
    init.stdout.indexOf("--- a/README.md") < init.stdout.indexOf("replaced   README.md"),
    "the diff comes before the list",
  );
  assert.match(init.stdout, /^replaced +README\.md$/m);
  assert.match(init.stdout, /^replaced +tsconfig\.json$/m);
  assert.ok((await readFile(path.join(repo, ".gitignore"), "utf8")).startsWith(files[".gitignore"]));
  assert.equal(JSON.parse(await readFile(path.join(repo, "package.json"), "utf8")).scripts.lint, "eslint .");
  assert.equal((await intercept(repo, "compile", "--check")).exitCode, 0);
});

test("a user's own policies/example.ts is left, and so is the example's C: compile writes theirs", async () => {
  const repo = path.join(work, "own-example");
  await mkdir(path.join(repo, "policies"), { recursive: true });
  const mine =
    'import { definePolicy } from "intercept-bpf";\nexport default definePolicy({ interceptors: [{ originalPort: 7000, port: 7001 }] });\n';
  await writeFile(path.join(repo, "policies/example.ts"), mine);
  const init = await intercept(repo, "init");
  assert.equal(init.exitCode, 0, init.stderr);
  assert.equal(await readFile(path.join(repo, "policies/example.ts"), "utf8"), mine);
  assert.match(
    init.stdout,
    /^left +generated\/example\.bpf\.c \(policies\/example\.ts is yours: `intercept compile` writes its C\)$/m,
  );
  assert.ok(!(await filesIn(repo)).includes("generated/example.bpf.c"));
});

test("a package.json that is not JSON stops init before it writes anything", async () => {
  const repo = path.join(work, "broken-manifest");
  await mkdir(repo);
  await writeFile(path.join(repo, "package.json"), "{ not json");
  const init = await intercept(repo, "init");
  assert.equal(init.exitCode, 1);
  assert.match(init.stderr, /^intercept: package\.json: not valid JSON \(.+\): fix it, then run init again$/);
  assert.deepEqual(await filesIn(repo), ["package.json"]);
});

test("init takes one folder at most (a usage error, nothing written)", async () => {
  const init = await intercept(work, "init", "one", "two");
  assert.notEqual(init.exitCode, 0);
  assert.match(init.stderr, /^intercept: init takes one folder at most, got 2: one two$/m);
  assert.deepEqual(
    (await readdir(work)).filter((name) => name === "one" || name === "two"),
    [],
  );
});

/** The ```yaml block after @marker in docs/gitops.md. */
function documented(marker: string): string {
  const text = readFileSync(path.join(REPO, "docs/gitops.md"), "utf8");
  const at = text.indexOf(marker);
  assert.ok(at >= 0, `docs/gitops.md has the marker ${marker}`);
  const open = text.indexOf("```yaml\n", at) + "```yaml\n".length;
  return text.slice(open, text.indexOf("```\n", open));
}

test("the workflow init writes is the one docs/gitops.md shows, and docs/examples/ holds the same file", async () => {
  const workflow = await readFile(WORKFLOW, "utf8");
  assert.equal(documented("<!-- workflow: "), workflow);
  assert.equal(await readFile(path.join(REPO, "docs/examples/gitops-workflow.yml"), "utf8"), workflow);
  assert.equal(documented("<!-- gitlab: "), await readFile(path.join(REPO, "docs/examples/gitlab-ci.yml"), "utf8"));
});

interface Job {
  "runs-on": string | string[];
  if?: string;
  needs?: string | string[];
  environment?: string;
  steps: { name?: string; run?: string; uses?: string }[];
}

test("the workflow: pull requests check on a hosted runner; only main plans on the node, saves the plan, and apply applies that file after an approval", () => {
  const workflow = parse(readFileSync(WORKFLOW, "utf8")) as {
    on: Record<string, unknown>;
    permissions: Record<string, string>;
    jobs: Record<string, Job>;
  };
  assert.deepEqual(workflow.permissions, { contents: "read" });
  const { check, plan, apply } = workflow.jobs;
  assert.ok(check && plan && apply);
  assert.equal(check["runs-on"], "ubuntu-latest");
  assert.equal(check.if, undefined, "check runs for pull requests");
  const runs = (job: Job) => job.steps.flatMap((step) => (step.run === undefined ? [] : [step.run]));
  assert.deepEqual(
    runs(check).filter((run) => /intercept|tsc/.test(run)),
    [
      "npx --no-install intercept validate",
      "npx --no-install intercept compile --check",
      "npx --no-install tsc --noEmit",
      "npx --no-install intercept build --out objects",
    ],
  );
  for (const job of [plan, apply]) assert.deepEqual(job["runs-on"], ["self-hosted", "intercept"]);
  assert.equal(plan.if, "github.ref == 'refs/heads/main' && github.event_name != 'pull_request'");
  assert.match(
    runs(plan).join("\n"),
    /intercept plan --objects objects \\\n\s+--detailed-exitcode --no-color --out intercept\.plan > plan\.txt/,
  );
  assert.match(runs(plan).join("\n"), />> "\$GITHUB_STEP_SUMMARY"/, "the plan is shown in the run's summary");
  assert.ok(plan.steps.some((step) => step.uses?.startsWith("actions/upload-artifact@")));
  assert.equal(apply.needs, "plan", "apply runs after that plan (and so only on main)");
  assert.equal(apply.environment, "intercept-apply", "a required reviewer approves it");
  const applied = runs(apply).join("\n");
  assert.match(applied, /intercept apply --plan intercept\.plan \\\n\s+--objects objects --yes/);
  assert.doesNotMatch(applied, /intercept plan/, "apply never plans again on its own");
  assert.match(applied, /exit 1/);
  for (const run of Object.values(workflow.jobs).flatMap(runs)) {
    for (const npx of run.match(/npx \S+/g) ?? [])
      assert.equal(npx, "npx --no-install", `${run}: npx must not fetch from the registry`);
  }
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

async function snapshot(dir: string): Promise<Record<string, string>> {
  const files = await filesIn(dir);
  return Object.fromEntries(
    await Promise.all(files.map(async (file) => [file, await readFile(path.join(dir, file), "utf8")] as const)),
  );
}
