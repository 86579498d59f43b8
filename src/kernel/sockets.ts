import { run } from "./exec.js";
import { type NetworkNamespace } from "../model/namespace.js";

/** A socket listening in a namespace: where a proxy would be. */
export interface Listener {
  protocol: "tcp";
  /** As the kernel reports it: "0.0.0.0", "[::]", "127.0.0.1%lo", "*". */
  address: string;
  port: number;
  /** Its cgroup, relative to the cgroup2 mount ("" for the root); undefined when not known. */
  cgroup: string | undefined;
}

/**
 * The TCP sockets listening in @netns, with the cgroup of each: one `ss`
 * (iproute2, already needed for tc and ip), run in the namespace. `-e`
 * prints a socket's cgroup as its path below the cgroup2 mount
 * (`cgroup:/app.slice`); a kernel or ss without it gives undefined.
 */
export async function listListeners(netns: NetworkNamespace): Promise<Listener[]> {
  return parseListeners(await run("ss", ["-H", "--listening", "--tcp", "--numeric", "--extended"], netns));
}

/**
 * `ss -H -l -t -n -e` lines: `LISTEN 0 128 0.0.0.0:9000 0.0.0.0:* ino:1088 sk:570 cgroup:/app.slice <->`
 * (the state first; with -u too, the netid before it). Lines that do not
 * parse are not listeners we can reason about, and are left out.
 */
export function parseListeners(output: string): Listener[] {
  const listeners: Listener[] = [];
  for (const line of output.split("\n")) {
    const fields = line.trim().split(/\s+/);
    const state = fields.indexOf("LISTEN");
    const local = fields[state + 3];
    if (state === -1 || local === undefined) continue;
    const port = Number(local.slice(local.lastIndexOf(":") + 1));
    if (!Number.isInteger(port) || port < 1 || port > 65535) continue;
    const cgroup = fields.find((field) => field.startsWith("cgroup:"))?.slice("cgroup:".length);
    listeners.push({
      protocol: "tcp",
      address: local.slice(0, local.lastIndexOf(":")),
      port,
      cgroup: cgroup === undefined ? undefined : cgroup.replace(/^\/+/, ""),
    });
  }
  return listeners;
}
