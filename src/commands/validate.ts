import { formatDiagnostics, reportableDiagnostics } from "../diagnostics.js";
import { DEFAULT_POLICY_DIR, POLICY_EXTENSIONS } from "../load/index.js";
import { outputHeader } from "../model/output-format.js";
// Not through reconcile/desired.ts: validate needs neither the compiler's templates nor clang.
import { loadAndValidate } from "../reconcile/policy-worker/client.js";
import { printJson } from "./output.js";
import { counted } from "./words.js";

/**
 * `intercept validate [PATH…] [--json]`: every problem of every file,
 * sorted, exit 1 if any. `--json` prints a document of kind "validate"
 * (schemas/validate-output.schema.json): whether all is valid, the policy
 * files read, and the diagnostics (src/diagnostics.ts). Paths holding no
 * policy file at all are not an error (an empty folder is a valid, empty
 * set of policies; `apply` decides what to do with one), but are said so.
 */
export async function validateCommand(paths: string[], options: { json: boolean; colour?: boolean }): Promise<number> {
  const loaded = await loadAndValidate(paths);
  const { policies, diagnostics } = loaded.validation;
  const all = [...loaded.diagnostics, ...diagnostics];
  if (options.json) {
    const files = [
      ...new Set([...loaded.policies.map((policy) => policy.file), ...all.map((diagnostic) => diagnostic.file)]),
    ].sort();
    printJson({ ...outputHeader("validate"), valid: all.length === 0, files, diagnostics: reportableDiagnostics(all) });
  } else if (all.length > 0) {
    const colour = options.colour ?? (Boolean(process.stderr.isTTY) && !process.env.NO_COLOR);
    const files = new Set(all.map((diagnostic) => diagnostic.file)).size;
    process.stderr.write(
      `${formatDiagnostics(all, { colour })}\n${counted(all.length, "error")} in ${counted(files, "file")}\n`,
    );
  } else if (policies.length === 0) {
    const where = (paths.length > 0 ? paths : [DEFAULT_POLICY_DIR]).join(", ");
    process.stdout.write(`no policy files (${POLICY_EXTENSIONS.join(", ")}) in ${where}: nothing to validate\n`);
  } else {
    process.stdout.write(
      `${counted(policies.length, "policy", "policies")} valid: ${policies.map((p) => p.file).join(", ")}\n`,
    );
  }
  return all.length > 0 ? 1 : 0;
}
