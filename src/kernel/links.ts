import { runJson, type NetworkNamespace } from "./exec.js";

export interface Link {
  ifindex: number;
  name: string;
  loopback: boolean;
  /** `ip -j link`'s link_type: "ether", "loopback", "none" (tunnels), … */
  linkType: string;
}

interface IpLink {
  ifindex: number;
  ifname: string;
  flags?: string[];
  link_type?: string;
}

/** Every link of the namespace, as `ip -j link show` reports it. */
export async function listLinks(netns: NetworkNamespace): Promise<Link[]> {
  const links = await runJson<IpLink[]>("ip", ["-j", "link", "show"], netns);
  return links.map((link) => ({
    ifindex: link.ifindex,
    name: link.ifname,
    loopback: link.link_type === "loopback" || (link.flags ?? []).includes("LOOPBACK"),
    linkType: link.link_type ?? "unknown",
  }));
}
