import { readFile, stat } from "node:fs/promises";
import type { Diagnostic } from "../diagnostics.js";

/** Policies are small; anything larger is a mistake, not a policy. */
export const MAX_POLICY_BYTES = 1024 * 1024;

/** Reads a policy file as UTF-8, or says precisely why it cannot. */
export async function readPolicyText(file: string): Promise<{ text: string } | { error: Diagnostic }> {
  const at = (message: string, line = 1, column = 1) => ({ error: { file, line, column, message } });
  let size: number;
  try {
    const info = await stat(file);
    if (!info.isFile()) return at("not a regular file");
    size = info.size;
  } catch (error) {
    return at(`cannot read policy file: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
  if (size > MAX_POLICY_BYTES) {
    return at(`file is ${size} bytes; a policy may be at most ${MAX_POLICY_BYTES} bytes`);
  }
  const bytes = await readFile(file);
  try {
    return { text: new TextDecoder("utf-8", { fatal: true }).decode(bytes) };
  } catch {
    const { line, column } = firstInvalidUtf8(bytes);
    return at("file is not valid UTF-8", line, column);
  }
}

/** Position of the first byte sequence that is not UTF-8. */
function firstInvalidUtf8(bytes: Buffer): { line: number; column: number } {
  const lossy = new TextDecoder("utf-8").decode(bytes);
  const before = lossy.slice(0, Math.max(0, lossy.indexOf("\uFFFD")));
  const lines = before.split("\n");
  return { line: lines.length, column: lines[lines.length - 1]!.length + 1 };
}
