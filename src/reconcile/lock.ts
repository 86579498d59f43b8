import { constants } from "node:fs";
import { mkdir, open, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { execa } from "execa";
import { InterceptError, messageOf } from "../errors.js";
import { lockRecordText, readLockRecord } from "../model/lock-holder.js";

/** Where the per-namespace lock files live: tmpfs, gone at reboot like the pins they guard. */
export const LOCK_DIR = "/run/intercept/locks";

/** One writer per network namespace: held by apply, destroy and the agent while they change it. */
export interface NamespaceLock {
  release(): Promise<void>;
}

export interface LockOptions {
  /** What holds it, shown to whoever waits: "intercept apply". */
  holder: string;
  /** How long to wait for another holder; 0 fails at once. */
  timeoutMs: number;
  /** Called once when the lock is busy, before waiting, with who holds it; throwing refuses to wait. */
  onWait?: (heldBy: LockHolder) => void;
  dir?: string;
}

/** Who holds a lock, as it wrote itself into the lock file. */
export interface LockHolder {
  pid: number | undefined;
  holder: string | undefined;
  /** "pid 4242 (intercept apply)" */
  description: string;
}

/**
 * Takes the exclusive lock of a namespace (by its key, so two names of one
 * namespace share it). The lock is flock(2) on a file we keep open: the
 * kernel releases it when the holder exits, however it exits — no stale
 * lock files. Node has no flock, so util-linux's flock(1) takes it on our
 * open file description, passed to it as fd 3: the lock belongs to that
 * description, which outlives flock(1) for as long as we keep the file
 * open. (Considered: proper-lockfile — a directory and mtime staleness,
 * not released by the kernel; fs-ext — a native addon, and npm here does
 * not run install scripts.)
 */
export async function lockNamespace(namespaceKey: string, options: LockOptions): Promise<NamespaceLock> {
  const dir = options.dir ?? LOCK_DIR;
  const file = lockFile(namespaceKey, dir);
  let handle: FileHandle;
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    handle = await open(file, constants.O_RDWR | constants.O_CREAT, 0o600);
  } catch (error) {
    throw new InterceptError("file-access", `cannot open the lock file ${file}: ${(error as NodeJS.ErrnoException).code ?? messageOf(error)}`);
  }
  try {
    if (!(await flock(handle, 0))) {
      const heldBy = await readHolder(handle);
      options.onWait?.(heldBy);
      if (options.timeoutMs <= 0) throw new InterceptError("lock-held", `the network namespace is locked by ${heldBy.description}`);
      if (!(await flock(handle, options.timeoutMs))) {
        throw new InterceptError("lock-timeout", `gave up after ${formatSeconds(options.timeoutMs)} waiting for the lock held by ${(await readHolder(handle)).description} (--lock-timeout)`);
      }
    }
    await handle.truncate(0);
    await handle.write(lockRecordText(options.holder), 0);
  } catch (error) {
    await handle.close();
    throw error;
  }
  return { release: () => handle.close() };
}

/** The lock file of the namespace @namespaceKey (kept between runs: holding it is what locks). */
export function lockFile(namespaceKey: string, dir = LOCK_DIR): string {
  return path.join(dir, `${namespaceKey}.lock`);
}

/** flock(1) on our open file: true once locked, false when still busy after @timeoutMs. */
async function flock(handle: FileHandle, timeoutMs: number): Promise<boolean> {
  const wait = timeoutMs > 0 ? ["--wait", String(timeoutMs / 1000)] : ["--nonblock"];
  // execa's types name fds 3–9 only; at run time any fd of ours is passed on to spawn as it is.
  const ourFile = handle.fd as 3;
  const result = await execa("flock", ["--exclusive", ...wait, "--conflict-exit-code", "75", "3"], {
    reject: false, stdio: ["ignore", "ignore", "pipe", ourFile],
  });
  if (result.exitCode === 0) return true;
  if (result.exitCode === 75) return false; // busy (--nonblock), or still busy when --wait ran out
  if ((result as { code?: string }).code === "ENOENT") throw new InterceptError("tool-missing", "flock not found: install util-linux");
  throw new InterceptError("command-failed", `flock: ${String(result.stderr).split("\n")[0] || `exit ${result.exitCode}`}`);
}

/** Who holds the lock, from what the holder wrote into the lock file. */
async function readHolder(handle: FileHandle): Promise<LockHolder> {
  const { buffer, bytesRead } = await handle.read(Buffer.alloc(512), 0, 512, 0);
  const written = readLockRecord(buffer.subarray(0, bytesRead).toString("utf8"));
  if (!written) return { pid: undefined, holder: undefined, description: "another process" }; // it has the lock, and has not written its name yet
  const { pid, holder } = written;
  return { pid, holder, description: `pid ${pid ?? "?"} (${holder ?? "unknown"})` };
}

function formatSeconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))} s`;
}
