import { buildPolicy } from "../build/index.js";
import { findDrift, writeGenerated } from "../compile/index.js";
import { compiledPolicies } from "../reconcile/desired.js";

/** `intercept compile [PATH…] [--check]`: writes generated/, or reports drift. */
export async function compileCommand(paths: string[], options: { check: boolean }): Promise<number> {
  const compiled = await compiledPolicies(paths);
  const complete = paths.length === 0; // all of policies/: files without a policy are stale
  if (options.check) {
    const drifted = await findDrift(compiled, complete);
    for (const file of drifted) process.stderr.write(`${file}: out of date: run \`npx intercept compile\`\n`);
    if (drifted.length === 0) process.stdout.write(`generated/ is up to date (${compiled.length} policies)\n`);
    return drifted.length > 0 ? 1 : 0;
  }
  const changed = await writeGenerated(compiled, complete);
  for (const entry of compiled) {
    process.stdout.write(`${entry.sourcePath}${changed.includes(entry.sourcePath) ? " (written)" : " (unchanged)"}\n`);
  }
  for (const file of changed.filter((f) => !compiled.some((c) => c.sourcePath === f))) process.stdout.write(`${file} (removed: no policy)\n`);
  return 0;
}

/** `intercept build [PATH…]`: compile, then clang into build/<policy>.bpf.o (generated/ is compile's). */
export async function buildCommand(paths: string[]): Promise<number> {
  const compiled = await compiledPolicies(paths);
  for (const entry of compiled) {
    const built = await buildPolicy(entry);
    process.stdout.write(`${built.objectPath} (${built.compiledNow ? "compiled" : "cached"} ${built.contentHash.slice(0, 12)})\n`);
  }
  return 0;
}
