import {
  ourCgroupPrograms,
  type CgroupIdentity,
  type ObservedCgroup,
  type ObservedProgram,
  type ObservedState,
} from "../datapath/types.js";
import { CGROUP_HOOKS, type CgroupHook } from "../model/hooks.js";
import { describeVersion, sameVersion, type VersionRef } from "../model/version.js";
import { InterceptError } from "../errors.js";
import { formatAddress } from "../model/addresses.js";
import type {
  CgroupCreate,
  CgroupDelete,
  CgroupProgram,
  CgroupUpdate,
  Change,
  ExemptionUpdate,
} from "../plan/model.js";
import type { ValidPolicy } from "../validate/index.js";
import { compositionMembers } from "../model/composition.js";
import type { DesiredPolicy, DesiredProgram } from "./desired.js";

/**
 * The outbound half of a plan: which of a policy's cgroup programs run on
 * which cgroup. A cgroup the policy captures runs all four (CGROUP_HOOKS);
 * an exempt one, where the proxy runs, runs getsockopt alone (the proxy's
 * accepted sockets belong to the proxy's cgroup, and its getsockopt is
 * answered there). Our programs are recognised by program id among the
 * versions we pin; anything else attached to a cgroup is left alone.
 */

/** The cgroups @desired name, captured and exempt: what observe() must look at. */
export function namedCgroups(desired: readonly DesiredPolicy[]): string[] {
  return desired.flatMap(({ policy }) =>
    policy.outbound ? [...policy.outbound.cgroups, ...policy.outbound.exempt.cgroups] : [],
  );
}

/** What one cgroup should run: a program's (a composition's) cgroup programs, all four or getsockopt alone. */
export interface WantedCgroup {
  owner: DesiredProgram;
  cgroup: ObservedCgroup;
  hooks: CgroupHook[];
  role: "capture" | "exempt";
}

/** The hooks of each role. */
const ROLE_HOOKS: Record<WantedCgroup["role"], CgroupHook[]> = { capture: [...CGROUP_HOOKS], exempt: ["getsockopt"] };

/**
 * The policies that capture each cgroup of @desired, by path, in
 * composition order: each set composes into one program whose cgroup
 * programs run there (src/model/composition.ts), as the policies that
 * select one link do.
 */
export function captureSets(desired: readonly DesiredPolicy[]): Map<string, string[]> {
  const sets = new Map<string, string[]>();
  for (const { policy } of desired)
    for (const path of policy.outbound?.cgroups ?? []) sets.set(path, [...(sets.get(path) ?? []), policy.name]);
  return new Map([...sets].map(([path, names]) => [path, compositionMembers(names)]));
}

/**
 * Every cgroup the policies name, found in @observed, with the program
 * that runs there: a captured cgroup runs the composition of the policies
 * that capture it (@programOf). An exempt cgroup, where a proxy runs its
 * getsockopt, runs the getsockopt of the first capture composition (by
 * name) whose exemptions hold it: every outbound version of a namespace
 * shares the record maps (src/datapath/kernel.ts), so it answers for the
 * records any of them wrote. A cgroup that does not exist is an error
 * naming it (a policy cannot capture a cgroup that is not there; the plan
 * would otherwise quietly do nothing).
 */
export function wantedCgroups(
  desired: DesiredPolicy[],
  observed: ObservedState,
  programOf: (members: string[]) => DesiredProgram,
): Map<string, WantedCgroup> {
  const byName = new Map(desired.map((want) => [want.policy.name, want]));
  const wanted = new Map<string, WantedCgroup>();
  const captures = captureSets(desired);
  for (const [path, members] of captures) {
    const cgroup = findCgroup(byName.get(members[0]!)!, path, observed);
    wanted.set(path, { owner: programOf(members), cgroup, hooks: ROLE_HOOKS.capture, role: "capture" });
  }
  const capturing = [...new Map([...wanted.values()].map(({ owner }) => [owner.name, owner])).values()].sort((a, b) =>
    a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
  );
  for (const want of desired) {
    for (const path of want.policy.outbound?.exempt.cgroups ?? []) {
      const captors = captures.get(path);
      if (captors) {
        throw new InterceptError(
          "plan-conflict",
          `cgroup "${path}" is exempt in policy ${want.policy.name} and captured by ${captors.join(", ")}`,
        );
      }
      if (wanted.has(path)) continue;
      const owner =
        capturing.find((program) => program.compiled.policy.outbound?.exempt.cgroups.includes(path)) ??
        programOf([want.policy.name]);
      wanted.set(path, { owner, cgroup: findCgroup(want, path, observed), hooks: ROLE_HOOKS.exempt, role: "exempt" });
    }
  }
  return wanted;
}

function findCgroup(owner: DesiredPolicy, path: string, observed: ObservedState): ObservedCgroup {
  if (observed.cgroupRoot === null) {
    throw new InterceptError(
      "cgroup2-unavailable",
      `policy "${owner.policy.name}" has an outbound section, and no cgroup2 hierarchy is mounted (none in /proc/mounts)`,
    );
  }
  const cgroup = observed.cgroups.find((c) => c.path === path);
  if (!cgroup)
    throw new InterceptError(
      "cgroup-not-found",
      `policy "${owner.policy.name}": cgroup "${path}" does not exist under the cgroup2 mount ${observed.cgroupRoot}`,
    );
  return cgroup;
}

