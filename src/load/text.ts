import { constants } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { diagnosticAt, startOf, type Diagnostic } from "../diagnostics.js";
import { MAX_POLICY_BYTES } from "./limits.js";
import { SourceText } from "./source-map.js";

/**
 * Reads a policy file as UTF-8, or says precisely why it cannot. @file is
 * the name diagnostics use; @openPath what is opened (a symlink's checked
 * target). Opened non-blocking and checked on the open handle, so a FIFO or
 * device swapped in cannot hang the read, and never more than
 * MAX_POLICY_BYTES + 1 bytes are read, whatever the file claims its size is.
 */
export async function readPolicyText(
  file: string,
  openPath = file,
): Promise<{ source: SourceText } | { error: Diagnostic }> {
  let handle: FileHandle;
  try {
    handle = await open(openPath, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    return { error: openError(file, error) };
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) {
      return { error: diagnosticAt("load/not-a-file", startOf(file), "not a policy: not a regular file") };
    }
    if (info.size > MAX_POLICY_BYTES) return { error: tooLarge(file, info.size) };
    // Sized by what the file claims, grown (up to the limit) if it holds more: a repository of
    // many small files does not allocate a megabyte for each.
    let buffer = Buffer.alloc(Math.min(MAX_POLICY_BYTES + 1, Math.max(info.size + 1, 4096)));
    let length = 0;
    for (;;) {
      if (length === buffer.length) {
        if (buffer.length > MAX_POLICY_BYTES) break;
        const grown = Buffer.alloc(Math.min(MAX_POLICY_BYTES + 1, buffer.length * 2));
        buffer.copy(grown, 0, 0, length);
        buffer = grown;
      }
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    if (length > MAX_POLICY_BYTES) return { error: tooLarge(file) };
    return decode(file, buffer.subarray(0, length));
  } catch (error) {
    return { error: diagnosticAt("load/unreadable", startOf(file), `cannot read policy file: ${reason(error)}`) };
  } finally {
    await handle.close();
  }
}

function decode(file: string, bytes: Buffer): { source: SourceText } | { error: Diagnostic } {
  try {
    return { source: new SourceText(file, new TextDecoder("utf-8", { fatal: true }).decode(bytes)) };
  } catch {
    // TextDecoder's only failure with fatal: true is invalid UTF-8; where it is, it does not say.
    const lossy = new TextDecoder("utf-8").decode(bytes);
    const offset = lossy.indexOf("\uFFFD");
    const location = new SourceText(file, lossy).locationOf(offset, offset + 1);
    return { error: diagnosticAt("load/not-utf8", location, "file is not valid UTF-8") };
  }
}

function tooLarge(file: string, size?: number): Diagnostic {
  const actual = size === undefined ? "larger than that" : `${size} bytes`;
  return diagnosticAt(
    "load/too-large",
    startOf(file),
    `file is ${actual}; a policy may be at most ${MAX_POLICY_BYTES} bytes`,
  );
}

function openError(file: string, error: unknown): Diagnostic {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return diagnosticAt("load/not-found", startOf(file), "no such policy file or folder");
  return diagnosticAt("load/unreadable", startOf(file), `cannot read policy file: ${reason(error)}`);
}

/** "permission denied (EACCES)": the errno name a user can search for, and what it means. */
export function reason(error: unknown): string {
  const { code } = error as NodeJS.ErrnoException;
  const meaning: Record<string, string> = {
    EACCES: "permission denied",
    EPERM: "operation not permitted",
    ELOOP: "too many levels of symbolic links",
    ENOTDIR: "a part of the path is not a folder",
    EIO: "input/output error",
  };
  if (code && meaning[code]) return `${meaning[code]} (${code})`;
  return code ?? (error instanceof Error ? error.message : String(error));
}
