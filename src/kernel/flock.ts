import { constants } from "node:os";
import { InterceptError } from "../errors.js";
import { bindLibc } from "./libc.js";

/** flock(2)'s operations (<sys/file.h>). */
const LOCK_EX = 2;
const LOCK_NB = 4;

type Flock = (fd: number, operation: number) => number;

let flockCall: { flock: Flock; errno: () => number } | undefined;

/**
 * libc's flock(2), bound once through koffi (a C FFI whose npm package
 * carries its prebuilt binaries: nothing is compiled at install). Node has
 * no flock; this is what lets a lock that is free be taken without a
 * process (flock(1) costs a fork of the agent, ~10 ms of its CPU, per take).
 */
function libcFlock(): { flock: Flock; errno: () => number } {
  if (flockCall) return flockCall;
  const { koffi, lib } = bindLibc("flock(2)");
  flockCall = { flock: lib.func("int flock(int fd, int operation)") as Flock, errno: () => koffi.errno() };
  return flockCall;
}

/**
 * Takes flock(2)'s exclusive lock on @fd's open file description if it is
 * free, without waiting: true once held, false when someone else holds it.
 * The lock belongs to the description, so it lasts as long as the file
 * stays open, and the kernel lets it go when the process dies.
 */
export function tryExclusiveLock(fd: number): boolean {
  const { flock, errno } = libcFlock();
  for (;;) {
    if (flock(fd, LOCK_EX | LOCK_NB) === 0) return true;
    const code = errno();
    if (code === constants.errno.EWOULDBLOCK) return false;
    if (code === constants.errno.EINTR) continue; // a signal arrived first: ask again
    throw new InterceptError("file-access", `flock(2) failed: errno ${code}`);
  }
}
