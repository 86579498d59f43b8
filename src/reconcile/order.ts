import type { PrefixEntry } from "../compile/match.js";
import { type CgroupRef, type DatapathOperation, type LinkRef } from "../datapath/types.js";
import { CGROUP_HOOKS, type CgroupHook, type Hook } from "../model/hooks.js";
import { type VersionRef } from "../model/version.js";
import type { Change, ChangeType, CgroupProgram, HookPrograms } from "../plan/model.js";

/**
 * The order apply executes a plan in, as data: one step per kernel
 * operation, each with the operation that undoes it. Phases make the
 * order gap-free — new programs are loaded before any link points at them,
 * links switch before rules flip, filters leave before their qdisc, and
 * nothing is unpinned until no link can run it any more (the commit phase,
 * which is never rolled back: past it the kernel already matches the plan).
 */
export const PHASES = ["load", "attach", "rules", "detach", "qdiscs", "commit"] as const;
export type Phase = (typeof PHASES)[number];

export interface Step {
  change: Change;
  phase: Phase;
  operation: DatapathOperation;
  /** What puts the kernel back, in order; null when nothing can (a program we never knew). */
  undo: DatapathOperation[] | null;
  /** A failure can leave this step half done (some hooks switched): undo it too. */
  undoOnFailure: boolean;
  /** This step finishes its change: the change is reported done once it is. */
  completes: boolean;
}

type Operation = Omit<Step, "change" | "completes" | "undoOnFailure"> & {
  completes?: boolean;
  undoOnFailure?: boolean;
};

/**
 * Hooks are switched egress first and removed ingress first: a rewrite
 * rule's replies are then always rewritten while its requests may be, so
 * the moment between the two tc operations never sends a client a reply
 * from a port it did not ask for.
 */
const ATTACH_ORDER: readonly Hook[] = ["egress", "ingress"];
const DETACH_ORDER: readonly Hook[] = ["ingress", "egress"];

/** What a version is loaded from: its object file, and what its prefix tries start with. */
export interface LoadSource {
  objectPath: string;
  prefixes: PrefixEntry[];
}

/** Where the objects for versions to load are: resolved before apply starts. */
export type ObjectFor = (contentHash: string) => LoadSource;

/**
 * How each change type becomes operations. A mapped type: a new change type
 * without an entry here does not compile.
 */
const EXPAND: { [T in ChangeType]: (change: Extract<Change, { type: T }>, objectFor: ObjectFor) => Operation[] } = {
  "program.create": (change, objectFor) => [load(change, objectFor)],
  "program.replace": (change, objectFor) => [
    { ...load(change, objectFor), completes: true },
    { phase: "commit", operation: { op: "unloadProgram", ref: change.replaces }, undo: null, completes: false },
  ],
  "program.delete": (change) => [
    { phase: "commit", operation: { op: "unloadProgram", ref: change.program }, undo: null },
  ],
  "attachment.create": (change) => [
    ...(change.addQdisc
      ? [
          {
            phase: "attach" as const,
            operation: { op: "addQdisc" as const, link: change.link },
            undo: [{ op: "removeQdisc" as const, link: change.link }],
          },
        ]
      : []),
    attach(change.link, change.hooks, change.program, {}),
  ],
  "attachment.update": (change) => [
    attach(change.link, change.hooks, change.program, change.from),
    ...detach(change.link, change.detach, change.from, "attach"),
  ],
  "attachment.delete": (change) => [
    ...detach(
      change.link,
      DETACH_ORDER.filter((hook) => hook in change.from),
      change.from,
      "detach",
    ),
    ...(change.removeQdisc
      ? [
          {
            phase: "detach" as const,
            operation: { op: "removeQdisc" as const, link: change.link },
            undo: [{ op: "addQdisc" as const, link: change.link }],
          },
        ]
      : []),
  ],
  "rule.update": (change) => [
    {
      phase: "rules",
      operation: { op: "setRule", program: change.program, index: change.index, enabled: change.enabled },
      undo: [{ op: "setRule", program: change.program, index: change.index, enabled: !change.enabled }],
    },
  ],
  "qdisc.delete": (change) => [
    {
      phase: "qdiscs",
      operation: { op: "removeQdisc", link: change.link },
      undo: [{ op: "addQdisc", link: change.link }],
    },
  ],
  "cgroup.create": (change) => attachToCgroup(change.cgroup, change.hooks, change.program),
  // The new program on each hook first, beside the old (multi); the old ones leave once every new one runs.
  "cgroup.update": (change) => [
    ...attachToCgroup(change.cgroup, change.attach, change.program),
    ...detachFromCgroup(change.cgroup, change.detach),
  ],
  "cgroup.delete": (change) => detachFromCgroup(change.cgroup, change.detach),
  // Records and empty pins go last, once nothing of the plan needs them.
  "registry.update": (change) => [
    { phase: "commit", operation: { op: "forgetQdiscs", ifindexes: change.forget }, undo: null },
  ],
  "pins.delete": () => [{ phase: "commit", operation: { op: "tidy" }, undo: null }],
  "exemption.update": (change) => [
    {
      phase: "rules",
      operation: { op: "setExemptCgroups", program: change.program, cgroups: change.cgroups },
      undo: [{ op: "setExemptCgroups", program: change.program, cgroups: change.from }],
    },
  ],
};

