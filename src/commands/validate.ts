import { formatDiagnostics, reportableDiagnostics } from "../diagnostics.js";
import { DEFAULT_POLICY_DIR, loadPolicies, POLICY_EXTENSIONS } from "../load/index.js";
import { validatePolicies } from "../validate/index.js";

/**
 * `intercept validate [PATH…] [--json]`: every problem of every file,
 * sorted, exit 1 if any. `--json` prints them as an array of diagnostic
 * objects (src/diagnostics.ts), `[]` when all is well. Paths holding no
 * policy file at all are not an error (an empty folder is a valid, empty
 * set of policies; `apply` decides what to do with one), but are said so.
 */
export async function validateCommand(paths: string[], options: { json: boolean; colour?: boolean }): Promise<number> {
  const loaded = await loadPolicies(paths);
  const { policies, diagnostics } = validatePolicies(loaded.policies);
  const all = [...loaded.diagnostics, ...diagnostics];
  if (options.json) {
    process.stdout.write(`${JSON.stringify(reportableDiagnostics(all), null, 2)}\n`);
  } else if (all.length > 0) {
    const colour = options.colour ?? (Boolean(process.stderr.isTTY) && !process.env.NO_COLOR);
    const files = new Set(all.map((diagnostic) => diagnostic.file)).size;
    process.stderr.write(`${formatDiagnostics(all, { colour })}\n${plural(all.length, "error")} in ${plural(files, "file")}\n`);
  } else if (policies.length === 0) {
    const where = (paths.length > 0 ? paths : [DEFAULT_POLICY_DIR]).join(", ");
    process.stdout.write(`no policy files (${POLICY_EXTENSIONS.join(", ")}) in ${where}: nothing to validate\n`);
  } else {
    process.stdout.write(`${plural(policies.length, "policy", "policies")} valid: ${policies.map((p) => p.file).join(", ")}\n`);
  }
  return all.length > 0 ? 1 : 0;
}

function plural(count: number, one: string, many = `${one}s`): string {
  return `${count} ${count === 1 ? one : many}`;
}
