import { formatDiagnostic, sortDiagnostics, type Diagnostic } from "../diagnostics.js";
import { loadPolicies } from "../load/index.js";
import { validatePolicies } from "../validate/index.js";

/** `intercept validate [PATH…] [--json]`: every problem of every file, sorted. */
export async function validateCommand(paths: string[], options: { json: boolean }): Promise<number> {
  const loaded = await loadPolicies(paths);
  const { policies, diagnostics } = validatePolicies(loaded.policies);
  const all: Diagnostic[] = sortDiagnostics([...loaded.diagnostics, ...diagnostics]);
  if (options.json) {
    process.stdout.write(`${JSON.stringify(all, null, 2)}\n`);
  } else if (all.length > 0) {
    process.stderr.write(`${all.map(formatDiagnostic).join("\n")}\n`);
  } else {
    process.stdout.write(`${policies.length} polic${policies.length === 1 ? "y" : "ies"} valid: ${policies.map((p) => p.file).join(", ")}\n`);
  }
  return all.length > 0 ? 1 : 0;
}
