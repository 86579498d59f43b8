/**
 * An in-memory datapath for tests of plan, apply, rollback and recovery
 * without root or a kernel (Cilium's fake datapath, for intercept). It
 * models what the kernel enforces — a filter needs a clsact qdisc and a
 * pinned program, a qdisc is added once, a program is attached to a cgroup
 * at most once per hook, detaching needs it attached — records every operation that
 * changed it, with a snapshot after each, and fails on command:
 *   failAt(n)    the n-th mutation (1-based) throws, changing nothing;
 *   crashAfter(n) after n mutations every operation throws and nothing
 *                changes any more, as if the process had been killed there.
 */
import {
  type CgroupIdentity,
  type CgroupRef,
  type Counter,
  type Datapath,
  type DatapathOperation,
  type EmptyPin,
  type LinkRef,
  type ObservedLink,
  type ObservedProgram,
  type ObservedState,
  type ObserveInterest,
  type ProgramLoad,
  type RuleCounters,
  type RunResult,
  perform,
  performEach,
} from "../../src/datapath/types.js";
import { CGROUP_HOOKS, HOOKS, type CgroupHook, type Hook } from "../../src/model/hooks.js";
import { describeVersion, sameVersion, type VersionRef } from "../../src/model/version.js";
import { type CgroupAttachment } from "../../src/kernel/cgroups.js";
import { type Listener } from "../../src/kernel/sockets.js";
import { COUNTER_SLOTS, type CounterSlot } from "../../src/compile/counters.js";
import type { PrefixEntry } from "../../src/compile/match.js";
import type { NetworkNamespace } from "../../src/model/namespace.js";

interface FakeLink {
  ifindex: number;
  name: string;
  linkType: string;
  clsact: boolean;
  filters: Partial<Record<Hook, number>>;
  foreign: ObservedLink["foreign"];
}

interface FakeVersion {
  ref: VersionRef;
  contentHash: string | null;
  programIds: Partial<Record<Hook, number>>;
  cgroupProgramIds: Partial<Record<CgroupHook, number>>;
  enabled: boolean[];
  exemptCgroups: CgroupIdentity[];
  counters: RuleCounters[];
  /** What the version's prefix tries hold, written with the rule switches. */
  prefixes: PrefixEntry[];
}

interface FakeCgroup {
  path: string;
  id: number;
  /** Attached programs, in attach order (the kernel runs a hook's programs in this order). */
  attached: CgroupAttachment[];
}

/** bpftool's names of the attach points. */
const ATTACH_TYPE: Record<CgroupHook, string> = {
  connect4: "cgroup_inet4_connect",
  connect6: "cgroup_inet6_connect",
  sock_ops: "cgroup_sock_ops",
  getsockopt: "cgroup_getsockopt",
};

/** The pin directories and the registry pin, whether or not they hold anything. */
export interface FakePins {
  namespaceDir: boolean;
  registry: boolean;
  policyDirs: string[];
}

/** The kernel's state as plain data, for exact before/after comparisons. */
export interface FakeKernelState {
  links: FakeLink[];
  versions: FakeVersion[];
  ownedQdiscs: number[];
  cgroups: FakeCgroup[];
  pins: FakePins;
}

/** Where the fake's cgroup2 hierarchy is "mounted". */
export const FAKE_CGROUP_ROOT = "/fake/cgroup2";

export class FakeDatapath implements Datapath {
  readonly netns: NetworkNamespace;
  readonly namespaceKey = "ns4026531840";
  /** Every operation that changed the kernel, in order, with the state right after it. */
  readonly history: { operation: DatapathOperation; after: FakeKernelState }[] = [];
  private links: FakeLink[] = [];
  private versions: FakeVersion[] = [];
  private cgroups: FakeCgroup[] = [];
  private nextCgroupId = 1000;
  private ownedQdiscs = new Set<number>();
  /** As bpffs holds them: a registry or a directory stays, empty, until tidy removes it. */
  private registry = false;
  private namespaceDir = false;
  private policyDirs = new Set<string>();
  private nextProgramId = 100;
  private mutations = 0;
  private deleted = false;
  private failing: number | undefined;
  private crashingAfter: number | undefined;
  /** Sockets listening in the namespace (what `ss -ltn` would list). */
  readonly listeners: Listener[] = [];
  /** Counter reads fail with this message when set. */
  countersUnreadable: string | undefined;

  constructor(netns: NetworkNamespace = { name: "fake" }) {
    this.netns = netns;
  }

