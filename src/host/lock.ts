import { constants } from "node:fs";
import { mkdir, open, readFile, readlink, stat, unlink, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { execa } from "execa";
import { InterceptError, messageOf } from "../errors.js";
import { tryExclusiveLock } from "../kernel/flock.js";
import { processExists } from "./processes.js";
import { isAgentHolder, lockRecordText, readLockRecord } from "../model/lock-holder.js";

/** Where the per-namespace lock files live: tmpfs, gone at reboot like the pins they guard. */
export const LOCK_DIR = "/run/intercept/locks";

/** One writer per network namespace: held by apply, destroy and the agent while they change it. */
export interface NamespaceLock {
  /**
   * Lets go of the lock. The lock file is removed first, while still held,
   * unless @keepRecord: then it stays, with the holder's record, for as
   * long as the namespace holds pins of ours (orphan collection and the
   * uninstall job read who last held it), and is reused by the next taker.
   * Either way lock files never outnumber the namespaces with pins plus
   * those being worked on.
   */
  release(options?: { keepRecord?: boolean }): Promise<void>;
}

export interface LockOptions {
  /** What holds it, shown to whoever waits: "intercept apply". */
  holder: string;
  /** How long to wait for another holder; 0 fails at once. */
  timeoutMs: number;
  /**
   * Called once when the lock is busy, with who holds it, before waiting or
   * (with a timeout of 0) refusing; throwing refuses at once.
   */
  onWait?: (heldBy: LockHolder) => void;
  /** Gives up waiting when aborted (an agent told to stop): rejects with its reason. */
  signal?: AbortSignal;
  dir?: string;
}

/** Who holds a lock, as it wrote itself into the lock file. */
export interface LockHolder {
  pid: number | undefined;
  holder: string | undefined;
  /** Whether it is an agent (which holds the lock for as long as it runs). */
  agent: boolean;
  /** "pid 4242 (intercept apply)" */
  description: string;
}

/**
 * Takes the exclusive lock of a namespace (by its key, so two names of one
 * namespace share it). The lock is flock(2) on a file we keep open: the
 * kernel releases it when the holder exits, however it exits. Node has no
 * flock: a free lock is taken at once by libc's flock(2) through koffi
 * (src/kernel/flock.ts), with no process, as every take of a fleet's burst
 * is; a busy one is waited for by util-linux's flock(1) on our open file
 * description, passed to it as fd 3 (the kernel wakes it at the release,
 * and a stop cancels it). Either way the lock belongs to our description,
 * which outlives flock(1) for as long as we keep the file open.
 * (Considered: proper-lockfile — a directory and mtime staleness, not
 * released by the kernel; fs-ext — a native addon built at install, and
 * npm here does not run install scripts; koffi carries its binaries.)
 *
 * A holder that leaves no pins removes the file on release, while locked
 * (the classic unlink-race protocol): a taker that opened it before the
 * unlink then holds a lock on a file no longer at the path, so every taker
 * checks, once locked, that the file at the path is still the one it
 * locked, and starts again if not. A holder killed before it could remove
 * its file leaves it for the next taker: the files never outnumber the
 * namespaces with pins plus those in use, and a clean host keeps none.
 */
export async function lockNamespace(namespaceKey: string, options: LockOptions): Promise<NamespaceLock> {
  const dir = options.dir ?? LOCK_DIR;
  const file = lockFile(namespaceKey, dir);
  const deadline = Date.now() + Math.max(0, options.timeoutMs);
  let told = false;
  for (;;) {
    const handle = await openLockFile(dir, file);
    try {
      if (!tryExclusiveLock(handle.fd)) {
        const heldBy = await readHolder(handle);
        if (!told) options.onWait?.(heldBy);
        told = true;
        if (options.timeoutMs <= 0) throw lockHeld(heldBy);
        const left = deadline - Date.now();
        if (left <= 0 || !(await waitForLock(handle, left, options.signal))) {
          throw lockTimedOut(options.timeoutMs, await readHolder(handle));
        }
      }
      if (!(await stillAtPath(handle, file))) {
        await handle.close(); // its holder removed it as we waited: lock the file at the path now
        continue;
      }
      await handle.truncate(0);
      await handle.write(lockRecordText(options.holder, process.pid, new Date(), await ownPidNamespace()), 0);
    } catch (error) {
      await handle.close();
      throw error;
    }
    return { release: (release) => releaseLock(handle, file, release?.keepRecord ?? false) };
  }
}

/** The lock file of the namespace @namespaceKey (there while held, and while a --keep agent's record stays). */
export function lockFile(namespaceKey: string, dir = LOCK_DIR): string {
  return path.join(dir, `${namespaceKey}.lock`);
}

async function openLockFile(dir: string, file: string): Promise<FileHandle> {
  try {
    await makeLockDirectory(dir);
    return await open(file, constants.O_RDWR | constants.O_CREAT, 0o600);
  } catch (error) {
    throw new InterceptError(
      "file-access",
      `cannot open the lock file ${file}: ${(error as NodeJS.ErrnoException).code ?? messageOf(error)}`,
    );
  }
}

/**
 * The lock folder, and its parent if need be. Not mkdir's recursive mode:
 * in a folder removed while still mounted (a bind mount of a deleted
 * directory) it retries forever; here a second ENOENT is an error.
 */
async function makeLockDirectory(dir: string): Promise<void> {
  const made = (error: NodeJS.ErrnoException) => {
    if (error.code !== "EEXIST") throw error;
  };
  try {
    await mkdir(dir, { mode: 0o700 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") return made(error as NodeJS.ErrnoException);
    await mkdir(path.dirname(dir), { recursive: true, mode: 0o700 }).catch(made);
    await mkdir(dir, { mode: 0o700 }).catch(made);
  }
}

/** Whether the file at @file is the one @handle has open (not removed, nor made again, since it was opened). */
async function stillAtPath(handle: FileHandle, file: string): Promise<boolean> {
  const [ours, there] = await Promise.all([
    handle.stat(),
    stat(file).catch((error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT") return undefined; // removed by the holder we waited for
      throw error;
    }),
  ]);
  return there !== undefined && there.ino === ours.ino && there.dev === ours.dev;
}

/** Removes the lock file while still holding it (unless asked to keep it), then closes it, which unlocks. */
async function releaseLock(handle: FileHandle, file: string, keepRecord: boolean): Promise<void> {
  try {
    if (!keepRecord) await unlink(file);
  } catch (error) {
    // Already gone: only a taker that locked it after us could remove it, and none can while we hold it,
    // so someone removed it by hand; closing still unlocks. Anything else is reported once closed.
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") {
      await handle.close();
      throw new InterceptError(
        "file-access",
        `cannot remove the lock file ${file}: ${(error as NodeJS.ErrnoException).code ?? messageOf(error)}`,
      );
    }
  }
  await handle.close();
}

/** flock(1) on our open file, waiting: true once locked, false when still busy after @timeoutMs. */
async function waitForLock(handle: FileHandle, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  const wait = ["--wait", String(timeoutMs / 1000)];
  // execa's types name fds 3–9 only; at run time any fd of ours is passed on to spawn as it is.
  const ourFile = handle.fd as 3;
  const result = await execa("flock", ["--exclusive", ...wait, "--conflict-exit-code", "75", "3"], {
    reject: false,
    stdio: ["ignore", "ignore", "pipe", ourFile],
    ...(signal && { cancelSignal: signal }),
  });
  signal?.throwIfAborted();
  if (result.exitCode === 0) return true;
  if (result.exitCode === 75) return false; // still busy when --wait ran out
  if ((result as { code?: string }).code === "ENOENT")
    throw new InterceptError("tool-missing", "flock not found: install util-linux");
  throw new InterceptError(
    "command-failed",
    `flock: ${String(result.stderr).split("\n")[0] || `exit ${result.exitCode}`}`,
  );
}

/** A lock refused at once (a timeout of 0): every Host says it in these words. */
export function lockHeld(heldBy: LockHolder): InterceptError {
  return new InterceptError("lock-held", `the network namespace is locked by ${heldBy.description}`);
}

/** A wait for a lock that ran out. */
export function lockTimedOut(timeoutMs: number, heldBy: LockHolder): InterceptError {
  return new InterceptError(
    "lock-timeout",
    `gave up after ${formatSeconds(timeoutMs)} waiting for the lock held by ${heldBy.description} (--lock-timeout)`,
  );
}

/** Who holds a lock, from its record (none: it has the lock, and has not written its name yet). */
export function lockHolderOf(written: { pid: number | undefined; holder: string | undefined } | undefined): LockHolder {
  if (!written) return { pid: undefined, holder: undefined, agent: false, description: "another process" };
  const { pid, holder } = written;
  return { pid, holder, agent: isAgentHolder(holder), description: `pid ${pid ?? "?"} (${holder ?? "unknown"})` };
}

/**
 * Who holds the lock. The record in the file says who wrote it last, which
 * is not always who holds the lock now: a taker writes its record only once
 * it has the lock, so until then the file names the one before it, which
 * may have exited or moved on. Where the record's pid means what it means
 * here (written in this pid namespace), the kernel settles it: a live
 * taker that /proc/locks names wins over the record, and a record whose
 * writer has exited names no one. (/proc/locks names a process gone when
 * flock(1) took the lock for its caller: then the record is the holder's.)
 */
async function readHolder(handle: FileHandle): Promise<LockHolder> {
  const { buffer, bytesRead } = await handle.read(Buffer.alloc(512), 0, 512, 0);
  const written = readLockRecord(buffer.subarray(0, bytesRead).toString("utf8"));
  if (written?.pid === undefined || written.pidNamespace !== (await ownPidNamespace())) return lockHolderOf(written);
  const taker = await kernelLockTaker(handle);
  if (taker !== undefined && taker !== written.pid && processExists(taker)) {
    return { pid: taker, holder: undefined, agent: false, description: `pid ${taker} (${await commandOf(taker)})` };
  }
  return processExists(written.pid) ? lockHolderOf(written) : lockHolderOf(undefined);
}

let pidNamespace: Promise<string | undefined> | undefined;

/** This process's pid namespace, as /proc/self/ns/pid names it; undefined without procfs. */
function ownPidNamespace(): Promise<string | undefined> {
  // Without procfs no pid can be checked anyway: records then carry no namespace and are taken as written.
  pidNamespace ??= readlink("/proc/self/ns/pid").catch(whenAbsent(undefined));
  return pidNamespace;
}

/** The process that took the flock(2) lock on @handle's file, as /proc/locks names it; undefined if none. */
async function kernelLockTaker(handle: FileHandle): Promise<number | undefined> {
  const [{ dev, ino }, locks] = await Promise.all([
    handle.stat(),
    readFile("/proc/locks", "utf8").catch(whenAbsent("")), // no procfs: the record alone says who holds it
  ]);
  return flockTaker(locks, { major: deviceMajor(dev), minor: deviceMinor(dev), inode: ino });
}

/**
 * In /proc/locks' text, the pid that holds a FLOCK on the file at
 * @major:@minor:@inode ("1: FLOCK  ADVISORY  WRITE 4242 00:1a:1337 0 EOF";
 * lines with "->" are takers still waiting, not holders).
 */
export function flockTaker(locks: string, file: { major: number; minor: number; inode: number }): number | undefined {
  for (const line of locks.split("\n")) {
    const fields = line.trim().split(/\s+/);
    if (fields[1] !== "FLOCK") continue;
    const [major, minor, inode] = (fields[5] ?? "").split(":");
    if (Number.parseInt(major ?? "", 16) !== file.major || Number.parseInt(minor ?? "", 16) !== file.minor) continue;
    if (Number(inode) === file.inode) return Number(fields[4]);
  }
  return undefined;
}

/** glibc's encoding of st_dev (gnu_dev_major and gnu_dev_minor), within the numbers Node's stat gives exactly. */
function deviceMajor(dev: number): number {
  return Math.floor(dev / 256) & 0xfff;
}

function deviceMinor(dev: number): number {
  return (dev & 0xff) | (Math.floor(dev / 4096) & 0xfff00);
}

/** What @pid runs, for messages: its command line, cut to 64 characters. */
async function commandOf(pid: number): Promise<string> {
  // Gone once the process has exited (since /proc/locks named it): the message says so, the lock goes on.
  const line = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(whenAbsent(""));
  const command = line.replaceAll("\0", " ").trim();
  return command ? command.slice(0, 64) : "a process that has exited";
}

/**
 * A catch that answers @value when the file read is not there (no procfs,
 * or a process that exited: ENOENT, ESRCH) and lets anything else surface.
 */
function whenAbsent<T>(value: T): (error: NodeJS.ErrnoException) => T {
  return (error) => {
    if (error.code === "ENOENT" || error.code === "ESRCH") return value;
    throw error;
  };
}

function formatSeconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))} s`;
}
