import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createTwoFilesPatch } from "diff";
import { compilePolicies } from "../compile/index.js";
import { InterceptError, messageOf, UsageError } from "../errors.js";
import { loadPolicySource } from "../load/index.js";
import { validated } from "../reconcile/desired.js";
import {
  appendGitignore,
  mergePackageJson,
  missingGitignoreEntries,
  newGitignore,
  newPackageJson,
  PACKAGE_NAME,
  type NeededPackages,
} from "./init-merge.js";

const TEMPLATE_DIR = fileURLToPath(new URL("../../../templates/init/", import.meta.url));
/** The package.json of the package this CLI runs from: its version, and the TypeScript it is built with. */
const OWN_PACKAGE_JSON = new URL("../../../package.json", import.meta.url);

/**
 * The scaffold's whole files: each template under templates/init/ and where
 * it goes. The dot folder is stored without its dot because npm leaves
 * dot files out of a package. .gitignore and package.json are not here:
 * init adds to them (init-merge.ts) and never replaces them.
 */
export const TEMPLATES = [
  { template: "policies/example.ts", target: "policies/example.ts" },
  { template: "tsconfig.json", target: "tsconfig.json" },
  { template: "github/workflows/intercept.yml", target: ".github/workflows/intercept.yml" },
  { template: "README.md", target: "README.md" },
] as const;
const EXAMPLE_POLICY = "policies/example.ts";

/** A file of the scaffold: its path relative to the repository, and its content. */
interface ScaffoldFile {
  path: string;
  content: string;
}

/** What init does with one file, as it lists it; `content` is what it writes, if anything. */
type Outcome = { file: string; content?: string; diff?: string } & (
  | { action: "wrote" | "replaced" | "unchanged" }
  | { action: "left"; why: string }
  | { action: "appended" | "merged"; what: string[] }
);

/**
 * `intercept init [DIR] [--force]`: makes DIR (default: the current folder)
 * a policy repository, adding to what is there. It writes the scaffold's
 * files that are missing, appends the lines its .gitignore needs and the
 * packages its package.json needs, and leaves every other file of the
 * user's as it is. --force replaces a user's file that differs from the
 * scaffold's, printing the diff first. Every file is read and decided
 * before the first is written: an unreadable one stops init with nothing written.
 */
export async function initCommand(args: string[], options: { force: boolean }): Promise<number> {
  if (args.length > 1) throw new UsageError(`init takes one folder at most, got ${args.length}: ${args.join(" ")}`);
  const dir = args[0] ?? ".";
  const outcomes = await decide(dir, options.force);
  for (const outcome of outcomes) {
    if (outcome.diff !== undefined) process.stdout.write(outcome.diff);
    if (outcome.content !== undefined)
      await write(path.join(dir, outcome.file), outcome.content, outcome.action === "wrote" ? "wx" : "w");
  }
  process.stdout.write(outcomes.map((outcome) => `${describe(dir, outcome)}\n`).join(""));
  process.stdout.write(nextSteps(dir, outcomes));
  return 0;
}

/** What init does with each file of the scaffold, .gitignore and package.json. */
async function decide(dir: string, force: boolean): Promise<Outcome[]> {
  const scaffold = await scaffoldFiles();
  const outcomes: Outcome[] = [];
  for (const file of scaffold.whole) outcomes.push(await placeFile(dir, file, force));
  // The example's C belongs to the example: with the user's own example.ts, `compile` writes theirs.
  const exampleLeft = outcomes.some((outcome) => outcome.file === EXAMPLE_POLICY && outcome.action === "left");
  for (const file of scaffold.generated) {
    outcomes.push(
      exampleLeft
        ? { action: "left", file: file.path, why: `${EXAMPLE_POLICY} is yours: \`intercept compile\` writes its C` }
        : await placeFile(dir, file, force),
    );
  }
  outcomes.push(await addToGitignore(dir), await addToPackageJson(dir));
  return outcomes;
}

/** The templates, and generated/ compiled from the example policy, so `compile --check` passes at once. */
async function scaffoldFiles(): Promise<{ whole: ScaffoldFile[]; generated: ScaffoldFile[] }> {
  const whole = await Promise.all(
    TEMPLATES.map(async ({ template, target }) => ({
      path: target,
      content: await readFile(path.join(TEMPLATE_DIR, template), "utf8"),
    })),
  );
  const example = whole.find((file) => file.path === EXAMPLE_POLICY)!;
  return { whole, generated: await compileExample(example) };
}

/**
 * Compiles the example through the same load → validate → compile stages
 * as `intercept compile`, in memory: the loader's cache would otherwise be
 * written under the current folder, which need not be the new repository.
 */