  /** A TCP socket listening on @port, in @cgroup (relative to the cgroup2 mount; "" is the root; undefined: not known). */
  listen(port: number, cgroup: string | undefined): void {
    this.listeners.push({ protocol: "tcp", address: "0.0.0.0", port, cgroup });
  }

  /** Adds an Ethernet link (or another kind, to test what cannot be served). */
  addLink(
    name: string,
    options: { linkType?: string; clsact?: boolean; foreign?: ObservedLink["foreign"] } = {},
  ): LinkRef {
    const ifindex = this.links.reduce((max, link) => Math.max(max, link.ifindex), 1) + 1;
    this.links.push({
      ifindex,
      name,
      linkType: options.linkType ?? "ether",
      clsact: options.clsact ?? false,
      filters: {},
      foreign: options.foreign ?? [],
    });
    return { ifindex, name };
  }

  removeLink(name: string): void {
    this.links = this.links.filter((link) => link.name !== name);
  }

  /** Makes a cgroup (relative to the fake cgroup2 mount), with a new id. */
  addCgroup(path: string): CgroupRef {
    const cgroup = { path, id: this.nextCgroupId++, attached: [] };
    this.cgroups.push(cgroup);
    return { path, id: cgroup.id };
  }

  /** Removes a cgroup, and with it whatever was attached to it (as rmdir does). */
  removeCgroup(path: string): void {
    this.cgroups = this.cgroups.filter((cgroup) => cgroup.path !== path);
  }

  /** Attaches a program intercept did not make (another tool's) to a cgroup. */
  attachForeign(path: string, hook: CgroupHook, name = "foreign"): number {
    const programId = this.nextProgramId++;
    this.cgroup(path).attached.push({ attachType: ATTACH_TYPE[hook], hook, programId, name });
    return programId;
  }

  failAt(mutation: number): void {
    this.failing = mutation;
  }

  crashAfter(mutations: number): void {
    this.crashingAfter = mutations;
  }

  /** A new process after the crash: operations work again, on whatever the crash left. */
  restart(): void {
    this.crashingAfter = undefined;
    this.failing = undefined;
  }

  get mutationCount(): number {
    return this.mutations;
  }

  /** Whether the namespace's pin directory is there (KernelDatapath's holdsPins). */
  holdsPins(): boolean {
    return this.namespaceDir;
  }

  /**
   * The state, with each cgroup's programs grouped by hook: the kernel keeps
   * one list per attach point, so only the order within a hook is real.
   */
  snapshot(): FakeKernelState {
    const byHook = (a: CgroupAttachment, b: CgroupAttachment) =>
      CGROUP_HOOKS.indexOf(a.hook!) - CGROUP_HOOKS.indexOf(b.hook!);
    const cgroups = this.cgroups.map((cgroup) => ({ ...cgroup, attached: [...cgroup.attached].sort(byHook) }));
    const pins = { namespaceDir: this.namespaceDir, registry: this.registry, policyDirs: [...this.policyDirs].sort() };
    return structuredClone({
      links: this.links,
      versions: this.versions,
      ownedQdiscs: [...this.ownedQdiscs].sort((a, b) => a - b),
      cgroups,
      pins,
    });
  }

  /** What an unload killed between removing a version and its policy's directory leaves. */
  leaveEmptyPolicyDirectory(policy: string): void {
    this.namespaceDir = true;
    this.policyDirs.add(policy);
  }

  /** What a qdisc removal killed between `tc qdisc del` and forgetting its record leaves: the record alone. */
  leaveQdiscRecord(link: LinkRef): void {
    this.ownedQdiscs.add(link.ifindex);
    this.registry = true;
    this.namespaceDir = true;
  }

  /** Pins left empty, as observe reports them. */
  private emptyPins(): EmptyPin[] {
    const policies = [...this.policyDirs]
      .sort()
      .filter((policy) => !this.versions.some((v) => v.ref.policy === policy));
    const anything = this.registry || this.policyDirs.size > 0;
    return [
      ...(this.registry && this.ownedQdiscs.size === 0 ? [{ kind: "registry" as const }] : []),
      ...policies.map((policy) => ({ kind: "policy" as const, policy })),
      ...(this.namespaceDir && !anything ? [{ kind: "namespace" as const }] : []),
    ];
  }

  /** Counts packets on a version's rule, as traffic would. */
  count(ref: VersionRef, rule: number, slot: CounterSlot, counter: Counter): void {
    const version = this.version(ref);
    version.counters[rule]![slot] = counter;
  }

