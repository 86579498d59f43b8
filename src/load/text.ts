import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from "node:fs";
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
export async function readPolicyText(file: string, openPath = file): Promise<TextRead> {
  let handle: FileHandle;
  try {
    handle = await open(openPath, OPEN_FLAGS);
  } catch (error) {
    return { error: openError(file, error) };
  }
  try {
    const info = await handle.stat();
    const refused = refusal(file, info);
    if (refused) return { error: refused };
    const bytes = new Bytes(info.size);
    while (bytes.room()) {
      const { bytesRead } = await handle.read(bytes.buffer, bytes.length, bytes.buffer.length - bytes.length);
      if (!bytes.add(bytesRead)) break;
    }
    return bytes.text(file);
  } catch (error) {
    return { error: unreadable(file, error) };
  } finally {
    await handle.close();
  }
}

/**
 * readPolicyText with blocking calls, for the policy worker's thread (which
 * nothing else waits on, and which a deadline stops): a file read takes a
 * few system calls, where each await of readPolicyText is a round trip to
 * libuv's thread pool. Its buffer is kept for the next file (each is decoded
 * before it returns): allocating one costs more than reading a small file.
 */
export function readPolicyTextSync(file: string, openPath = file): TextRead {
  let fd: number;
  try {
    fd = openSync(openPath, OPEN_FLAGS);
  } catch (error) {
    return { error: openError(file, error) };
  }
  try {
    const info = fstatSync(fd);
    const refused = refusal(file, info);
    if (refused) return { error: refused };
    const bytes = new Bytes(info.size, syncBuffer);
    while (bytes.room()) {
      const offered = bytes.buffer.length - bytes.length;
      const read = readSync(fd, bytes.buffer, bytes.length, offered, null);
      if (!bytes.add(read) || bytes.isWhole(read, offered)) break;
    }
    syncBuffer = bytes.buffer;
    return bytes.text(file);
  } catch (error) {
    return { error: unreadable(file, error) };
  } finally {
    closeSync(fd);
  }
}

export type TextRead = { source: SourceText } | { error: Diagnostic };

const OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK;

/** readPolicyTextSync's buffer, as large as the largest file it has read (at most MAX_POLICY_BYTES + 1). */
let syncBuffer: Buffer | undefined;

/** Decodes whole files (no stream state is kept between calls), so one serves them all. */
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Why a file with @info is not read at all: not a regular file, or larger than a policy may be. */
function refusal(file: string, info: Stats): Diagnostic | undefined {
  if (!info.isFile()) return diagnosticAt("load/not-a-file", startOf(file), "not a policy: not a regular file");
  if (info.size > MAX_POLICY_BYTES) return tooLarge(file, info.size);
  return undefined;
}

function unreadable(file: string, error: unknown): Diagnostic {
  return diagnosticAt("load/unreadable", startOf(file), `cannot read policy file: ${reason(error)}`);
}

/** A file's bytes as they are read, never more than MAX_POLICY_BYTES + 1 of them. */
class Bytes {
  buffer: Buffer;
  length = 0;
  private ended = false;

  /**
   * Sized by what the file claims, grown (up to the limit) if it holds more:
   * a repository of many small files does not allocate a megabyte for each.
   * @reusable: a buffer from an earlier read, used when it is large enough
   * (only the bytes read into it are decoded).
   */
  constructor(
    private readonly claimed: number,
    reusable?: Buffer,
  ) {
    const size = Math.min(MAX_POLICY_BYTES + 1, Math.max(claimed + 1, 4096));
    this.buffer = reusable && reusable.length >= size ? reusable : Buffer.allocUnsafe(size);
  }

  /** Whether there is room for more (grown if needed): false once the end is reached or the limit crossed. */
  room(): boolean {
    if (this.ended) return false;
    if (this.length < this.buffer.length) return true;
    if (this.buffer.length > MAX_POLICY_BYTES) return false;
    const grown = Buffer.allocUnsafe(Math.min(MAX_POLICY_BYTES + 1, this.buffer.length * 2));
    this.buffer.copy(grown, 0, 0, this.length);
    this.buffer = grown;
    return true;
  }

  /** Counts @read bytes more; false at the end of the file. */
  add(read: number): boolean {
    if (read === 0) this.ended = true;
    this.length += read;
    return read > 0;
  }

  /**
   * Whether the file is read whole after a read of @read bytes of the
   * @offered: it came short, and what has been read is the size the file
   * claimed. A regular file's read comes short only at its end, so the read
   * that would return nothing (a system call per file, and a repository may
   * hold many) is left out. A file whose size says nothing (procfs claims
   * 0), or that grew, is read on until a read returns nothing.
   */
  isWhole(read: number, offered: number): boolean {
    return read < offered && this.claimed > 0 && this.length === this.claimed;
  }

  text(file: string): TextRead {
    if (this.length > MAX_POLICY_BYTES) return { error: tooLarge(file) };
    return decode(file, this.buffer.subarray(0, this.length));
  }
}

function decode(file: string, bytes: Buffer): TextRead {
  try {
    return { source: new SourceText(file, utf8.decode(bytes)) };
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
