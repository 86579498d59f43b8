/**
 * An in-memory Host for running the whole agent, and the commands, without
 * root or a kernel: named network namespaces (each with its FakeDatapath),
 * the agent's own namespace, link and namespace and cgroup events the test
 * sends, locks with their holders' records (contention included: a second
 * taker waits, or is refused, and is told who holds it), pins of namespaces
 * no longer there, privileges and bpffs, and the process's signals (the
 * agent's, and the SIGINT/SIGTERM a command listens to). Every step can be
 * made to fail once, on command:
 *   failNext(step, error)  the next call of @step (a Host method) throws @error.
 * Barriers instead of sleeps: settled() resolves once every event sent so
 * far has been handled as far as the agent's own promises go.
 */
import { InterceptError } from "../../src/errors.js";
import { lockHeld, lockHolderOf, lockTimedOut } from "../../src/host/lock.js";
import type {
  CgroupEvents,
  Host,
  LinkEvents,
  LockHolder,
  LockOptions,
  NamespaceDatapath,
  NamespaceEvents,
  NamespaceFile,
  NamespaceLock,
  NamespaceWatch,
  ProcessEvents,
  TerminationSignal,
  Watch,
} from "../../src/host/types.js";
import { describeNamespace, type NetworkNamespace } from "../../src/model/namespace.js";
import type { RecentFlowsDocument } from "../../src/model/recent-flows.js";
import { FakeDatapath } from "./fake-datapath.js";

/** A Host method that can be made to fail. */
export type HostStep = Exclude<keyof Host, "close" | "onProcessEvents" | "onTerminationSignals">;

/** A FakeDatapath with a key of its own, as every namespace has. */
export class HostedDatapath extends FakeDatapath implements NamespaceDatapath {
  constructor(netns: NetworkNamespace, key: string) {
    super(netns);
    Object.defineProperty(this, "namespaceKey", { value: key }); // the fake's own is one fixed key
  }

  /** Whether anything is pinned for it. */
  get pinned(): boolean {
    return this.snapshot().pins.namespaceDir;
  }
}

interface HeldLock {
  pid: number;
  holder: string;
  /** Wakes whoever waits once it is let go. */
  released: Promise<void>;
  release: () => void;
}

/** The key of the agent's own namespace in the fake. */
export const OWN_KEY = "ns1";

export class FakeHost implements Host {
  /** The namespace the agent runs in. */
  readonly own = new HostedDatapath({}, OWN_KEY);
  /** Named namespaces now (name → datapath). */
  private readonly named = new Map<string, HostedDatapath>();
  /** Every datapath ever made, by key: a namespace's pins outlive it. */
  private readonly byKey = new Map<string, HostedDatapath>([[OWN_KEY, this.own]]);
  /** Pins of namespaces that were never opened here (left by an earlier agent). */
  private readonly leftPins = new Set<string>();
  private nextKey = 100;
  private readonly failures = new Map<HostStep, unknown>();
  private readonly held = new Map<string, HeldLock>();
  /** Each key's last lock record, kept (as the file is) by a release that keeps it. */
  private readonly records = new Map<string, { pid: number; holder: string }>();
  private readonly namespaceWatchers = new Set<{ matches: (name: string) => boolean; events: NamespaceEvents }>();
  private readonly linkWatchers = new Map<string, Set<LinkEvents>>();
  private readonly cgroupWatchers = new Set<{ paths: readonly string[]; events: CgroupEvents }>();
  private processEvents: ProcessEvents | undefined;
  /** Commands' listeners for SIGINT and SIGTERM (onTerminationSignals). */
  private readonly terminationHandlers = new Set<(signal: TerminationSignal) => void>();
  privileged = true;
  bpffs = true;
  closed = 0;
  /** The recent flow files, by namespace key, as the last publish left them (a copy: what a reader would parse). */
  readonly recentFlows = new Map<string, RecentFlowsDocument>();
  /** How many times each key's recent flows were written. */
  readonly recentWrites = new Map<string, number>();
  /** Every call, in order, by step (for asserting what was asked of the machine). */
  readonly calls: string[] = [];