  async observe(interest: ObserveInterest = {}): Promise<ObservedState> {
    this.refuseAfterCrash();
    if (this.deleted)
      throw new Error(`nsenter: cannot open /var/run/netns/${this.netns.name}: No such file or directory`);
    const asked = new Set(interest.cgroups ?? []);
    return structuredClone({
      netns: this.netns,
      namespaceKey: this.namespaceKey,
      links: [
        { ifindex: 1, name: "lo", loopback: true, linkType: "loopback", clsact: false, filters: {}, foreign: [] },
        ...this.links.map((link) => ({ ...link, loopback: false })),
      ],
      programs: this.versions.map(
        ({ ref, contentHash, programIds, cgroupProgramIds, enabled, exemptCgroups }): ObservedProgram => ({
          ref,
          contentHash,
          programIds,
          cgroupProgramIds,
          enabled,
          exemptCgroups,
        }),
      ),
      ownedQdiscs: [...this.ownedQdiscs].sort((a, b) => a - b),
      emptyPins: this.emptyPins(),
      ...(interest.listeners && { listeners: this.listeners }),
      cgroupRoot: FAKE_CGROUP_ROOT,
      cgroups: this.cgroups
        .filter((cgroup) => cgroup.attached.length > 0 || asked.has(cgroup.path))
        .map((cgroup) => ({ ...cgroup, level: cgroup.path.split("/").length })),
    });
  }

  async readCounters(program: VersionRef, rules: number): Promise<RuleCounters[]> {
    this.refuseAfterCrash();
    if (this.countersUnreadable) throw new Error(this.countersUnreadable);
    return structuredClone(this.version(program).counters.slice(0, rules));
  }

  /**
   * Two kernel operations, as bpftool makes them: the programs and maps are
   * pinned, then the rule switches, the prefix tries and (last) the content
   * hash are written.
   * A crash between them leaves an incomplete version.
   */
  async loadProgram(load: ProgramLoad): Promise<void> {
    await this.mutate({ op: "loadProgram", load }, () => {
      this.versions = this.versions.filter((v) => !sameVersion(v.ref, load.ref)); // a half-loaded one is replaced
      this.namespaceDir = true;
      this.policyDirs.add(load.ref.policy);
      const programIds: Partial<Record<Hook, number>> = {};
      for (const hook of load.hooks) programIds[hook] = this.nextProgramId++;
      const cgroupProgramIds: Partial<Record<CgroupHook, number>> = {};
      for (const hook of load.cgroupHooks ?? []) cgroupProgramIds[hook] = this.nextProgramId++;
      this.versions.push({
        ref: load.ref,
        contentHash: null,
        programIds,
        cgroupProgramIds,
        enabled: load.enabled.map(() => false),
        exemptCgroups: [],
        counters: [],
        prefixes: [],
      });
    });
    try {
      await this.mutate({ op: "loadProgram", load }, () => {
        const version = this.version(load.ref);
        const zero = () =>
          Object.fromEntries(COUNTER_SLOTS.map((slot) => [slot, { packets: 0, bytes: 0 }])) as RuleCounters;
        Object.assign(version, {
          contentHash: load.contentHash,
          enabled: [...load.enabled],
          exemptCgroups: structuredClone(load.exemptCgroups ?? []),
          counters: load.enabled.map(zero),
          prefixes: structuredClone(load.prefixes),
        });
      });
    } catch (error) {
      // As the real datapath does, a failed load removes what it pinned (unless the process is gone).
      if (!this.crashed) this.dropVersion(load.ref);
      throw error;
    }
  }

  /** What a crash in the middle of loadProgram leaves: pinned programs, no content hash. */
  leaveIncompleteVersion(ref: VersionRef, hooks: Hook[] = [...HOOKS]): void {
    const programIds: Partial<Record<Hook, number>> = {};
    for (const hook of hooks) programIds[hook] = this.nextProgramId++;
    this.versions.push({
      ref,
      contentHash: null,
      programIds,
      cgroupProgramIds: {},
      enabled: [],
      exemptCgroups: [],
      counters: [],
      prefixes: [],
    });
    this.namespaceDir = true;
    this.policyDirs.add(ref.policy);
  }

  async unloadProgram(ref: VersionRef): Promise<void> {
    await this.mutate({ op: "unloadProgram", ref }, () => this.dropVersion(ref));
  }