async function compileExample(example: ScaffoldFile): Promise<ScaffoldFile[]> {
  const loaded = await loadPolicySource(example.path, example.content);
  return compilePolicies(validated(loaded.policies, loaded.diagnostics)).map((compiled) => ({
    path: compiled.sourcePath,
    content: compiled.source,
  }));
}

/** @file is written if it is missing; a different file of the user's is left, or with @force replaced after its diff is shown. */
async function placeFile(dir: string, file: ScaffoldFile, force: boolean): Promise<Outcome> {
  const target = path.join(dir, file.path);
  const existing = await readIfExists(target);
  if (existing === undefined) return { action: "wrote", file: file.path, content: file.content };
  if (existing === file.content) return { action: "unchanged", file: file.path };
  if (!force) return { action: "left", file: file.path, why: "yours: --force replaces it, showing the diff first" };
  const diff = createTwoFilesPatch(
    `a/${file.path}`,
    `b/${file.path}`,
    existing,
    file.content,
    "yours",
    "intercept init",
  );
  return { action: "replaced", file: file.path, content: file.content, diff };
}

/** The entries a policy repository ignores that .gitignore lacks, appended (or a new .gitignore). */
async function addToGitignore(dir: string): Promise<Outcome> {
  const file = ".gitignore";
  const target = path.join(dir, file);
  const existing = await readIfExists(target);
  if (existing === undefined) return { action: "wrote", file, content: newGitignore() };
  const missing = missingGitignoreEntries(existing);
  if (missing.length === 0) return { action: "unchanged", file };
  return { action: "appended", file, what: missing, content: appendGitignore(existing, missing) };
}

/** This package and TypeScript added to package.json's devDependencies where it lists neither (or a new package.json). */
async function addToPackageJson(dir: string): Promise<Outcome> {
  const file = "package.json";
  const target = path.join(dir, file);
  const needed = await neededPackages();
  const existing = await readIfExists(target);
  if (existing === undefined)
    return { action: "wrote", file, content: newPackageJson(path.basename(path.resolve(dir)), needed) };
  const merged = mergePackageJson(existing, target, needed);
  if (merged.added.length === 0) return { action: "unchanged", file };
  return {
    action: "merged",
    file,
    what: merged.added.map((added) => `devDependencies ${added}`),
    content: merged.text,
  };
}

/** This package at a range that includes the running version; TypeScript at the range this package is built with. */
async function neededPackages(): Promise<NeededPackages> {
  const own = JSON.parse(await readFile(OWN_PACKAGE_JSON, "utf8")) as {
    version: string;
    devDependencies?: Record<string, string>;
  };
  return { [PACKAGE_NAME]: `^${own.version}`, typescript: own.devDependencies?.typescript ?? "*" };
}

async function readIfExists(target: string): Promise<string | undefined> {
  try {
    return await readFile(target, "utf8");
  } catch (error) {
    // Missing is the ordinary case: init writes it.
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new InterceptError("file-access", `${target}: ${messageOf(error)}`, { cause: error });
  }
}

/** Flag `wx` refuses a file that appeared since it was read: init never overwrites what it did not read. */
async function write(target: string, content: string, flag: "w" | "wx"): Promise<void> {
  try {
    await mkdir(path.dirname(target), { recursive: true });
    await writeFile(target, content, { flag });
  } catch (error) {
    throw new InterceptError("file-access", `${target}: ${messageOf(error)}`, { cause: error });
  }
}

function describe(dir: string, outcome: Outcome): string {
  const shown = path.join(dir, outcome.file);
  switch (outcome.action) {
    case "wrote":
      return `wrote      ${shown}`;
    case "replaced":
      return `replaced   ${shown}`;
    case "unchanged":
      return `unchanged  ${shown} (already as init writes it)`;
    case "left":
      return `left       ${shown} (${outcome.why})`;
    case "appended":
      return `appended   ${shown}: ${outcome.what.join(" ")}`;
    case "merged":
      return `merged     ${shown}: ${outcome.what.join(", ")}`;
  }
}

function nextSteps(dir: string, outcomes: Outcome[]): string {
  const packages = outcomes.find((outcome) => outcome.file === "package.json");
  const steps = [
    ...(dir === "." ? [] : [`cd ${dir}`]),
    ...(packages?.action === "unchanged"
      ? []
      : ["npm install                          # the packages package.json now lists"]),
    "npx --no-install intercept validate",
    "npx --no-install tsc --noEmit",
    "sudo npx --no-install intercept demo   # see interception work in a sandbox of its own",
    "git add -A && git commit               # then open a pull request: .github/workflows/intercept.yml checks it",
  ];
  return `\nNext:\n${steps.map((step) => `  ${step}\n`).join("")}`;
}
