import type { Datapath, DatapathOptions } from "../datapath/types.js";
import type { NetworkNamespace } from "../model/namespace.js";
import type { RecentFlowsDocument } from "../model/recent-flows.js";
import type { LockOptions, NamespaceLock } from "./lock.js";

export type { LockHolder, LockOptions, NamespaceLock } from "./lock.js";

/** A namespace's datapath, with the key (`ns<inode>`) its pins and lock are named by. */
export interface NamespaceDatapath extends Datapath {
  readonly namespaceKey: string;
  /** Whether anything of intercept's is pinned for the namespace: its lock record then stays on release. */
  holdsPins(): boolean;
}

/** What a file in the namespace directory (/var/run/netns) is right now. */
export type NamespaceFile =
  /** A network namespace, by its key (`ns<inode>`, as pins and locks name it). */
  | { kind: "namespace"; key: string }
  /** An ordinary file: `ip netns add` and CNI plugins create the file, then bind-mount the namespace on it. */
  | { kind: "pending" }
  | { kind: "gone" };

/** Something followed; stop() lets it go (once is enough, more is harmless). */
export interface Watch {
  stop(): void;
}

export interface LinkEvents {
  /** Something about the namespace's links changed (or may have, while nobody listened): look again. */
  changed(): void;
  /** The watcher died (@reason) and will be restarted in @delayMs. */
  failed(reason: string, delayMs: number): void;
  /** It listens again after a failure (changed() follows). */
  restarted(): void;
}

export interface NamespaceEvents {
  /** The matching namespaces (name → key) changed; called with every one of them. */
  changed(namespaces: ReadonlyMap<string, string>): void;
  /** The directory cannot be read (not that it is missing: then there are no namespaces yet). */
  failed(error: unknown): void;
}

/** The namespace directory, followed: start() resolves with the namespaces found (also passed to changed()). */
export interface NamespaceWatch extends Watch {
  start(): Promise<ReadonlyMap<string, string>>;
}

export interface CgroupEvents {
  /** A followed cgroup was made (again): look again. */
  changed(): void;
  /** The cgroup tree cannot be followed any more. */
  failed(error: unknown): void;
}

/** The signals that ask a command to stop. */
export type TerminationSignal = "SIGINT" | "SIGTERM";

/** What the process is told from outside: SIGTERM and SIGINT, SIGHUP, and errors nobody caught. */
export interface ProcessEvents {
  terminate(): void;
  reload(): void;
  fatal(error: unknown): void;
}

/**
 * Everything the agent and the commands take from the machine,
 * in one port: privileges and bpffs, a datapath per network namespace, the
 * namespace directory and link events, the cgroup tree's events, the
 * per-namespace lock, the pins of namespaces no longer there, and the
 * process's signals. KernelHost (./kernel.ts) is the machine, made once in
 * src/cli.ts; tests run the agent and the commands on
 * tests/support/fake-host.ts, which fails on command at every step.
 */
export interface Host {
  /** Root, or CAP_NET_ADMIN and CAP_SYS_ADMIN, and bpffs mounted; @command names who needs them. */
  requireKernelAccess(command: string): Promise<void>;
  /** The datapath of @netns, after checking privileges and that it exists; changes nothing. */
  openDatapath(netns: NetworkNamespace, command: string, options?: DatapathOptions): Promise<NamespaceDatapath>;
  /** The key of the namespace this process runs in. */
  ownNamespaceKey(): Promise<string>;
  /** What the file naming @name in the namespace directory is now. */
  identifyNamespace(name: string): Promise<NamespaceFile>;
  /** Every named namespace (name → key), whatever its name. */
  listNamespaces(): Promise<ReadonlyMap<string, string>>;
  /** Follows the namespace directory for the names @matches says. */
  watchNamespaces(matches: (name: string) => boolean, events: NamespaceEvents): NamespaceWatch;
  /**
   * Follows @netns's links; resolves once listening: no change after that is
   * missed, so a look at the links that starts then sees everything before.
   */
  watchLinks(netns: NetworkNamespace, events: LinkEvents): Promise<Watch>;
  /**
   * Follows the cgroup2 paths @paths (relative to its mount): each one made
   * or made again (after its parents, so a path that does not exist yet is
   * seen when it is made). Resolves once listening.
   */
  watchCgroups(paths: readonly string[], events: CgroupEvents): Promise<Watch>;
  /** Takes the exclusive lock of the namespace @key: one writer per namespace. */
  lockNamespace(key: string, options: Omit<LockOptions, "dir">): Promise<NamespaceLock>;
  /** Who last held @key's lock, as it wrote itself there; undefined when nobody is known to. */
  lastLockHolder(key: string): Promise<string | undefined>;
  /** The keys of the namespaces that have pins of ours. */
  pinnedNamespaces(): Promise<string[]>;
  /** Unpins everything kept for the namespace @key (one that is gone). */
  removeNamespacePins(key: string): Promise<void>;
  /** Unpins the node's programs (`agent --cni`'s, which the CNI plugin attaches in new pods). */
  removeNodePins(): Promise<void>;
  /** Publishes the last flow records of namespace @key's rules (for `status`), whole or not at all. */
  publishRecentFlows(key: string, document: RecentFlowsDocument): Promise<void>;
  /** Removes what publishRecentFlows wrote for @key; nothing there is fine. */
  removeRecentFlows(key: string): Promise<void>;
  /** What was last published for @key; undefined when nothing (readable as ours) is. */
  readRecentFlows(key: string): Promise<RecentFlowsDocument | undefined>;
  /** Takes the lock of @key's ring buffer of flow records at once, or is refused (lock-held) saying who reads it. */
  lockFlowReader(key: string, holder: string): Promise<NamespaceLock>;
  /** Listens to the process's signals and uncaught errors until the returned function is called. */
  onProcessEvents(events: ProcessEvents): () => void;
  /**
   * Listens to SIGINT and SIGTERM only, until the returned function is
   * called: what a command that must not stop half-way (apply, the demo)
   * hears; SIGHUP and uncaught errors keep Node's default meaning there.
   */
  onTerminationSignals(handler: (signal: TerminationSignal) => void): () => void;
  /** Stops what the host runs for all its users (the one link watcher). */
  close(): void;
}
