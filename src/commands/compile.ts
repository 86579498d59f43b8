import path from "node:path";
import { buildPolicy, writeObjects, type BuiltPolicy } from "../toolchain/index.js";
import {
  compileComposition,
  findDrift,
  likelyCompositions,
  writeGenerated,
  type CompiledPolicy,
} from "../compile/index.js";
import { compiledPolicies } from "../reconcile/desired.js";
import { withProgress } from "./progress.js";
import { counted } from "./words.js";

/** `intercept compile [PATH…] [--check]`: writes generated/, or reports drift. */
export async function compileCommand(paths: string[], options: { check: boolean }): Promise<number> {
  const compiled = withCompositions(await compiledPolicies(paths));
  const complete = paths.length === 0; // all of policies/: files without a policy are stale
  if (options.check) {
    const drifted = await findDrift(compiled, complete);
    for (const file of drifted)
      process.stderr.write(`${file}: out of date: run \`npx --no-install intercept compile\`\n`);
    if (drifted.length === 0)
      process.stdout.write(`generated/ is up to date (${counted(compiled.length, "program")})\n`);
    return drifted.length > 0 ? 1 : 0;
  }
  const changed = await writeGenerated(compiled, complete);
  for (const entry of compiled) {
    process.stdout.write(`${entry.sourcePath}${changed.includes(entry.sourcePath) ? " (written)" : " (unchanged)"}\n`);
  }
  for (const file of changed.filter((f) => !compiled.some((c) => c.sourcePath === f)))
    process.stdout.write(`${file} (removed: no policy)\n`);
  return 0;
}

/**
 * Each policy's own program, then the program of each composition links are
 * likely to make (policies selecting the same links): generated/ holds the C
 * of both, so a pull request shows the program a shared link will run.
 */
function withCompositions(own: CompiledPolicy[]): CompiledPolicy[] {
  return [
    ...own,
    ...likelyCompositions(own.map((entry) => entry.policy)).map((members) => compileComposition(members)),
  ];
}

/**
 * `intercept build [PATH…] [--out DIR]`: compile, then clang into objects
 * (cached by content hash). With --out, DIR gets each policy's object, one
 * for each composition links are likely to make (policies selecting the
 * same links), and a manifest, for nodes that apply with `--objects DIR`
 * and have no clang.
 */
export async function buildCommand(paths: string[], options: { out?: string }): Promise<number> {
  const built: BuiltPolicy[] = [];
  for (const entry of withCompositions(await compiledPolicies(paths))) {
    const policy = await withProgress(`building ${entry.policy.name} with clang`, () => buildPolicy(entry));
    built.push(policy);
    if (!options.out)
      process.stdout.write(
        `${policy.objectPath} (${entry.policy.name}: ${policy.compiledNow ? "compiled" : "cached"} ${policy.contentHash.slice(0, 12)})\n`,
      );
  }
  if (options.out) {
    const manifest = await writeObjects(options.out, built);
    for (const object of manifest.objects)
      process.stdout.write(
        `${path.join(options.out, object.object)} (${object.policy}: ${object.contentHash.slice(0, 12)}, kernel ${object.minimumKernel}+)\n`,
      );
    process.stdout.write(
      `${path.join(options.out, "manifest.json")}: apply on nodes without clang with \`intercept apply --objects ${options.out}\`\n`,
    );
  }
  return 0;
}
