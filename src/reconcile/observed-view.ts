import {
  cgroupProgramOwner,
  type ObservedCgroup,
  type ObservedLink,
  type ObservedProgram,
  type ObservedState,
} from "../datapath/types.js";
import { HOOKS, type Hook } from "../model/hooks.js";
import { sameVersion } from "../model/version.js";
import { type CgroupAttachment } from "../kernel/cgroups.js";
import type { CgroupProgram, HookPrograms } from "../plan/model.js";
import { wholeCgroupSet } from "./make-plan-cgroups.js";

/**
 * What runs where, read once from what the kernel reported: the version
 * on each hook of each link, whether a link is half switched, whose clsact
 * qdisc is empty, which programs on a cgroup are ours. `plan` repairs from
 * it, `status` and drift (drift.ts) report from it: one answer to each of
 * these questions, so what status calls drift is what plan repairs.
 */
export interface ObservedView {
  observed: ObservedState;
  links: LinkView[];
  cgroups: CgroupView[];
  /** Versions whose load never finished (no content hash). */
  incomplete: ObservedProgram[];
}

export interface LinkView {
  link: ObservedLink;
  /** The version each of our hooks runs; null for a program no pinned version of ours has. */
  running: HookPrograms;
  /** Our hooks whose program no version of ours pins, with its id. */
  unknown: { hook: Hook; programId: number }[];
  /** Its hooks run different versions, or a version runs on one hook of two it has (an interrupted switch). */
  halfSwitched: boolean;
  /** A clsact qdisc intercept created, holding no filter of anyone's. */
  emptyOwnedQdisc: boolean;
  /** The registry records a qdisc of ours that the link no longer has. */
  staleQdiscRecord: boolean;
}

export interface CgroupView {
  cgroup: ObservedCgroup;
  /** Our programs on it: which version on which hook. */
  ours: CgroupProgram[];
  /** Programs intercept did not attach, left alone. */
  foreign: CgroupAttachment[];
  /** Ours are of two versions, or part of one version's set (an interrupted switch). */
  halfSwitched: boolean;
}

export function viewOf(observed: ObservedState): ObservedView {
  const byId = programsById(observed.programs);
  return {
    observed,
    links: observed.links.map((link) => linkView(link, observed, byId)),
    cgroups: observed.cgroups.map((cgroup) => cgroupView(cgroup, observed.programs)),
    incomplete: observed.programs.filter((program) => program.contentHash === null),
  };
}

function linkView(link: ObservedLink, observed: ObservedState, byId: Map<number, ObservedProgram>): LinkView {
  const running: HookPrograms = {};
  const unknown: LinkView["unknown"] = [];
  for (const hook of HOOKS) {
    const id = link.filters[hook];
    if (id === undefined) continue;
    running[hook] = byId.get(id)?.ref ?? null;
    // A node program the CNI plugin attached is no drift: the plan replaces it with the namespace's own.
    if (!byId.has(id) && !observed.nodePrograms?.has(id)) unknown.push({ hook, programId: id });
  }
  const owned = observed.ownedQdiscs.includes(link.ifindex);
  const ours = Object.keys(link.filters).length > 0;
  return {
    link,
    running,
    unknown,
    halfSwitched: halfSwitched(running, observed.programs),
    emptyOwnedQdisc: owned && link.clsact && !ours && link.foreign.length === 0,
    staleQdiscRecord: owned && !link.clsact,
  };
}

/**
 * Whether a link is half-switched by an interrupted apply: its hooks run
 * different programs, or one runs nothing although the version running on
 * the other has a program for it. A hook the running version has no
 * program for (a steer-only policy's egress) is not half of anything: a
 * new version adds it.
 */
function halfSwitched(from: HookPrograms, programs: readonly ObservedProgram[]): boolean {
  const running = HOOKS.filter((hook) => hook in from).map((hook) => from[hook]);
  if (running.length === 0) return false;
  const first = running[0];
  if (running.some((ref) => (ref && first ? !sameVersion(ref, first) : ref !== first))) return true;
  const version = first ? programs.find((p) => sameVersion(p.ref, first)) : undefined;
  return HOOKS.some((hook) => !(hook in from) && version?.programIds[hook] !== undefined);
}

function cgroupView(cgroup: ObservedCgroup, programs: readonly ObservedProgram[]): CgroupView {
  const ours: CgroupProgram[] = [];
  const foreign: CgroupAttachment[] = [];
  for (const attachment of cgroup.attached) {
    const owner = cgroupProgramOwner(programs, attachment.programId);
    if (owner && owner.hook === attachment.hook) ours.push({ hook: owner.hook, program: owner.program.ref });
    else foreign.push(attachment);
  }
  const mixed = ours.some(({ program }) => !sameVersion(program, ours[0]!.program));
  return {
    cgroup,
    ours,
    foreign,
    halfSwitched: ours.length > 0 && (mixed || !wholeCgroupSet(ours.map(({ hook }) => hook))),
  };
}

function programsById(programs: readonly ObservedProgram[]): Map<number, ObservedProgram> {
  const byId = new Map<number, ObservedProgram>();
  for (const program of programs)
    for (const id of Object.values(program.programIds)) if (id !== undefined) byId.set(id, program);
  return byId;
}
