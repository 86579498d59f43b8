import { unreachable } from "../errors.js";
import type { CgroupAttachment } from "../kernel/cgroups.js";
import type { Listener } from "../kernel/sockets.js";
import type { PrefixEntry } from "../model/bpf-abi.js";
import type { CounterSlot } from "../model/counters.js";
import { CGROUP_HOOKS, type CgroupHook, type Hook } from "../model/hooks.js";
import type { NetworkNamespace } from "../model/namespace.js";
import type { VersionRef } from "../model/version.js";

// The shared vocabulary lives in src/model/; re-exported for the datapath's users.

/** A link, by the index the kernel uses and the name people use. */
export interface LinkRef {
  ifindex: number;
  name: string;
}

export interface ObservedLink extends LinkRef {
  loopback: boolean;
  /** The kernel's link type (`ip -j link`'s link_type): "ether", "loopback", "none", … */
  linkType: string;
  /** Whether the link has a clsact qdisc, whoever made it. */
  clsact: boolean;
  /** Program id of intercept's filter on each hook (our pref and handle, our program name). */
  filters: Partial<Record<Hook, number>>;
  /** Other filters on the link: left alone, but one in intercept's slot blocks an attach. */
  foreign: ForeignFilter[];
}

export interface ForeignFilter {
  hook: Hook;
  pref: number;
  handle: string | undefined;
  kind: string;
  programName: string | undefined;
  /** Holds the pref and handle intercept attaches with. */
  inOurSlot: boolean;
}

/**
 * A cgroup, by the path the policy names (relative to the cgroup2 mount)
 * and the id it has now (the inode of its directory): a cgroup removed and
 * made again under the same path is another cgroup, without our programs.
 */
export interface CgroupRef {
  path: string;
  id: number;
}

/** How the programs recognise an exempt cgroup: its id and its depth below the root (the root is 0). */
export interface CgroupIdentity {
  id: number;
  level: number;
}

export interface ObservedCgroup extends CgroupRef {
  level: number;
  /** Every program attached to it, in the kernel's order for each attach point. */
  attached: CgroupAttachment[];
}

export interface ObservedProgram {
  ref: VersionRef;
  /**
   * The content hash recorded in the version's policy_meta map, written last
   * when it is loaded; null when the load never finished (a crash or a
   * failure mid-load), which makes the version incomplete.
   */
  contentHash: string | null;
  /** Program id per hook the version has pinned. */
  programIds: Partial<Record<Hook, number>>;
  /** rule_state: the enabled flag of each rule. */
  enabled: boolean[];
  /** Program id per cgroup hook the version has pinned (a policy with an outbound section). */
  cgroupProgramIds: Partial<Record<CgroupHook, number>>;
  /** exempt_cgroups: the cgroups its outbound programs leave alone, by id (unused slots left out). */
  exemptCgroups: CgroupIdentity[];
}

/** What the kernel holds for intercept in one network namespace: the truth, not a state file. */
export interface ObservedState {
  netns: NetworkNamespace;
  /** The namespace's identity (its inode), naming its pin directory. */
  namespaceKey: string;
  links: ObservedLink[];
  programs: ObservedProgram[];
  /** Links whose clsact qdisc intercept created (by ifindex), including links gone since. */
  ownedQdiscs: number[];
  /** Pins of ours that hold nothing (an interrupted destroy or unload leaves them): tidy removes them. */
  emptyPins: EmptyPin[];
  /** Where the cgroup2 hierarchy is mounted; null when it is not. */
  cgroupRoot: string | null;
  /**
   * The cgroups that matter: every one running a program of ours, and every
   * one the caller asked about that exists (a cgroup a policy names and the
   * kernel lacks is simply absent).
   */
  cgroups: ObservedCgroup[];
  /** The sockets listening in the namespace, when asked for (ObserveInterest.listeners). */
  listeners?: Listener[];
  /**
   * The node's programs by id (`agent --cni`'s node table), which the CNI
   * plugin attaches before the agent serves a namespace: a filter running
   * one is ours, replaced in place by the namespace's own version.
   */
  nodePrograms?: ReadonlyMap<number, VersionRef>;
}

/**
 * A pin of ours that holds nothing: the owned-qdisc registry with no
 * record, a policy's directory with no version, the namespace's directory
 * with nothing in it. Named by kind, never by path: the datapath derives
 * the paths.
 */
export type EmptyPin = { kind: "registry" } | { kind: "policy"; policy: string } | { kind: "namespace" };

export function describeEmptyPin(pin: EmptyPin): string {
  switch (pin.kind) {
    case "registry":
      return "the qdisc registry";
    case "policy":
      return `policy ${pin.policy}'s directory`;
    case "namespace":
      return "the namespace's pin directory";
    default:
      return unreachable(pin);
  }
}

