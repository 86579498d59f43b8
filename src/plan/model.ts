import type { CgroupIdentity, CgroupRef, EmptyPin, LinkRef } from "../datapath/types.js";
import { unreachable } from "../errors.js";
import type { CgroupHook, Hook } from "../model/hooks.js";
import type { NetworkNamespace } from "../model/namespace.js";
import type { ReasonCode } from "../model/reasons.js";
import type { VersionRef } from "../model/version.js";

/**
 * A plan is data: the changes that take the kernel to the policies, one
 * type per resource kind and action, each holding exactly what it needs.
 * `plan` renders it, `apply` and the agent execute it, saved plans store it.
 * Adding a resource kind means adding its change types here; the compiler
 * then points at every switch and table that must learn them (ordering,
 * execution, rendering).
 *
 * Addresses: program.<policy>, attachment.<link>, rule.<policy>[<index>],
 * qdisc.<link>, cgroup.<path>, exemption.<policy>, registry (the
 * owned-qdisc registry), pins (pins left empty) (src/model/addresses.ts
 * formats and parses them). No change holds a pin
 * path: the datapath derives those (a cgroup's path is relative to the
 * cgroup2 mount, and checked again before use).
 */
export type Change =
  | ProgramCreate
  | ProgramReplace
  | ProgramDelete
  | AttachmentCreate
  | AttachmentUpdate
  | AttachmentDelete
  | RuleUpdate
  | QdiscDelete
  | RegistryUpdate
  | PinsDelete
  | CgroupCreate
  | CgroupUpdate
  | CgroupDelete
  | ExemptionUpdate;

export type ChangeType = Change["type"];

interface ChangeBase {
  address: string;
  /** Why, as a stable code: what saved plans compare and `plan --json` prints. */
  reasonCode: ReasonCode;
  /** Why, in words, for the rendered plan: display only, never decided on. */
  reason: string;
}

/** The program version a create or replace loads. */
interface NewVersion {
  program: VersionRef;
  contentHash: string;
  hooks: Hook[];
  /** Each rule's switch, written into the new version before any link runs it. */
  enabled: boolean[];
  /** A policy with an outbound section: its cgroup programs, and the exempt cgroups they leave alone. */
  cgroupHooks?: CgroupHook[];
  exemptCgroups?: CgroupIdentity[];
}

/** Loads a policy's program version that no link runs yet. */
export interface ProgramCreate extends ChangeBase, NewVersion {
  type: "program.create";
}

/** Loads a new version beside @replaces; links switch to it, then @replaces is unpinned. */
export interface ProgramReplace extends ChangeBase, NewVersion {
  type: "program.replace";
  replaces: VersionRef;
}

/** Unpins a version no policy wants (stale, or left incomplete by an interrupted load). */
export interface ProgramDelete extends ChangeBase {
  type: "program.delete";
  program: VersionRef;
}

/** Our filters on a link that has none yet, creating its clsact qdisc when it has none. */
export interface AttachmentCreate extends ChangeBase {
  type: "attachment.create";
  link: LinkRef;
  program: VersionRef;
  hooks: Hook[];
  addQdisc: boolean;
}

/** Points a link's filters at @program (swapped in place), and removes ours from hooks it does not use. */
export interface AttachmentUpdate extends ChangeBase {
  type: "attachment.update";
  link: LinkRef;
  program: VersionRef;
  hooks: Hook[];
  /** What each hook of ours runs now (undefined: an unknown program), to switch back on rollback. */
  from: HookPrograms;
  /** Hooks of ours that @program does not use. */
  detach: Hook[];
}

/** Removes our filters from a link no policy selects, and the clsact qdisc if we made it. */
export interface AttachmentDelete extends ChangeBase {
  type: "attachment.delete";
  link: LinkRef;
  from: HookPrograms;
  removeQdisc: boolean;
}

/** A live edit: one rule's enabled flag in a version that stays. */
export interface RuleUpdate extends ChangeBase {
  type: "rule.update";
  program: VersionRef;
  index: number;
  enabled: boolean;
}

/** Removes a clsact qdisc intercept created that holds no filter any more (left by an interrupted run). */
export interface QdiscDelete extends ChangeBase {
  type: "qdisc.delete";
  link: LinkRef;
}

/**
 * Forgets the registry's records of qdiscs that are gone: their link was
 * deleted, or a run was killed between removing a qdisc and forgetting it.
 * Collected by the next reconcile, whatever else it changes.
 */
export interface RegistryUpdate extends ChangeBase {
  type: "registry.update";
  /** The links (by ifindex) whose records go. */
  forget: number[];
}

/** Removes pins of ours that hold nothing (left by an interrupted destroy or unload). */
export interface PinsDelete extends ChangeBase {
  type: "pins.delete";
  pins: EmptyPin[];
}

/**
 * A policy's cgroup programs on a cgroup that runs none of ours yet: all
 * four on a cgroup it captures, getsockopt alone on an exempt one (where
 * the proxy's accepted sockets are). Attached beside any other programs
 * there, hook by hook in CGROUP_HOOKS order, so records are tied and
 * answered before connections are captured.
 */
export interface CgroupCreate extends ChangeBase {
  type: "cgroup.create";
  cgroup: CgroupRef;
  program: VersionRef;
  hooks: CgroupHook[];
}

/**
 * Switches a cgroup to @program: each of @attach gets the new program
 * beside the old one (BPF_F_ALLOW_MULTI) before @detach are detached, so no
 * connect() finds no program. Also what puts right a cgroup an interrupted
 * apply left half-attached or running two versions.
 */
