import { closeSync, constants as fsConstants, openSync, readdirSync } from "node:fs";
import { constants } from "node:os";
import path from "node:path";
import { InterceptError } from "../errors.js";
import { NETNS_DIR } from "../model/namespace.js";
import { failure, RouteSocket } from "./netlink.js";

export interface Link {
  ifindex: number;
  name: string;
  loopback: boolean;
  /** Its type as `ip -j link` names it (link_type): "ether", "loopback", "none" (tunnels), … */
  linkType: string;
}

/**
 * Gives each namespace of @names an id in this namespace (what `ip netns
 * set NAME auto` does), so a netlink socket here that listens to all ids
 * receives their link events; then returns the id of every namespace named
 * in @dir (name → id, as `ip netns list` shows them; two names of one
 * namespace share it). No process: one rtnetlink socket of this process
 * (./netlink.ts), a request per namespace file. A name whose namespace is
 * gone (no file, or a file with no namespace mounted on it any more) is
 * simply absent from the answer, as is one that has no id here.
 */
export async function numberNamespaces(names: readonly string[], dir = NETNS_DIR): Promise<Map<string, number>> {
  const socket = RouteSocket.open();
  try {
    for (const name of names)
      withNamespaceFile(path.join(dir, name), (fd) => {
        const errno = socket.assignNsid(fd);
        // EEXIST: it had an id already ("Peer netns already has a nsid assigned"); EINVAL: not a namespace (any more).
        if (errno !== 0 && errno !== constants.errno.EEXIST && errno !== constants.errno.EINVAL)
          throw failure(`ip netns set ${name} auto (rtnetlink RTM_NEWNSID)`, errno);
      });
    const ids = new Map<string, number>();
    // As `ip netns list`: a file that cannot be opened, or that the kernel refuses (-EINVAL: no
    // namespace mounted on it, as a runtime's file before its mount), or a namespace with no id
    // here (NETNSA_NSID_NOT_ASSIGNED) is listed without an id, so absent from the answer.
    for (const name of namespaceFiles(dir))
      withNamespaceFile(
        path.join(dir, name),
        (fd) => {
          const id = socket.nsid(fd);
          if (id >= 0) ids.set(name, id);
        },
        { skipUnopenable: true },
      );
    return ids;
  } finally {
    socket.close();
  }
}

/** The names in the namespace directory; none if it was never made. */
function namespaceFiles(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw new InterceptError("file-access", `cannot list ${dir}: ${(error as Error).message}`);
  }
}

/**
 * Runs @use with a descriptor of the namespace file @file (read-only,
 * close-on-exec, non-blocking: a stray FIFO never blocks the agent), then
 * closes it. A file that is gone is skipped, as `ip` skips it; so is any
 * that cannot be opened, with @skipUnopenable.
 */
function withNamespaceFile(file: string, use: (fd: number) => void, { skipUnopenable = false } = {}): void {
  let fd: number;
  try {
    fd = openSync(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (error) {
    if (skipUnopenable || (error as NodeJS.ErrnoException).code === "ENOENT") return;
    throw new InterceptError("file-access", `cannot open ${file}: ${(error as Error).message}`);
  }
  try {
    use(fd);
  } finally {
    closeSync(fd);
  }
}
