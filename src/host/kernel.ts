import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { KernelDatapath } from "../datapath/kernel.js";
import type { DatapathOptions } from "../datapath/types.js";
import { releaseNamespaceSlots } from "../kernel/slot-claims.js";
import { InterceptError } from "../errors.js";
import { cgroupRoot } from "../kernel/cgroups.js";
import { onTerminationSignals } from "../kernel/exec.js";
import { namespaceKey } from "../kernel/namespace.js";
import { ensureBpffs, listEntries, PIN_ROOT, PinLayout, removeIfEmpty, removePins } from "../kernel/pins.js";
import { requireKernelPrivileges } from "../kernel/privileges.js";
import { readLockRecord } from "../model/lock-holder.js";
import { isNamespaceKey, NETNS_DIR, type NetworkNamespace } from "../model/namespace.js";
import { FLOWS_RUN_DIR, type RecentFlowsDocument } from "../model/recent-flows.js";
import { CgroupWatch } from "./cgroup-watch.js";
import { lockFlowReader, publishRecentFlows, readRecentFlows, removeRecentFlows } from "./recent-flows.js";
import { LinkMonitor } from "./link-monitor.js";
import { LOCK_DIR, lockFile, lockNamespace, type LockOptions, type NamespaceLock } from "./lock.js";
import { identifyNamespaceFile, NamespaceDirectory } from "./netns-directory.js";
import type {
  CgroupEvents,
  Host,
  LinkEvents,
  NamespaceDatapath,
  NamespaceEvents,
  NamespaceFile,
  NamespaceWatch,
  ProcessEvents,
  TerminationSignal,
  Watch,
} from "./types.js";

/** Where a KernelHost finds what it serves; the defaults are the machine's. */
export interface KernelHostPlaces {
  /** Where pins go (default /sys/fs/bpf/intercept). */
  pinRoot?: string;
  /** Where namespace locks are (default /run/intercept/locks). */
  lockDir?: string;
  /** Where `ip netns` names namespaces (default /var/run/netns). */
  netnsDir?: string;
  /** Where the agent's flow files are (default /run/intercept/flows). */
  flowsDir?: string;
}

/**
 * The machine, as the Host port: KernelDatapath per namespace, the
 * namespace directory (inotify), one link monitor for every namespace, the
 * cgroup tree (inotify), flock(2) locks, the pins under bpffs, and the
 * process's signals.
 */
export class KernelHost implements Host {
  private readonly links = new LinkMonitor();
  private readonly pinRoot: string;
  private readonly lockDir: string;
  private readonly netnsDir: string;
  private readonly flowsDir: string;

  constructor(places: KernelHostPlaces = {}) {
    this.pinRoot = places.pinRoot ?? PIN_ROOT;
    this.lockDir = places.lockDir ?? LOCK_DIR;
    this.netnsDir = places.netnsDir ?? NETNS_DIR;
    this.flowsDir = places.flowsDir ?? FLOWS_RUN_DIR;
  }

  async requireKernelAccess(command: string): Promise<void> {
    await requireKernelPrivileges(command);
    await ensureBpffs();
  }

  openDatapath(netns: NetworkNamespace, command: string, options?: DatapathOptions): Promise<NamespaceDatapath> {
    return KernelDatapath.open(netns, command, options);
  }

  ownNamespaceKey(): Promise<string> {
    return namespaceKey({});
  }

  identifyNamespace(name: string): Promise<NamespaceFile> {
    return identifyNamespaceFile(path.join(this.netnsDir, name));
  }

  async listNamespaces(): Promise<ReadonlyMap<string, string>> {
    let names: string[];
    try {
      names = await readdir(this.netnsDir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return new Map(); // no namespace was ever named
      throw error;
    }
    const files = await Promise.all(names.map((name) => this.identifyNamespace(name)));
    return new Map(
      names.flatMap((name, index) => {
        const file = files[index]!;
        return file.kind === "namespace" ? [[name, file.key] as const] : [];
      }),
    );
  }

  watchNamespaces(matches: (name: string) => boolean, events: NamespaceEvents): NamespaceWatch {
    return new NamespaceDirectory({ matches, dir: this.netnsDir }, events);
  }

  watchLinks(netns: NetworkNamespace, events: LinkEvents): Promise<Watch> {
    return this.links.watch(netns, events);
  }

  async watchCgroups(paths: readonly string[], events: CgroupEvents): Promise<Watch> {
    const root = await cgroupRoot();
    if (root === null || paths.length === 0) return { stop: () => {} }; // nothing to follow: plan says why
    return new CgroupWatch(root, paths, events);
  }

  lockNamespace(key: string, options: Omit<LockOptions, "dir">): Promise<NamespaceLock> {
    return lockNamespace(key, { ...options, dir: this.lockDir });
  }

  async lastLockHolder(key: string): Promise<string | undefined> {
    let text: string;
    try {
      text = await readFile(lockFile(key, this.lockDir), "utf8");
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "EACCES") return undefined; // no record (or none we may read): nobody known
      throw new InterceptError("file-access", `cannot read the lock of ${key}: ${code}`);
    }
    return readLockRecord(text)?.holder; // none when a holder never finished writing it
  }

  async pinnedNamespaces(): Promise<string[]> {
    return (await listEntries(this.pinRoot, "directories")).filter(isNamespaceKey);
  }

  async removeNamespacePins(key: string): Promise<void> {
    const pins = new PinLayout(key, this.pinRoot);
    await releaseNamespaceSlots(pins);
    await removePins(pins.namespaceDir);
    await removeIfEmpty(this.pinRoot);
  }

  async removeNodePins(): Promise<void> {
    await removePins(PinLayout.node(this.pinRoot).namespaceDir);
    await removeIfEmpty(this.pinRoot);
  }

  publishRecentFlows(key: string, document: RecentFlowsDocument): Promise<void> {
    return publishRecentFlows(this.flowsDir, key, document);
  }

  removeRecentFlows(key: string): Promise<void> {
    return removeRecentFlows(this.flowsDir, key);
  }

  readRecentFlows(key: string): Promise<RecentFlowsDocument | undefined> {
    return readRecentFlows(this.flowsDir, key);
  }

  lockFlowReader(key: string, holder: string): Promise<NamespaceLock> {
    return lockFlowReader(this.flowsDir, key, holder);
  }

  onProcessEvents(events: ProcessEvents): () => void {
    const releaseSignals = onTerminationSignals(() => events.terminate());
    const reload = () => events.reload();
    const fatal = (error: unknown) => events.fatal(error);
    process.on("SIGHUP", reload);
    process.on("uncaughtException", fatal);
    process.on("unhandledRejection", fatal);
    return () => {
      releaseSignals();
      process.off("SIGHUP", reload);
      process.off("uncaughtException", fatal);
      process.off("unhandledRejection", fatal);
    };
  }

  onTerminationSignals(handler: (signal: TerminationSignal) => void): () => void {
    // It listens to SIGINT and SIGTERM, nothing else: every signal it passes on is one of those.
    return onTerminationSignals((signal) => handler(signal as TerminationSignal));
  }

  close(): void {
    this.links.close();
  }
}