export interface CgroupUpdate extends ChangeBase {
  type: "cgroup.update";
  cgroup: CgroupRef;
  program: VersionRef;
  attach: CgroupHook[];
  detach: CgroupProgram[];
}

/** Detaches our programs from a cgroup no policy names any more; others' stay. */
export interface CgroupDelete extends ChangeBase {
  type: "cgroup.delete";
  cgroup: CgroupRef;
  detach: CgroupProgram[];
}

/** A live edit: the ids of a version's exempt cgroups, when one was removed and made again (a new id). */
export interface ExemptionUpdate extends ChangeBase {
  type: "exemption.update";
  program: VersionRef;
  cgroups: CgroupIdentity[];
  /** What the version holds now, to put back on rollback. */
  from: CgroupIdentity[];
}

/**
 * What an interrupted run (a crash, a kill -9, a power cut) can leave in
 * the kernel, recognised from the kernel alone: every step intercept takes
 * is either atomic or leaves a mark — a version's content hash is written
 * last, a qdisc is recorded before it is created, a cgroup's programs are
 * either all four or getsockopt alone. `status` shows these;
 * `plan` repairs each of them (plan.ts).
 */
export type Drift =
  | { kind: "incomplete-version"; program: VersionRef }
  | { kind: "half-switched"; link: string; hooks: Partial<Record<Hook, VersionRef | null>> }
  | { kind: "unknown-program"; link: string; hook: Hook; programId: number }
  | { kind: "empty-qdisc"; link: string }
  /** The registry records a qdisc of ours on a link that has none (a removal killed before it forgot it). */
  | { kind: "stale-qdisc-record"; link: string }
  /** Pins of ours that hold nothing (an interrupted destroy or unload). */
  | { kind: "empty-pins"; pins: EmptyPin[] }
  /** A cgroup running programs of two versions (a switch cut short), or part of one version's set. */
  | { kind: "cgroup-half-switched"; cgroup: string; programs: { hook: CgroupHook; program: VersionRef }[] };

/** One of our programs on a cgroup: the version it belongs to and the hook it runs on. */
export interface CgroupProgram {
  hook: CgroupHook;
  program: VersionRef;
}

/** The hooks of ours on a link, each with the version it runs (null: a program no version of ours pins). */
export type HookPrograms = Partial<Record<Hook, VersionRef | null>>;

export interface Plan {
  /** The namespace the plan is for. */
  netns: NetworkNamespace;
  changes: Change[];
  /**
   * What an interrupted run left in the kernel, as the plan found it: the
   * changes repair each of these. `status` shows the same list. Not saved
   * with a plan.
   */
  drift: Drift[];
  /**
   * What applying would do that the policies probably did not mean, found
   * in the namespace as it is now (a proxy not listening yet): told, never
   * decided on: selectors that match nothing here, and, when the plan was
   * made with the namespace's listeners observed, proxies not listening.
   * Not saved with a plan.
   */
  warnings: PlanWarning[];
}

/** A warning about the namespace as the plan finds it; each names the rule it is about. */
export type PlanWarning =
  /** A steer rule with onProxyDown: drop, and nothing listening on its port: new connections to it would be dropped. */
  | { kind: "proxy-not-listening"; policy: string; rule: number; port: number; originalPorts: string; links: string[] }
  /** An outbound rule whose proxy port nothing listens on: the connections it captures would be refused. */
  | {
      kind: "outbound-proxy-not-listening";
      policy: string;
      rule: number;
      port: number;
      originalPort: number;
      cgroups: string[];
    }
  /**
   * An outbound rule's proxy port has a listener in a cgroup outside every
   * captured and exempt cgroup: no getsockopt program of ours runs there.
   */
  | { kind: "outbound-proxy-uncaptured"; policy: string; rule: number; port: number; listenerCgroups: string[] }
  /** A policy's `namespaces` match no name of the namespace planned: it is left out here. */
  | {
      kind: "namespaces-match-nothing";
      policy: string;
      file: string;
      namespaces: string[];
      /** The namespace's name; undefined for the host's own namespace, which has none. */
      namespace: string | undefined;
      suggestion: string | undefined;
    }
  /** One of a policy's `interfaces.include` entries matches no link here. */
  | {
      kind: "interfaces-match-nothing";
      policy: string;
      file: string;
      include: string;
      /** The links intercept can serve here. */
      links: string[];
      suggestion: string | undefined;
    };

export type Action = "create" | "update" | "replace" | "delete";

export function actionOf(change: Change): Action {
  switch (change.type) {
    case "program.create":
    case "attachment.create":
    case "cgroup.create":
      return "create";
    case "attachment.update":
    case "rule.update":
    case "cgroup.update":
    case "exemption.update":
    case "registry.update":
      return "update";
    case "program.replace":
      return "replace";
    case "program.delete":
    case "attachment.delete":
    case "qdisc.delete":
    case "cgroup.delete":
    case "pins.delete":
      return "delete";
    default:
      return unreachable(change);
  }
}

export interface PlanSummary {
  add: number;
  change: number;
  destroy: number;
}

/** Terraform's counting: a replace adds one and destroys one. */
export function summarise(plan: Plan): PlanSummary {
  const summary = { add: 0, change: 0, destroy: 0 };
  for (const change of plan.changes) {
    const action = actionOf(change);
    if (action === "create" || action === "replace") summary.add++;
    if (action === "delete" || action === "replace") summary.destroy++;
    if (action === "update") summary.change++;
  }
  return summary;
}
