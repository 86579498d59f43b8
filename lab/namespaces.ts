/**
 * Many network namespaces at once, as a node's CNI plugin makes them for
 * pods: each named `<prefix><NN>`, with a veth pair (`a`, `b`) inside it,
 * for the agent's --netns-match tests and benchmark. Nothing is touched in
 * the root namespace; remove() deletes what create() made, pins and lock records included,
 * even after a failure.
 */
import { randomBytes } from "node:crypto";
import { rm, stat } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { execa } from "execa";
import { lockFile } from "../src/host/lock.js";
import { namespaceKeyOf, NETNS_DIR } from "../src/model/namespace.js";

export const LINKS = ["a", "b"] as const;

export class NamespaceSet {
  /** Every name this set made (or tried to), for removal. */
  readonly made = new Set<string>();

  /** @prefix: unique per run (`fl1a2b3c-`); names are `${prefix}00`, `${prefix}01`, … */
  constructor(readonly prefix: string) {}

  static unique(label: string): NamespaceSet {
    return new NamespaceSet(`${label}${randomBytes(3).toString("hex")}-`);
  }

  name(index: number): string {
    return `${this.prefix}${String(index).padStart(2, "0")}`;
  }

  /**
   * Creates namespace @name with its veth pair, in one `ip -batch` (as a CNI
   * plugin does it: the namespace, then its link); resolves with when it
   * was done (performance.now()).
   */
  async create(name: string): Promise<number> {
    this.made.add(name);
    await execa("ip", ["-batch", "-"], {
      input: `netns add ${name}\nlink add name ${LINKS[0]} netns ${name} type veth peer name ${LINKS[1]} netns ${name}\n`,
    });
    return performance.now();
  }

  /** Creates @count namespaces one after the other, as fast as `ip` goes; resolves with their names and when the last was done. */
  async burst(count: number, first = 0): Promise<{ names: string[]; lastCreated: number }> {
    const names = Array.from({ length: count }, (_, i) => this.name(first + i));
    let lastCreated = 0;
    for (const name of names) lastCreated = await this.create(name);
    return { names, lastCreated };
  }

  /** The pin directory name (`ns<inode>`) of namespace @name, while it exists. */
  async key(name: string): Promise<string> {
    return namespaceKeyOf((await stat(path.join(NETNS_DIR, name))).ino);
  }

  /** Whether intercept's ingress filter is on @link in namespace @name (nsenter: the pins stay visible). */
  async attached(name: string, link: string): Promise<boolean> {
    const shown = await execa(
      "nsenter",
      [`--net=/var/run/netns/${name}`, "tc", "filter", "show", "dev", link, "ingress"],
      { reject: false },
    );
    return String(shown.stdout).includes("intercept_ingre");
  }

  /** The id of the program intercept's ingress filter on @link in namespace @name runs (`bpftool net`); undefined when none. */
  async ingressProgram(name: string, link: string): Promise<number | undefined> {
    const shown = await execa("nsenter", [`--net=/var/run/netns/${name}`, "bpftool", "-j", "net", "show", "dev", link]);
    const [net] = JSON.parse(shown.stdout) as { tc?: { kind: string; name: string; id: number }[] }[];
    return net?.tc?.find((filter) => filter.kind === "clsact/ingress" && filter.name.startsWith("intercept_"))?.id;
  }

  /** Deletes namespace @name, as a container runtime does when its pod goes. */
  async delete(name: string): Promise<void> {
    await execa("ip", ["netns", "del", name]);
  }

  /** Deletes every namespace this set made that still exists, and removes @keys' pins. Never throws. */
  async remove(keys: Iterable<string> = []): Promise<void> {
    const names = [...this.made];
    await execa("ip", ["-force", "-batch", "-"], {
      input: names.map((name) => `netns del ${name}\n`).join(""),
      reject: false,
    });
    for (const key of keys) {
      await rm(`/sys/fs/bpf/intercept/${key}`, { recursive: true, force: true });
      // A lock record an agent killed, or stopped with --keep, left for its pins: the namespace is gone.
      await rm(lockFile(key), { force: true });
    }
  }
}
