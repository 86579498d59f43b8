import { execa } from "execa";
import { CommandError, InterceptError } from "../errors.js";
import { runJson } from "./exec.js";
import { type NetworkNamespace } from "../model/namespace.js";

export interface Link {
  ifindex: number;
  name: string;
  loopback: boolean;
  /** `ip -j link`'s link_type: "ether", "loopback", "none" (tunnels), … */
  linkType: string;
}

/** One link as `ip -j link show` prints it. */
export interface IpLink {
  ifindex: number;
  ifname: string;
  flags?: string[];
  link_type?: string;
}

/** Every link of the namespace, as `ip -j link show` reports it. */
export async function listLinks(netns: NetworkNamespace): Promise<Link[]> {
  return toLinks(await runJson<IpLink[]>("ip", ["-j", "link", "show"], netns));
}

/** Links as `ip -j link show` printed them. */
export function toLinks(links: IpLink[]): Link[] {
  return links.map((link) => ({
    ifindex: link.ifindex,
    name: link.ifname,
    loopback: link.link_type === "loopback" || (link.flags ?? []).includes("LOOPBACK"),
    linkType: link.link_type ?? "unknown",
  }));
}

/** What `ip netns set` says of a namespace that has an id already: no failure for us. */
const ALREADY_NUMBERED = "Peer netns already has a nsid assigned";

/**
 * Gives each namespace of @names an id in this namespace (`ip netns set
 * NAME auto`), so a netlink socket here that listens to all ids receives
 * their link events; then returns every named namespace's id (name → id;
 * two names of one namespace share it). One `ip -batch` process for all of
 * them. A name whose namespace is gone is simply absent from the answer.
 */
export async function numberNamespaces(names: readonly string[]): Promise<Map<string, number>> {
  const input = [...names.map((name) => `netns set ${name} auto`), "netns list", ""].join("\n");
  const result = await execa("ip", ["-j", "-force", "-batch", "-"], { input, reject: false, extendEnv: false });
  if ((result as { code?: string }).code === "ENOENT")
    throw new InterceptError("tool-missing", "ip not found: install iproute2");
  const listed = String(result.stdout).trim();
  const unexpected = String(result.stderr)
    .split("\n")
    .filter((line) => line.trim() && !line.includes(ALREADY_NUMBERED) && !/^Command failed/.test(line))
    // A namespace removed meanwhile cannot be opened: absent from the answer, which the caller checks.
    .filter((line) => !/Cannot open network namespace/.test(line));
  if (!listed.startsWith("[")) throw new CommandError("ip netns set … auto; ip netns list", unexpected.join("\n"));
  const ids = new Map<string, number>();
  for (const entry of JSON.parse(listed) as { name?: string; id?: number }[])
    if (entry.name !== undefined && entry.id !== undefined) ids.set(entry.name, entry.id);
  return ids;
}