  /** A version's pins go, then its policy's directory if that was the last (as unloadVersion does). */
  private dropVersion(ref: VersionRef): void {
    this.versions = this.versions.filter((v) => !sameVersion(v.ref, ref));
    if (!this.versions.some((v) => v.ref.policy === ref.policy)) this.policyDirs.delete(ref.policy);
  }

  async addQdisc(link: LinkRef): Promise<void> {
    await this.mutate({ op: "addQdisc", link }, () => {
      const found = this.link(link);
      if (found.clsact) throw new Error(`tc qdisc add dev ${link.name} clsact: Exclusivity flag on, cannot modify`);
      found.clsact = true;
      this.ownedQdiscs.add(link.ifindex);
      this.registry = true;
      this.namespaceDir = true;
    });
  }

  async forgetQdiscs(ifindexes: number[]): Promise<void> {
    await this.mutate({ op: "forgetQdiscs", ifindexes }, () => {
      for (const ifindex of ifindexes) this.ownedQdiscs.delete(ifindex);
    });
  }

  async removeQdisc(link: LinkRef): Promise<void> {
    await this.mutate({ op: "removeQdisc", link }, () => {
      const found = this.links.find((l) => l.ifindex === link.ifindex);
      if (found) {
        found.clsact = false;
        found.filters = {};
      }
      this.ownedQdiscs.delete(link.ifindex);
    });
  }

  /** One kernel operation per hook, as tc's batch makes them: a crash can fall between two. */
  async attachFilters(link: LinkRef, program: VersionRef, hooks: Hook[]): Promise<void> {
    for (const hook of hooks) {
      await this.mutate({ op: "attachFilters", link, program, hooks: [hook] }, () => {
        const found = this.link(link);
        if (!found.clsact) throw new Error(`tc filter replace dev ${link.name} ${hook}: no clsact qdisc`);
        const id = this.version(program).programIds[hook];
        if (id === undefined) throw new Error(`${describeVersion(program)} has no ${hook} program`);
        found.filters[hook] = id;
      });
    }
  }

  async detachFilter(link: LinkRef, hook: Hook): Promise<void> {
    await this.mutate({ op: "detachFilter", link, hook }, () => {
      const found = this.links.find((l) => l.ifindex === link.ifindex);
      if (found) delete found.filters[hook];
    });
  }

  async setRule(program: VersionRef, index: number, enabled: boolean): Promise<void> {
    await this.mutate({ op: "setRule", program, index, enabled }, () => {
      const version = this.version(program);
      if (index >= version.enabled.length) throw new Error(`rule ${index} out of range`);
      version.enabled[index] = enabled;
    });
  }

  async attachCgroupProgram(cgroup: CgroupRef, hook: CgroupHook, program: VersionRef): Promise<void> {
    await this.mutate({ op: "attachCgroupProgram", cgroup, hook, program }, () => {
      const found = this.cgroupById(cgroup);
      const version = this.version(program);
      const programId = version.cgroupProgramIds[hook];
      if (programId === undefined) throw new Error(`${describeVersion(program)} has no ${hook} program`);
      if (found.attached.some((a) => a.programId === programId && a.hook === hook))
        throw new Error(`bpftool cgroup attach ${cgroup.path} ${ATTACH_TYPE[hook]}: File exists`);
      found.attached.push({ attachType: ATTACH_TYPE[hook], hook, programId, name: `out_${hook.replace("_", "")}` });
    });
  }

  async detachCgroupProgram(cgroup: CgroupRef, hook: CgroupHook, program: VersionRef): Promise<void> {
    await this.mutate({ op: "detachCgroupProgram", cgroup, hook, program }, () => {
      const found = this.cgroupById(cgroup);
      const programId = this.version(program).cgroupProgramIds[hook];
      const index = found.attached.findIndex((a) => a.programId === programId && a.hook === hook);
      if (index === -1)
        throw new Error(`bpftool cgroup detach ${cgroup.path} ${ATTACH_TYPE[hook]}: No such file or directory`);
      found.attached.splice(index, 1);
    });
  }

  async setExemptCgroups(program: VersionRef, cgroups: CgroupIdentity[]): Promise<void> {
    await this.mutate({ op: "setExemptCgroups", program, cgroups }, () => {
      this.version(program).exemptCgroups = structuredClone(cgroups);
    });
  }