/** The ids the programs of @policy's version (its own, or a composition's) must hold for its exempt cgroups, in order. */
export function exemptIdentities(policy: ValidPolicy, wanted: Map<string, WantedCgroup>): CgroupIdentity[] {
  return (policy.outbound?.exempt.cgroups ?? []).map((path) => {
    const { cgroup } = wanted.get(path)!;
    return { id: cgroup.id, level: cgroup.level };
  });
}

/** Changes for every cgroup that runs or should run programs of ours, by path. */
export function planCgroups(
  observed: ObservedState,
  wanted: Map<string, WantedCgroup>,
  kept: (owner: DesiredProgram) => ObservedProgram | undefined,
): Change[] {
  const changes: Change[] = [];
  const paths = new Set([...wanted.keys(), ...observed.cgroups.map((c) => c.path)]);
  for (const path of [...paths].sort()) {
    const want = wanted.get(path);
    const cgroup = want?.cgroup ?? observed.cgroups.find((c) => c.path === path)!;
    const ours = ourCgroupPrograms(cgroup, observed.programs);
    const ref = { path: cgroup.path, id: cgroup.id };
    const address = formatAddress({ kind: "cgroup", path });
    if (!want) {
      if (ours.length > 0) {
        const remove: CgroupDelete = {
          type: "cgroup.delete",
          address,
          cgroup: ref,
          detach: ours,
          reasonCode: "cgroup-unnamed",
          reason: "no policy names this cgroup",
        };
        changes.push(remove);
      }
      continue;
    }
    const target = want.owner.program;
    const running = kept(want.owner) !== undefined;
    const current = (entry: CgroupProgram) =>
      running && want.hooks.includes(entry.hook) && sameVersion(entry.program, target);
    const attach = want.hooks.filter((hook) => !ours.some((entry) => entry.hook === hook && current(entry)));
    const detach = ours.filter((entry) => !current(entry));
    if (attach.length === 0 && detach.length === 0) continue;
    const what = want.role === "capture" ? "capture" : "exempt: the proxy's getsockopt";
    if (ours.length === 0) {
      const create: CgroupCreate = {
        type: "cgroup.create",
        address,
        cgroup: ref,
        program: target,
        hooks: want.hooks,
        reasonCode: "cgroup-named",
        reason: `attach ${want.owner.name} (${what})`,
      };
      changes.push(create);
    } else {
      const update: CgroupUpdate = {
        type: "cgroup.update",
        address,
        cgroup: ref,
        program: target,
        attach,
        detach,
        reasonCode: interrupted(ours) ? "half-switched" : "program-switched",
        reason: `switch from ${describeRunning(ours)} to ${describeVersion(target)} (${what})`,
      };
      changes.push(update);
    }
  }
  return changes;
}

/** Each version running on a cgroup, by its name ("demo@1a2b3c4d"), with its hooks. */
function runningVersions(ours: CgroupProgram[]): [string, { ref: VersionRef; hooks: CgroupHook[] }][] {
  const versions = new Map<string, { ref: VersionRef; hooks: CgroupHook[] }>();
  for (const { hook, program } of ours) {
    const name = describeVersion(program);
    versions.set(name, { ref: program, hooks: [...(versions.get(name)?.hooks ?? []), hook] });
  }
  return [...versions.entries()];
}

/** Whether a cgroup runs mixed versions or part of a set (left by an interrupted apply). */
function interrupted(ours: CgroupProgram[]): boolean {
  const entries = runningVersions(ours);
  return !(entries.length === 1 && wholeCgroupSet(entries[0]![1].hooks));
}

/** "demo@1a2b3c4d", or each version with its hooks when they are mixed or partial (an interrupted apply). */
function describeRunning(ours: CgroupProgram[]): string {
  const entries = runningVersions(ours);
  if (!interrupted(ours)) return entries[0]![0];
  return `${entries.map(([name, { hooks }]) => `${name} on ${hooks.join(", ")}`).join("; ")} (left by an interrupted apply)`;
}

/** Live edit of a kept version's exempt cgroup ids, when a cgroup was made again since the version was loaded. */
export function planExemption(
  owner: DesiredProgram,
  kept: ObservedProgram | undefined,
  wanted: Map<string, WantedCgroup>,
): ExemptionUpdate[] {
  if (!kept || !owner.compiled.policy.outbound) return [];
  const cgroups = exemptIdentities(owner.compiled.policy, wanted);
  const same =
    cgroups.length === kept.exemptCgroups.length &&
    cgroups.every((c, i) => c.id === kept.exemptCgroups[i]!.id && c.level === kept.exemptCgroups[i]!.level);
  if (same) return [];
  return [
    {
      type: "exemption.update",
      address: formatAddress({ kind: "exemption", policy: owner.name }),
      program: kept.ref,
      cgroups,
      from: kept.exemptCgroups,
      reasonCode: "cgroup-recreated",
      reason: `exempt cgroup ids ${kept.exemptCgroups.map((c) => c.id).join(", ") || "none"} → ${cgroups.map((c) => c.id).join(", ")} (a cgroup was made again; live edit, no reload)`,
    },
  ];
}

/** Whether a version's cgroup programs on one cgroup form a whole set (all four, or getsockopt alone). */
export function wholeCgroupSet(hooks: readonly CgroupHook[]): boolean {
  return Object.values(ROLE_HOOKS).some(
    (role) => role.length === hooks.length && role.every((hook) => hooks.includes(hook)),
  );
}