/** What observe() should look at besides what intercept already runs. */
export interface ObserveInterest {
  /** cgroup paths the policies name (relative to the cgroup2 mount). */
  cgroups?: readonly string[];
  /** Whether to list the sockets listening in the namespace (plan's warnings about proxies). */
  listeners?: boolean;
}

/** Packets and bytes of one counter, summed over CPUs. */
export interface Counter {
  packets: number;
  bytes: number;
}

/** A rule's counters, by slot of the rule_counters layout (src/model/counters.ts). */
export type RuleCounters = Record<CounterSlot, Counter>;

/** A version to load: which, from which object file, with which rule switches and prefix lists. */
/** How a namespace's datapath is opened. */
export interface DatapathOptions {
  /**
   * Pin a version another namespace has loaded (same content hash and
   * switches, tc programs only) instead of loading it again: load once,
   * attach everywhere (src/datapath/shared-versions.ts). On unless off.
   */
  loadOnce?: boolean;
}

export interface ProgramLoad {
  ref: VersionRef;
  contentHash: string;
  objectPath: string;
  /** The hooks the object has programs for. */
  hooks: Hook[];
  enabled: boolean[];
  /** What the version's prefix tries hold (src/model/bpf-abi.ts), written before its content hash. */
  prefixes: PrefixEntry[];
  /** The cgroup hooks the object has programs for (a policy with an outbound section: all of them). */
  cgroupHooks?: CgroupHook[];
  /** Written into exempt_cgroups, slot by slot, before the version is complete. */
  exemptCgroups?: CgroupIdentity[];
}

/**
 * Everything intercept does to the kernel, one operation per method, for
 * one network namespace. Reconcile decides what and in which order; a
 * datapath only does it. KernelDatapath runs bpftool, tc and ip; tests use
 * an in-memory fake that records the order of operations and fails on
 * command.
 *
 * Every mutation is all-or-nothing as far as the kernel allows: a method
 * that fails leaves nothing half-made behind it (loadProgram removes a
 * partial load, addQdisc forgets a qdisc it could not create).
 */
export interface Datapath {
  readonly netns: NetworkNamespace;
  observe(interest?: ObserveInterest): Promise<ObservedState>;
  /** Each rule's counters; throws when they cannot be read (callers say so, never print zeros). */
  readCounters(program: VersionRef, rules: number): Promise<RuleCounters[]>;
  /** Loads and pins a version, fills its rule switches, and records its content hash last. */
  loadProgram(load: ProgramLoad): Promise<void>;
  /** Unpins a version; the kernel frees it once no filter runs it. */
  unloadProgram(ref: VersionRef): Promise<void>;
  /** Creates the link's clsact qdisc, recording first that intercept owns it. */
  addQdisc(link: LinkRef): Promise<void>;
  /** Removes a clsact qdisc intercept created, then forgets it. */
  removeQdisc(link: LinkRef): Promise<void>;
  /** Forgets the registry's records of these links' qdiscs, which are gone (records already gone are let be). */
  forgetQdiscs(ifindexes: number[]): Promise<void>;
  /**
   * Points our filter on each of @hooks, in that order, at @program's program
   * for the hook: attached, or swapped atomically where one is. All hooks in
   * one go, so the moment a link runs two versions is as short as the kernel
   * allows; a failure may leave the first hooks switched (undo restores them).
   */
  attachFilters(link: LinkRef, program: VersionRef, hooks: Hook[]): Promise<void>;
  detachFilter(link: LinkRef, hook: Hook): Promise<void>;
  /** A live edit: one rule's enabled flag, read by the running program at its next packet. */
  setRule(program: VersionRef, index: number, enabled: boolean): Promise<void>;
  /**
   * Attaches @program's program for @hook to @cgroup beside whatever runs
   * there (BPF_F_ALLOW_MULTI): nothing attached is replaced or reordered.
   * Refuses a cgroup that is not @cgroup.id any more.
   */
  attachCgroupProgram(cgroup: CgroupRef, hook: CgroupHook, program: VersionRef): Promise<void>;
  /** Detaches @program's program for @hook from @cgroup; other programs there stay as they are. */
  detachCgroupProgram(cgroup: CgroupRef, hook: CgroupHook, program: VersionRef): Promise<void>;
  /** A live edit: the exempt cgroups a version's outbound programs leave alone, slot by slot. */
  setExemptCgroups(program: VersionRef, cgroups: CgroupIdentity[]): Promise<void>;
  /** Forgets owned-qdisc records of links that are gone and removes pin directories left empty. */
  tidy(): Promise<void>;
  /** The namespace is gone (and its links with it): unpins everything intercept kept for it. */
  forgetNamespace(): Promise<void>;
  /** Whether the namespace still exists. */
  exists(): Promise<boolean>;
  /**
   * Performs @operations in order, as perform() would one at a time, in as
   * few processes as the tools allow (optional: performAll() falls back to
   * one at a time). Stops at the first that fails: those before it are
   * done, it failed as its own method would have (leaving nothing
   * half-made but what an undo on failure covers), none after it changed
   * anything. Once @interrupt is aborted no further process is started:
   * the next operation "fails" with its reason.
   */
  performAll?(operations: DatapathOperation[], interrupt?: AbortSignal): Promise<RunResult>;
}