  /** As the kernel's: records of links that are gone, then the registry once empty, then empty directories. */
  async tidy(): Promise<void> {
    await this.mutate({ op: "tidy" }, () => {
      for (const ifindex of this.ownedQdiscs)
        if (!this.links.some((l) => l.ifindex === ifindex)) this.ownedQdiscs.delete(ifindex);
      if (this.ownedQdiscs.size === 0) this.registry = false;
      for (const policy of this.policyDirs)
        if (!this.versions.some((v) => v.ref.policy === policy)) this.policyDirs.delete(policy);
      if (!this.registry && this.policyDirs.size === 0) this.namespaceDir = false;
    });
  }

  /** Deletes the namespace, as `ip netns del` would: links and filters go with it, pins stay. */
  deleteNamespace(): void {
    this.links = [];
    this.deleted = true;
  }

  async exists(): Promise<boolean> {
    return !this.deleted;
  }

  async forgetNamespace(): Promise<void> {
    await this.mutate({ op: "tidy" }, () => {
      this.versions = [];
      this.ownedQdiscs.clear();
      this.registry = false;
      this.namespaceDir = false;
      this.policyDirs.clear();
    });
  }

  /**
   * The runs performAll made together, as KernelDatapath's processes would
   * (a bpftool batch of loads, a tc batch of qdiscs and filters): each with
   * its operations' names.
   */
  readonly batches: DatapathOperation["op"][][] = [];

  /** Called before each mutation (1-based number): a test deletes the namespace, or waits, right there. */
  beforeMutation: ((operation: DatapathOperation, number: number) => void | Promise<void>) | undefined;

  /**
   * As KernelDatapath's: a run's leading loads go together, then its leading
   * qdiscs and filters (two processes there, whatever their number; the
   * interrupt is looked at only before each), and the rest one at a time.
   * What it leaves is what one at a time would: those before the first
   * failure done, it failed as its own method would, none after it run.
   */
  async performAll(operations: DatapathOperation[], interrupt?: AbortSignal): Promise<RunResult> {
    const leading = (from: number, ops: DatapathOperation["op"][]) => {
      const end = operations.findIndex((operation, index) => index >= from && !ops.includes(operation.op));
      return (end === -1 ? operations.length : end) - from;
    };
    const loads = leading(0, ["loadProgram"]);
    const attaches = leading(loads, ["addQdisc", "attachFilters"]);
    if (loads + attaches < 2) return performEach(this, operations, interrupt);
    for (const [start, count] of [
      [0, loads],
      [loads, attaches],
    ] as const) {
      if (count === 0) continue;
      if (interrupt?.aborted) return { done: start, error: interrupt.reason };
      this.batches.push(operations.slice(start, start + count).map((operation) => operation.op));
      for (let index = start; index < start + count; index++) {
        try {
          await perform(this, operations[index]!);
        } catch (error) {
          return { done: index, error };
        }
      }
    }
    const rest = await performEach(this, operations.slice(loads + attaches), interrupt);
    return { ...rest, done: loads + attaches + rest.done };
  }

  private async mutate(operation: DatapathOperation, change: () => void): Promise<void> {
    this.refuseAfterCrash();
    const number = this.mutations + 1;
    if (this.beforeMutation) {
      await this.beforeMutation(operation, number);
      this.refuseAfterCrash();
    }
    if (this.failing === number) {
      this.mutations = number;
      throw new Error(`injected failure at operation ${number} (${operation.op})`);
    }
    change();
    this.mutations = number;
    this.history.push({ operation: structuredClone(operation), after: this.snapshot() });
  }

  private get crashed(): boolean {
    return this.crashingAfter !== undefined && this.mutations >= this.crashingAfter;
  }

  private refuseAfterCrash(): void {
    if (this.crashed) throw new Error("the process was killed");
  }

  private link(link: LinkRef): FakeLink {
    const found = this.links.find((l) => l.ifindex === link.ifindex);
    if (!found) throw new Error(`Cannot find device "${link.name}"`);
    return found;
  }

  private cgroup(path: string): FakeCgroup {
    const found = this.cgroups.find((c) => c.path === path);
    if (!found) throw new Error(`cgroup ${path}: No such file or directory`);
    return found;
  }

  /** As the real datapath does, a cgroup made again under the same path is refused. */
  private cgroupById(ref: CgroupRef): FakeCgroup {
    const found = this.cgroup(ref.path);
    if (found.id !== ref.id)
      throw new Error(`cgroup ${ref.path} is not the one the plan was made for (id ${found.id}, not ${ref.id})`);
    return found;
  }

  private version(ref: VersionRef): FakeVersion {
    const found = this.versions.find((v) => sameVersion(v.ref, ref));
    if (!found) throw new Error(`${describeVersion(ref)} is not pinned`);
    return found;
  }
}
