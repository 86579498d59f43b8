import { existsSync } from "node:fs";
import { lstat, mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { compilePolicies } from "../compile/index.js";
import { InterceptError, messageOf, UsageError } from "../errors.js";
import { loadPolicySource } from "../load/index.js";
import { validated } from "../reconcile/desired.js";

const TEMPLATE_DIR = fileURLToPath(new URL("../../../templates/init/", import.meta.url));

/**
 * The scaffold: each template under templates/init/ and where it goes.
 * Dot files are stored without their dot because npm leaves `.gitignore`
 * files out of a package; the dot folder follows the same rule.
 */
const TEMPLATES = [
  { template: "policies/example.ts", target: "policies/example.ts" },
  { template: "tsconfig.json", target: "tsconfig.json" },
  { template: "gitignore", target: ".gitignore" },
  { template: "github/workflows/intercept.yml", target: ".github/workflows/intercept.yml" },
  { template: "README.md", target: "README.md" },
];
const EXAMPLE_POLICY = "policies/example.ts";

/** A file init writes: its path relative to the new repository, and its content. */
interface ScaffoldFile {
  path: string;
  content: string;
}

/**
 * `intercept init [DIR] [--force]`: scaffolds a policy repository in DIR
 * (default: the current folder). Every file is prepared first, generated/
 * included, so an existing file refuses the whole init and nothing is written.
 */
export async function initCommand(args: string[], options: { force: boolean }): Promise<number> {
  if (args.length > 1) throw new UsageError(`init takes one folder at most, got ${args.length}: ${args.join(" ")}`);
  const dir = args[0] ?? ".";
  const files = await scaffoldFiles();
  if (!options.force) {
    const existing = await firstExisting(files.map((file) => path.join(dir, file.path)));
    if (existing) throw new InterceptError("file-exists", `${existing} already exists: nothing written (--force overwrites the scaffold's files)`);
  }
  for (const file of files) {
    const target = path.join(dir, file.path);
    await writeScaffoldFile(target, file.content, options.force);
    process.stdout.write(`wrote ${target}\n`);
  }
  process.stdout.write(nextSteps(dir));
  return 0;
}

/** The templates, and generated/ compiled from the example policy, so `compile --check` passes at once. */
async function scaffoldFiles(): Promise<ScaffoldFile[]> {
  const files = await Promise.all(
    TEMPLATES.map(async ({ template, target }) => ({ path: target, content: await readFile(path.join(TEMPLATE_DIR, template), "utf8") })),
  );
  const example = files.find((file) => file.path === EXAMPLE_POLICY)!;
  return [...files, ...(await compileExample(example))];
}

/**
 * Compiles the example through the same load → validate → compile stages
 * as `intercept compile`, in memory: the loader's cache would otherwise be
 * written under the current folder, which need not be the new repository.
 */
async function compileExample(example: ScaffoldFile): Promise<ScaffoldFile[]> {
  const loaded = await loadPolicySource(example.path, example.content);
  return compilePolicies(validated(loaded.policies, loaded.diagnostics)).map((compiled) => ({ path: compiled.sourcePath, content: compiled.source }));
}

async function firstExisting(targets: string[]): Promise<string | undefined> {
  for (const target of targets) {
    try {
      await lstat(target);
      return target;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw new InterceptError("file-access", `${target}: ${messageOf(error)}`, { cause: error });
    }
  }
  return undefined;
}

/** Without --force, `wx` also refuses a file that appeared since the check. */
async function writeScaffoldFile(target: string, content: string, force: boolean): Promise<void> {
  try {
    await mkdir(path.dirname(target), { recursive: true });
    await writeFile(target, content, { flag: force ? "w" : "wx" });
  } catch (error) {
    throw new InterceptError("file-access", `${target}: ${messageOf(error)}`, { cause: error });
  }
}

function nextSteps(dir: string): string {
  const steps = [
    ...(dir === "." ? [] : [`cd ${dir}`]),
    ...(existsSync(path.join(dir, "package.json")) ? [] : ["npm init -y && npm install intercept"]),
    "npx intercept validate",
    "npx intercept plan   # as root, on the host the policies are for",
  ];
  return `\nNext:\n${steps.map((step) => `  ${step}\n`).join("")}`;
}