/** How far a run of operations got: @done of them, then the one after them failed with @error (if any did). */
export interface RunResult {
  done: number;
  error?: unknown;
}

/** The datapath operations that change the kernel, as data: what the fake records, what steps hold. */
export type DatapathOperation =
  | { op: "loadProgram"; load: ProgramLoad }
  | { op: "unloadProgram"; ref: VersionRef }
  | { op: "addQdisc"; link: LinkRef }
  | { op: "removeQdisc"; link: LinkRef }
  | { op: "forgetQdiscs"; ifindexes: number[] }
  | { op: "attachFilters"; link: LinkRef; program: VersionRef; hooks: Hook[] }
  | { op: "detachFilter"; link: LinkRef; hook: Hook }
  | { op: "setRule"; program: VersionRef; index: number; enabled: boolean }
  | { op: "attachCgroupProgram"; cgroup: CgroupRef; hook: CgroupHook; program: VersionRef }
  | { op: "detachCgroupProgram"; cgroup: CgroupRef; hook: CgroupHook; program: VersionRef }
  | { op: "setExemptCgroups"; program: VersionRef; cgroups: CgroupIdentity[] }
  | { op: "tidy" };

/** Performs one operation on @datapath: the only place that maps operations to methods. */
export async function perform(datapath: Datapath, operation: DatapathOperation): Promise<void> {
  switch (operation.op) {
    case "loadProgram":
      return datapath.loadProgram(operation.load);
    case "unloadProgram":
      return datapath.unloadProgram(operation.ref);
    case "addQdisc":
      return datapath.addQdisc(operation.link);
    case "removeQdisc":
      return datapath.removeQdisc(operation.link);
    case "forgetQdiscs":
      return datapath.forgetQdiscs(operation.ifindexes);
    case "attachFilters":
      return datapath.attachFilters(operation.link, operation.program, operation.hooks);
    case "detachFilter":
      return datapath.detachFilter(operation.link, operation.hook);
    case "setRule":
      return datapath.setRule(operation.program, operation.index, operation.enabled);
    case "attachCgroupProgram":
      return datapath.attachCgroupProgram(operation.cgroup, operation.hook, operation.program);
    case "detachCgroupProgram":
      return datapath.detachCgroupProgram(operation.cgroup, operation.hook, operation.program);
    case "setExemptCgroups":
      return datapath.setExemptCgroups(operation.program, operation.cgroups);
    case "tidy":
      return datapath.tidy();
    default:
      return unreachable(operation);
  }
}

/** @operations on @datapath, together where it can (Datapath.performAll), else one at a time. */
export async function performAll(
  datapath: Datapath,
  operations: DatapathOperation[],
  interrupt?: AbortSignal,
): Promise<RunResult> {
  return datapath.performAll
    ? datapath.performAll(operations, interrupt)
    : performEach(datapath, operations, interrupt);
}

/** @operations one at a time, stopping at the first that fails, or before the next once @interrupt is aborted. */
export async function performEach(
  datapath: Datapath,
  operations: DatapathOperation[],
  interrupt?: AbortSignal,
): Promise<RunResult> {
  for (const [index, operation] of operations.entries()) {
    try {
      interrupt?.throwIfAborted();
      await perform(datapath, operation);
    } catch (error) {
      return { done: index, error };
    }
  }
  return { done: operations.length };
}

/** The version of ours whose program @programId is, and for which cgroup hook; undefined for another's program. */
export function cgroupProgramOwner(
  programs: readonly ObservedProgram[],
  programId: number,
): { program: ObservedProgram; hook: CgroupHook } | undefined {
  for (const program of programs) {
    for (const hook of CGROUP_HOOKS) if (program.cgroupProgramIds[hook] === programId) return { program, hook };
  }
  return undefined;
}

/** The programs of ours on @cgroup: which version runs on which hook (one hook may run two after an interrupted switch). */
export function ourCgroupPrograms(
  cgroup: ObservedCgroup,
  programs: readonly ObservedProgram[],
): { hook: CgroupHook; program: VersionRef }[] {
  return cgroup.attached.flatMap((attachment) => {
    const owner = cgroupProgramOwner(programs, attachment.programId);
    return owner && owner.hook === attachment.hook ? [{ hook: owner.hook, program: owner.program.ref }] : [];
  });
}