/**
 * Cgroup programs are attached in CGROUP_HOOKS order (records are tied and
 * answered before connect() is captured) and detached in reverse (capture
 * stops first). Each is one kernel operation with an exact undo; there is
 * no atomic replace through bpftool 7.1 (BPF_F_REPLACE is not exposed), so
 * a switch runs both versions side by side for a moment instead of neither.
 */
function attachToCgroup(cgroup: CgroupRef, hooks: CgroupHook[], program: VersionRef): Operation[] {
  return CGROUP_HOOKS.filter((hook) => hooks.includes(hook)).map((hook) => ({
    phase: "attach",
    operation: { op: "attachCgroupProgram", cgroup, hook, program },
    undo: [{ op: "detachCgroupProgram", cgroup, hook, program }],
  }));
}

function detachFromCgroup(cgroup: CgroupRef, programs: CgroupProgram[]): Operation[] {
  const order = [...CGROUP_HOOKS].reverse();
  return [...programs]
    .sort((a, b) => order.indexOf(a.hook) - order.indexOf(b.hook))
    .map(({ hook, program }) => ({
      phase: "detach",
      operation: { op: "detachCgroupProgram", cgroup, hook, program },
      undo: [{ op: "attachCgroupProgram", cgroup, hook, program }],
    }));
}

function load(
  change: Extract<Change, { type: "program.create" | "program.replace" }>,
  objectFor: ObjectFor,
): Operation {
  return {
    phase: "load",
    operation: {
      op: "loadProgram",
      load: {
        ref: change.program,
        contentHash: change.contentHash,
        ...objectFor(change.contentHash),
        hooks: change.hooks,
        enabled: change.enabled,
        ...(change.cgroupHooks && { cgroupHooks: change.cgroupHooks, exemptCgroups: change.exemptCgroups ?? [] }),
      },
    },
    undo: [{ op: "unloadProgram", ref: change.program }],
  };
}

/** All of a link's hooks in one operation: the window between them is as short as tc allows. */
function attach(link: LinkRef, hooks: Hook[], program: VersionRef, from: HookPrograms): Operation {
  const ordered = ATTACH_ORDER.filter((hook) => hooks.includes(hook));
  return {
    phase: "attach",
    operation: { op: "attachFilters", link, program, hooks: ordered },
    undo: restore(link, ordered, from),
    undoOnFailure: true,
  };
}

function detach(link: LinkRef, hooks: Hook[], from: HookPrograms, phase: Phase): Operation[] {
  return DETACH_ORDER.filter((hook) => hooks.includes(hook)).map((hook) => {
    const previous = from[hook];
    return {
      phase,
      operation: { op: "detachFilter", link, hook },
      undo: previous ? [{ op: "attachFilters", link, program: previous, hooks: [hook] }] : null,
    };
  });
}

/** Undoing an attach: each hook back to what it ran, or no filter if it ran none. */
function restore(link: LinkRef, hooks: Hook[], from: HookPrograms): DatapathOperation[] | null {
  const undo: DatapathOperation[] = [];
  for (const hook of DETACH_ORDER.filter((h) => hooks.includes(h))) {
    const previous = from[hook];
    if (previous === null) return null; // a program no version of ours pins cannot be put back
    undo.push(
      previous === undefined
        ? { op: "detachFilter", link, hook }
        : { op: "attachFilters", link, program: previous, hooks: [hook] },
    );
  }
  return undo;
}

/** The plan's changes as steps in execution order: by phase, then in plan order. */
export function orderSteps(changes: Change[], objectFor: ObjectFor): Step[] {
  const steps = changes.flatMap((change) => {
    const operations = (EXPAND[change.type] as (change: Change, objectFor: ObjectFor) => Operation[])(
      change,
      objectFor,
    );
    const last = operations.length - 1;
    return operations.map(({ completes, undoOnFailure, ...operation }, index) => ({
      ...operation,
      change,
      undoOnFailure: undoOnFailure ?? false,
      completes: completes ?? index === last,
    }));
  });
  return steps
    .map((step, position) => ({ step, position }))
    .sort((a, b) => PHASES.indexOf(a.step.phase) - PHASES.indexOf(b.step.phase) || a.position - b.position)
    .map(({ step }) => step);
}
