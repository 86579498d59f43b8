import { describeEmptyPin, type ObservedState } from "../datapath/types.js";
import { describeVersion } from "../model/version.js";
import { HOOKS } from "../model/hooks.js";
import type { Drift } from "../plan/model.js";
import { viewOf, type ObservedView } from "./observed-view.js";

// What an interrupted run leaves: a type of the plan (it travels with the changes that repair it).

/** The drift in @observed, read through its one view (observed-view.ts): what plan repairs, as status shows it. */
export function findDrift(observed: ObservedState, view: ObservedView = viewOf(observed)): Drift[] {
  const drift: Drift[] = [];
  for (const program of view.incomplete) drift.push({ kind: "incomplete-version", program: program.ref });
  for (const link of view.links) {
    const name = link.link.name;
    for (const { hook, programId } of link.unknown)
      drift.push({ kind: "unknown-program", link: name, hook, programId });
    if (link.halfSwitched) drift.push({ kind: "half-switched", link: name, hooks: link.running });
    if (link.emptyOwnedQdisc) drift.push({ kind: "empty-qdisc", link: name });
    if (link.staleQdiscRecord) drift.push({ kind: "stale-qdisc-record", link: name });
  }
  if (view.observed.emptyPins.length > 0) drift.push({ kind: "empty-pins", pins: view.observed.emptyPins });
  for (const cgroup of view.cgroups.filter((entry) => entry.halfSwitched))
    drift.push({ kind: "cgroup-half-switched", cgroup: cgroup.cgroup.path, programs: cgroup.ours });
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