  // ── what the test does to the machine ──

  /** The next call of @step throws @error. */
  failNext(step: HostStep, error: unknown = new Error(`injected failure of ${step}`)): void {
    this.failures.set(step, error);
  }

  /** Makes a named namespace (with links @links), as `ip netns add` would; watchers see it. */
  addNamespace(name: string, links: string[] = ["eth0"]): HostedDatapath {
    const datapath = new HostedDatapath({ name }, `ns${this.nextKey++}`);
    for (const link of links) datapath.addLink(link);
    this.named.set(name, datapath);
    this.byKey.set(datapath.namespaceKey, datapath);
    this.namespacesChanged();
    return datapath;
  }

  /** Deletes a named namespace, as `ip netns del` would: its links go, its pins stay. */
  removeNamespace(name: string): void {
    const datapath = this.named.get(name);
    if (!datapath) throw new Error(`no namespace ${name}`);
    datapath.deleteNamespace();
    this.named.delete(name);
    this.namespacesChanged();
  }

  /** The datapath of a named namespace (or the own one). */
  datapath(name?: string): HostedDatapath {
    if (name === undefined) return this.own;
    const found = this.named.get(name);
    if (!found) throw new Error(`no namespace ${name}`);
    return found;
  }

  /** Every datapath ever made, by key (those of namespaces gone included). */
  datapathByKey(key: string): HostedDatapath | undefined {
    return this.byKey.get(key);
  }

  /** Adds a link in a namespace, and tells its link watchers. */
  addLink(name: string | undefined, link: string): void {
    this.datapath(name).addLink(link);
    this.linkChanged(name);
  }

  /** Tells @name's link watchers that something changed. */
  linkChanged(name: string | undefined): void {
    for (const events of this.linkWatchers.get(name ?? "") ?? []) events.changed();
  }

  /** The link watcher of @name dies and comes back, as a restarted `ip monitor` does. */
  breakLinkWatcher(name: string | undefined, reason = "link watcher exited (1)"): void {
    for (const events of this.linkWatchers.get(name ?? "") ?? []) {
      events.failed(reason, 100);
      events.restarted();
      events.changed();
    }
  }

  /** Pins of a namespace that is gone, left by an agent before this one (with its lock record). */
  leavePins(key: string, lastHolder?: string): void {
    this.leftPins.add(key);
    if (lastHolder !== undefined) this.records.set(key, { pid: 4242, holder: lastHolder });
  }

  /** A cgroup of @name's datapath is removed or made (again): the cgroup watchers hear of it. */
  cgroupChanged(path: string): void {
    for (const { paths, events } of this.cgroupWatchers) if (paths.includes(path)) events.changed();
  }

  /** The cgroup watch breaks. */
  breakCgroupWatch(error: unknown): void {
    for (const { events } of this.cgroupWatchers) events.failed(error);
  }

  /** What the process is told: SIGTERM, SIGINT, SIGHUP, or an error nobody caught. */
  signal(signal: TerminationSignal | "SIGHUP"): void {
    const commands = signal === "SIGHUP" ? [] : [...this.terminationHandlers];
    if (!this.processEvents && commands.length === 0) throw new Error(`nobody listens to ${signal}`);
    for (const handler of commands) handler(signal as TerminationSignal);
    if (signal === "SIGHUP") this.processEvents?.reload();
    else this.processEvents?.terminate();
  }

  uncaught(error: unknown): void {
    if (!this.processEvents) throw new Error("nobody listens to the process's errors");
    this.processEvents.fatal(error);
  }

  /** Takes a lock as another process would: returns its release. */
  async holdLock(key: string, holder: string, pid = 4242): Promise<() => void> {
    const lock = await this.take(key, { holder, timeoutMs: 0 }, pid);
    return () => void lock.release();
  }

  /** Who holds the lock of @key now, if anyone. */
  lockHolder(key: string): { pid: number; holder: string } | undefined {
    const held = this.held.get(key);
    return held && { pid: held.pid, holder: held.holder };
  }

