import { reportableDiagnostics } from "../diagnostics.js";
import { InterceptError, messageOf, PolicyError } from "../errors.js";
import { outputHeader } from "../model/output-format.js";

/** One JSON document on stdout (or @out), indented as every --json output is. */
export function printJson(document: object, out: { write(text: string): unknown } = process.stdout): void {
  out.write(`${JSON.stringify(document, null, 2)}\n`);
}

/**
 * An error under --json (schemas/error-output.schema.json): its stable code
 * and message; invalid policies add their diagnostics, as validate prints them.
 * A bug is "internal", with its first line only, as on stderr.
 */
export function errorDocument(error: unknown) {
  const code = error instanceof InterceptError ? error.code : "internal";
  const message = error instanceof InterceptError ? error.message : messageOf(error).split("\n")[0];
  return {
    ...outputHeader("error"),
    error: { code, message },
    ...(error instanceof PolicyError && { diagnostics: reportableDiagnostics(error.diagnostics) }),
  };
}
