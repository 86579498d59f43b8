import {
  describeEmptyPin,
  describeVersion,
  HOOKS,
  ourCgroupPrograms,
  sameVersion,
  type CgroupHook,
  type EmptyPin,
  type Hook,
  type ObservedState,
  type VersionRef,
} from "../datapath/types.js";
import { wholeCgroupSet } from "./plan-cgroups.js";

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

export function findDrift(observed: ObservedState): Drift[] {
  const drift: Drift[] = [];
  for (const program of observed.programs.filter((p) => p.contentHash === null))
    drift.push({ kind: "incomplete-version", program: program.ref });
  const versionOf = (id: number) => observed.programs.find((p) => Object.values(p.programIds).includes(id));
  for (const link of observed.links) {
    const hooks: Partial<Record<Hook, VersionRef | null>> = {};
    for (const hook of HOOKS) {
      const id = link.filters[hook];
      if (id === undefined) continue;
      const version = versionOf(id);
      hooks[hook] = version?.ref ?? null;
      // A node program the CNI plugin attached is no drift: the plan replaces it with the namespace's own.
      if (!version && !observed.nodePrograms?.has(id))
        drift.push({ kind: "unknown-program", link: link.name, hook, programId: id });
    }
    const running = Object.values(hooks).filter((ref): ref is VersionRef => ref !== null);
    const mixed = running.some((ref) => !sameVersion(ref, running[0]));
    // A version that has a program for a hook must run on both of a link's hooks it has.
    const partial =
      running.length > 0 &&
      HOOKS.some(
        (hook) =>
          hooks[hook] === undefined &&
          observed.programs.some((p) => sameVersion(p.ref, running[0]) && p.programIds[hook] !== undefined),
      );
    if (mixed || partial) drift.push({ kind: "half-switched", link: link.name, hooks });
    const ours = Object.keys(link.filters).length > 0;
    if (!ours && link.clsact && link.foreign.length === 0 && observed.ownedQdiscs.includes(link.ifindex))
      drift.push({ kind: "empty-qdisc", link: link.name });
    if (!link.clsact && observed.ownedQdiscs.includes(link.ifindex))
      drift.push({ kind: "stale-qdisc-record", link: link.name });
  }
  if (observed.emptyPins.length > 0) drift.push({ kind: "empty-pins", pins: observed.emptyPins });
  for (const cgroup of observed.cgroups) {
    const programs = ourCgroupPrograms(cgroup, observed.programs);
    if (programs.length === 0) continue;
    const mixed = programs.some(({ program }) => !sameVersion(program, programs[0]!.program));
    if (mixed || !wholeCgroupSet(programs.map(({ hook }) => hook)))
      drift.push({ kind: "cgroup-half-switched", cgroup: cgroup.path, programs });
  }
  return drift;
}

export function describeDrift(drift: Drift): string {
  switch (drift.kind) {
    case "incomplete-version":
      return `program version ${describeVersion(drift.program)} never finished loading (an interrupted apply): plan removes it`;
    case "half-switched": {
      const running = HOOKS.map(
        (hook) =>
          `${hook} ${drift.hooks[hook] ? describeVersion(drift.hooks[hook]!) : drift.hooks[hook] === null ? "an unknown program" : "nothing"}`,
      );
      return `link ${drift.link} is half-switched (${running.join(", ")}): plan switches it whole`;
    }
    case "unknown-program":
      return `link ${drift.link} ${drift.hook} runs program ${drift.programId}, which no version of ours pins: plan replaces it`;
    case "empty-qdisc":
      return `link ${drift.link} has a clsact qdisc intercept created that holds nothing (an interrupted run): plan removes or uses it`;
    case "stale-qdisc-record":
      return `link ${drift.link} has no clsact qdisc, but intercept's registry still records one there (an interrupted run): plan forgets it`;
    case "empty-pins":
      return `${drift.pins.map(describeEmptyPin).join(", ")} ${drift.pins.length === 1 ? "is" : "are"} left empty (an interrupted run): plan removes or reuses ${drift.pins.length === 1 ? "it" : "them"}`;
    case "cgroup-half-switched": {
      const running = drift.programs.map(({ hook, program }) => `${hook} ${describeVersion(program)}`);
      return `cgroup ${drift.cgroup} runs part of a program set (${running.join(", ")}; an interrupted apply): plan attaches it whole`;
    }
  }
}