  /** How many link, namespace and cgroup watches are open now. */
  get openWatches(): { links: number; namespaces: number; cgroups: number } {
    return {
      links: [...this.linkWatchers.values()].reduce((sum, set) => sum + set.size, 0),
      namespaces: this.namespaceWatchers.size,
      cgroups: this.cgroupWatchers.size,
    };
  }

  get listening(): boolean {
    return this.processEvents !== undefined;
  }

  /** How many commands' SIGINT/SIGTERM listeners are registered now. */
  get terminationListeners(): number {
    return this.terminationHandlers.size;
  }

  // ── the port ──

  async requireKernelAccess(command: string): Promise<void> {
    this.step("requireKernelAccess");
    if (!this.privileged)
      throw new InterceptError(
        "privilege",
        `intercept ${command} needs root, or CAP_NET_ADMIN and CAP_SYS_ADMIN (missing: CAP_NET_ADMIN, CAP_SYS_ADMIN)`,
      );
    if (!this.bpffs) throw new InterceptError("bpffs-unavailable", "cannot mount bpffs at /sys/fs/bpf");
  }

  async openDatapath(netns: NetworkNamespace, command: string): Promise<NamespaceDatapath> {
    this.step("openDatapath");
    await this.requireKernelAccess(command);
    if (netns.name === undefined) return this.own;
    const found = this.named.get(netns.name);
    if (!found)
      throw new InterceptError(
        "netns-not-found",
        `network namespace "${netns.name}" does not exist (see \`ip netns list\`)`,
      );
    return found;
  }

  async ownNamespaceKey(): Promise<string> {
    this.step("ownNamespaceKey");
    return OWN_KEY;
  }

  async identifyNamespace(name: string): Promise<NamespaceFile> {
    this.step("identifyNamespace");
    const found = this.named.get(name);
    return found ? { kind: "namespace", key: found.namespaceKey } : { kind: "gone" };
  }

  async listNamespaces(): Promise<ReadonlyMap<string, string>> {
    this.step("listNamespaces");
    return this.matching(() => true);
  }

  watchNamespaces(matches: (name: string) => boolean, events: NamespaceEvents): NamespaceWatch {
    this.step("watchNamespaces");
    const watcher = { matches, events };
    return {
      start: async () => {
        this.namespaceWatchers.add(watcher);
        return this.matching(matches);
      },
      stop: () => void this.namespaceWatchers.delete(watcher),
    };
  }

  async watchLinks(netns: NetworkNamespace, events: LinkEvents): Promise<Watch> {
    this.step("watchLinks");
    const label = netns.name ?? "";
    if (netns.name !== undefined && !this.named.has(netns.name))
      throw new InterceptError("netns-not-found", `${describeNamespace(netns)} has no id: it is gone`);
    const set = this.linkWatchers.get(label) ?? new Set();
    this.linkWatchers.set(label, set.add(events));
    return {
      stop: () => {
        set.delete(events);
        if (set.size === 0 && this.linkWatchers.get(label) === set) this.linkWatchers.delete(label);
      },
    };
  }

  async watchCgroups(paths: readonly string[], events: CgroupEvents): Promise<Watch> {
    this.step("watchCgroups");
    const watcher = { paths: [...paths], events };
    this.cgroupWatchers.add(watcher);
    return { stop: () => void this.cgroupWatchers.delete(watcher) };
  }

  lockNamespace(key: string, options: Omit<LockOptions, "dir">): Promise<NamespaceLock> {
    try {
      this.step("lockNamespace");
    } catch (error) {
      return Promise.reject(error);
    }
    return this.take(key, options, process.pid);
  }

  async lastLockHolder(key: string): Promise<string | undefined> {
    this.step("lastLockHolder");
    return this.records.get(key)?.holder;
  }

  async pinnedNamespaces(): Promise<string[]> {
    this.step("pinnedNamespaces");
    const pinned = [...this.byKey].filter(([, datapath]) => datapath.pinned).map(([key]) => key);
    return [...new Set([...pinned, ...this.leftPins])].sort();
  }

  async removeNamespacePins(key: string): Promise<void> {
    this.step("removeNamespacePins");
    this.leftPins.delete(key);
    await this.byKey.get(key)?.forgetNamespace();
  }

  /** Whether the node's programs are pinned: until removeNodePins. */
  nodePinned = true;

  async removeNodePins(): Promise<void> {
    this.step("removeNodePins");
    this.nodePinned = false;
  }

  async publishRecentFlows(key: string, document: RecentFlowsDocument): Promise<void> {
    this.step("publishRecentFlows");
    this.recentFlows.set(key, JSON.parse(JSON.stringify(document)) as RecentFlowsDocument);
    this.recentWrites.set(key, (this.recentWrites.get(key) ?? 0) + 1);
  }

  async removeRecentFlows(key: string): Promise<void> {
    this.step("removeRecentFlows");
    this.recentFlows.delete(key);
  }

  async readRecentFlows(key: string): Promise<RecentFlowsDocument | undefined> {
    this.step("readRecentFlows");
    return this.recentFlows.get(key);
  }

  /** The flow reader's locks: the lock protocol above, on a key of its own. */
  lockFlowReader(key: string, holder: string): Promise<NamespaceLock> {
    try {
      this.step("lockFlowReader");
    } catch (error) {
      return Promise.reject(error);
    }
    return this.take(`flows:${key}`, { holder, timeoutMs: 0 }, process.pid);
  }

  onProcessEvents(events: ProcessEvents): () => void {
    if (this.processEvents) throw new Error("the process's events are listened to twice");
    this.processEvents = events;
    return () => {
      if (this.processEvents === events) this.processEvents = undefined;
    };
  }

  onTerminationSignals(handler: (signal: TerminationSignal) => void): () => void {
    this.terminationHandlers.add(handler);
    return () => void this.terminationHandlers.delete(handler);
  }

  close(): void {
    this.closed++;
  }

  // ── inside ──

  private step(step: HostStep): void {
    this.calls.push(step);
    if (!this.failures.has(step)) return;
    const error = this.failures.get(step);
    this.failures.delete(step);
    throw error;
  }

  private matching(matches: (name: string) => boolean): Map<string, string> {
    return new Map(
      [...this.named]
        .filter(([name]) => matches(name))
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([name, datapath]) => [name, datapath.namespaceKey]),
    );
  }

  private namespacesChanged(): void {
    for (const { matches, events } of this.namespaceWatchers) events.changed(this.matching(matches));
  }

  /** The lock protocol of src/host/lock.ts, in memory: the same waits, refusals and words. */
  private async take(key: string, options: Omit<LockOptions, "dir">, pid: number): Promise<NamespaceLock> {
    const deadline = Date.now() + Math.max(0, options.timeoutMs);
    let told = false;
    for (let held = this.held.get(key); held; held = this.held.get(key)) {
      const heldBy: LockHolder = lockHolderOf({ pid: held.pid, holder: held.holder });
      if (!told) options.onWait?.(heldBy);
      told = true;
      if (options.timeoutMs <= 0) throw lockHeld(heldBy);
      const left = deadline - Date.now();
      if (left <= 0) throw lockTimedOut(options.timeoutMs, heldBy);
      options.signal?.throwIfAborted();
      let timer: NodeJS.Timeout | undefined;
      let abort: (() => void) | undefined;
      const outcome = await Promise.race([
        held.released.then(() => "released" as const),
        new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), left))),
        new Promise<"aborted">((resolve) => {
          abort = () => resolve("aborted");
          options.signal?.addEventListener("abort", abort, { once: true });
        }),
      ]);
      clearTimeout(timer);
      if (abort) options.signal?.removeEventListener("abort", abort);
      if (outcome === "aborted") options.signal!.throwIfAborted();
      if (outcome === "timeout") throw lockTimedOut(options.timeoutMs, heldBy);
    }
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const mine: HeldLock = { pid, holder: options.holder, released, release };
    this.held.set(key, mine);
    this.records.set(key, { pid, holder: options.holder });
    let done = false;
    return {
      release: async (how) => {
        if (done) return;
        done = true;
        if (!how?.keepRecord) this.records.delete(key);
        if (this.held.get(key) === mine) this.held.delete(key);
        mine.release();
      },
    };
  }
}
