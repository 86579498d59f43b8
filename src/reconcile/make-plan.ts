import { describeEmptyPin, type ObservedLink, type ObservedProgram, type ObservedState } from "../datapath/types.js";
import { describeVersion, sameVersion, type VersionRef } from "../model/version.js";
import { HOOKS, type Hook } from "../model/hooks.js";
import { InterceptError, unreachable } from "../errors.js";
import { formatAddress } from "../model/addresses.js";
import type { ReasonCode } from "../model/reasons.js";
import { composedRules, composedSlots, ruleSlots, slotCount } from "../model/rule-slots.js";
import { compositionMembers, compositionName, membersOf } from "../model/composition.js";
import type {
  AttachmentCreate,
  AttachmentDelete,
  AttachmentUpdate,
  Change,
  HookPrograms,
  PinsDelete,
  Plan,
  ProgramCreate,
  ProgramDelete,
  ProgramReplace,
  QdiscDelete,
  RegistryUpdate,
  RuleUpdate,
} from "../plan/model.js";
import { ruleSummary, type ValidPolicy } from "../validate/index.js";
import { appliesIn, selects } from "../validate/namespaces.js";

import { ownProgram, type DesiredPolicy, type DesiredProgram } from "./desired.js";
import { findDrift } from "./drift.js";
import { viewOf, type LinkView } from "./observed-view.js";
import { namespaceWarning, planWarnings } from "./warnings.js";
import {
  captureSets,
  exemptIdentities,
  planCgroups,
  planExemption,
  wantedCgroups,
  type WantedCgroup,
} from "./make-plan-cgroups.js";

/**
 * Stage 6: the changes that make @observed match @desired. Pure and
 * deterministic: programs (in policy order, then stale ones), links (by
 * address), cgroups (by path), rules and exemptions. The order changes are *executed* in is
 * decided separately (order.ts). What an interrupted run left behind —
 * a version whose load never finished, a link half switched between two
 * versions, a qdisc of ours holding nothing — is repaired here too.
 */
export function makePlan(given: DesiredPolicy[], observed: ObservedState, composed: DesiredProgram[] = []): Plan {
  const desired = given.filter((want) => appliesIn(want.policy, observed.netns.name)); // a policy's `namespaces`
  const owners = assignLinks(desired, observed, composed);
  const cgroups = wantedCgroups(desired, observed, programOf(desired, composed));
  const wanted = wantedPrograms(desired, owners, cgroups);
  const programs = new Map(wanted.map((want) => [want.name, planProgram(want, observed, cgroups, owners)]));
  const changes: Change[] = [...programs.values()].flatMap((p) => p.changes);
  for (const stale of observed.programs.filter((p) => !programs.has(p.ref.policy))) {
    changes.push(programDelete(stale, ...staleProgramReason(stale.ref.policy, desired)));
  }
  const view = viewOf(observed);
  const links = view.links
    .filter((entry) => owners.has(entry.link))
    .map((entry) => planLink(entry, owners.get(entry.link), observed));
  changes.push(...links.flat().sort((a, b) => a.address.localeCompare(b.address)));
  const keptOf = (name: string) => programs.get(name)?.kept;
  changes.push(...planCgroups(observed, cgroups, (owner) => keptOf(owner.name)));
  const exemptions = (program: DesiredProgram) => planExemption(program, keptOf(program.name), cgroups);
  for (const want of desired) {
    changes.push(
      ...wanted
        .filter((program) => holds(program, want.policy))
        .flatMap((program) => planRules(want.policy, program, keptOf(program.name))),
      ...wanted.filter((program) => program.name === want.policy.name).flatMap(exemptions),
    );
  }
  changes.push(...wanted.filter((program) => program.members.length > 1).flatMap(exemptions));
  changes.push(...planRegistry(observed, changes), ...planEmptyPins(observed, changes));
  const linksOf = (policy: ValidPolicy) =>
    [...owners].filter(([, owner]) => owner !== undefined && holds(owner, policy)).map(([link]) => link.name);
  const leftOut = given.filter((want) => !desired.includes(want));
  return {
    netns: observed.netns,
    changes,
    drift: findDrift(observed, view),
    warnings: [
      ...leftOut.map((want) => namespaceWarning(want.policy, observed.netns.name)),
      ...planWarnings(
        desired.map((want) => want.policy),
        observed,
        linksOf,
      ),
    ],
  };
}

/**
 * The compositions of two or more policies that @desired make on the links
 * of @observed and on the cgroups they capture: what must be compiled and
 * identified (composeDesired) before makePlan. Each is a sorted list of
 * policy names.
 */
export function compositionsNeeded(given: DesiredPolicy[], observed: ObservedState): string[][] {
  const desired = given.filter((want) => appliesIn(want.policy, observed.netns.name));
  const sets = new Map<string, string[]>();
  for (const link of observed.links.filter(servable)) {
    const members = compositionMembers(claimants(desired, link).map((want) => want.policy.name));
    if (members.length > 1) sets.set(members.join(" "), members);
  }
  for (const members of captureSets(desired).values()) if (members.length > 1) sets.set(members.join(" "), members);
  return [...sets.values()];
}

/** The policies whose programs belong on @link: those with tc rules whose interfaces select it. */
function claimants(desired: DesiredPolicy[], link: ObservedLink): DesiredPolicy[] {
  // An outbound-only policy has no tc program: it claims no link.
  return desired.filter((want) => want.hooks.length > 0 && selects(want.policy.interfaces, link.name));
}

/**
 * The programs to keep loaded: each composition a link or a cgroup runs,
 * then the own program of every policy that runs alone somewhere, or
 * nowhere (loaded all the same, as one whose links are yet to come).
 */
function wantedPrograms(
  desired: DesiredPolicy[],
  owners: Map<ObservedLink, DesiredProgram | undefined>,
  cgroups: Map<string, WantedCgroup>,
): DesiredProgram[] {
  const running = new Map<string, DesiredProgram>();
  for (const owner of owners.values()) if (owner) running.set(owner.name, owner);
  for (const { owner } of cgroups.values()) running.set(owner.name, owner);
  const composed = [...running.values()].filter((program) => program.members.length > 1);
  const own = desired.filter(
    (want) => running.has(want.policy.name) || !composed.some((program) => holds(program, want.policy)),
  );
  return [...own.map(ownProgram), ...composed.sort((a, b) => a.name.localeCompare(b.name))];
}

/** The program of the composition of @members (policy names, in composition order): compiled before the plan. */
function programOf(desired: DesiredPolicy[], composed: DesiredProgram[]): (members: string[]) => DesiredProgram {
  return (members) => {
    if (members.length === 1) return ownProgram(desired.find((want) => want.policy.name === members[0])!);
    const name = compositionName(members);
    const program = composed.find((candidate) => candidate.name === name);
    if (!program) throw new Error(`composition ${name} was not compiled before the plan (compositionsNeeded)`);
    return program;
  };
}

function holds(program: DesiredProgram, policy: ValidPolicy): boolean {
  return program.members.some((member) => member.name === policy.name);
}

function staleProgramReason(name: string, desired: DesiredPolicy[]): Reason {
  const members = membersOf(name);
  if (members === undefined || members.length > 1) {
    return ["composition-removed", `no link runs ${members ? members.join(" and ") : name} together any more`];
  }
  const policy = desired.find((want) => want.policy.name === name)?.policy;
  if (policy?.outbound)
    return ["policy-composed", `policy "${name}" now runs composed with others on every link and cgroup it names`];
  return policy
    ? ["policy-composed", `policy "${name}" now runs composed with others on every link it selects`]
    : ["policy-removed", `policy "${name}" is no longer given`];
}

/**
 * Records of qdiscs that are gone — their link was deleted, or a run was
 * killed between removing the qdisc and forgetting it — except those the
 * plan records again (a link that gets a new qdisc of ours).
 */
function planRegistry(observed: ObservedState, changes: Change[]): RegistryUpdate[] {
  const withQdisc = new Map(observed.links.filter((link) => link.clsact).map((link) => [link.ifindex, link.name]));
  const present = new Map(observed.links.map((link) => [link.ifindex, link.name]));
  const adding = new Set(
    changes.flatMap((change) => (change.type === "attachment.create" && change.addQdisc ? [change.link.ifindex] : [])),
  );
  const forget = observed.ownedQdiscs.filter((ifindex) => !withQdisc.has(ifindex) && !adding.has(ifindex));
  if (forget.length === 0) return [];
  const what = forget.map((ifindex) =>
    present.has(ifindex) ? `${present.get(ifindex)} (its qdisc is gone)` : `ifindex ${ifindex} (the link is gone)`,
  );
  return [
    {
      type: "registry.update",
      address: formatAddress({ kind: "registry" }),
      forget,
      reasonCode: "qdisc-gone",
      reason: `forget the records of qdiscs that are gone: ${what.join(", ")}`,
    },
  ];
}

/** Pins of ours left empty by an interrupted run, but those the plan fills again (a load, a new qdisc). */
function planEmptyPins(observed: ObservedState, changes: Change[]): PinsDelete[] {
  const loading = new Set(
    changes.flatMap((change) =>
      change.type === "program.create" || change.type === "program.replace" ? [change.program.policy] : [],
    ),
  );
  const addsQdisc = changes.some((change) => change.type === "attachment.create" && change.addQdisc);
  const pins = observed.emptyPins.filter((pin) => {
    switch (pin.kind) {
      case "registry":
        return !addsQdisc;
      case "policy":
        return !loading.has(pin.policy);
      case "namespace":
        return !addsQdisc && loading.size === 0;
      default:
        return unreachable(pin);
    }
  });
  if (pins.length === 0) return [];
  return [
    {
      type: "pins.delete",
      address: formatAddress({ kind: "pins" }),
      pins,
      reasonCode: "empty-pins",
      reason: `left empty by an interrupted run: ${pins.map(describeEmptyPin).join(", ")}`,
    },
  ];
}

/** The live version to keep (same content hash, complete), and the changes around it. */
function planProgram(
  want: DesiredProgram,
  observed: ObservedState,
  cgroups: Map<string, WantedCgroup>,
  owners: Map<ObservedLink, DesiredProgram | undefined>,
): { kept: ObservedProgram | undefined; changes: Change[] } {
  const name = want.name;
  const versions = observed.programs.filter((p) => p.ref.policy === name);
  const kept = versions.find((p) => p.contentHash === want.contentHash && sameVersion(p.ref, want.program));
  // A version with the wanted name but no complete load is replaced by the load itself.
  const others = versions.filter((p) => p !== kept && !sameVersion(p.ref, want.program));
  if (kept) return { kept, changes: others.map((p) => programDelete(p, ...staleReason(p))) };
  const complete = others.filter((p) => p.contentHash !== null);
  const base = {
    program: want.program,
    contentHash: want.contentHash,
    hooks: want.hooks,
    enabled: composedRules(want.members).map((rule) => rule.enabled),
    ...(want.cgroupHooks.length > 0 && {
      cgroupHooks: want.cgroupHooks,
      exemptCgroups: exemptIdentities(want.compiled.policy, cgroups),
    }),
  };
  if (complete.length > 0) {
    const [replaced, ...extra] = complete;
    const replace: ProgramReplace = {
      type: "program.replace",
      address: formatAddress({ kind: "program", policy: name }),
      ...base,
      replaces: replaced!.ref,
      reasonCode: want.members.length > 1 ? "shared-program-changed" : "policy-changed",
      reason: `program changed (${replaced!.ref.version.slice(0, 8)} → ${want.program.version.slice(0, 8)})${sharedBy(want, owners, cgroups)}`,
    };
    const incomplete = others.filter((p) => p.contentHash === null);
    return {
      kept: undefined,
      changes: [replace, ...[...extra, ...incomplete].map((p) => programDelete(p, ...staleReason(p)))],
    };
  }
  const create: ProgramCreate = {
    type: "program.create",
    address: formatAddress({ kind: "program", policy: name }),
    ...base,
    reasonCode:
      versions.length > 0 ? "interrupted-load" : want.members.length > 1 ? "composition-added" : "policy-added",
    reason: `${want.members.length > 1 ? `composition of ${want.members.map((m) => m.name).join(", ")}` : "new policy"}, ${plural(slotCount(want.compiled.policy), "rule")}${sharedBy(want, owners, cgroups)}${versions.length > 0 ? " (replacing an interrupted load)" : ""}`,
  };
  return { kept: undefined, changes: [create, ...others.map((p) => programDelete(p, ...staleReason(p)))] };
}

/**
 * For a composed program: which policies share it and why (they select the
 * same links), so a reviewer sees that a change to one reloads the others.
 */
function sharedBy(
  want: DesiredProgram,
  owners: Map<ObservedLink, DesiredProgram | undefined>,
  cgroups: Map<string, WantedCgroup>,
): string {
  if (want.members.length < 2) return "";
  const links = [...owners].filter(([, owner]) => owner?.name === want.name).map(([link]) => link.name);
  const captured = [...cgroups]
    .filter(([, wanted]) => wanted.role === "capture" && wanted.owner.name === want.name)
    .map(([path]) => path);
  const names = want.members.map((member) => member.name);
  const what =
    captured.length > 0 && links.length === 0
      ? `capture cgroup ${captured.join(", ")}`
      : `select ${links.join(", ") || "the same links"}${captured.length > 0 ? ` and capture cgroup ${captured.join(", ")}` : ""}`;
  return `; shared by ${names.join(" and ")}, which all ${what}: each one's rules reload with it, their connections kept`;
}

/** A change's reason: its code, then its text. */
type Reason = [code: ReasonCode, text: string];

function staleReason(program: ObservedProgram): Reason {
  return program.contentHash === null
    ? ["interrupted-load", `version ${program.ref.version.slice(0, 8)} never finished loading (an interrupted apply)`]
    : ["stale-version", "stale version"];
}

function programDelete(program: ObservedProgram, reasonCode: ReasonCode, reason: string): ProgramDelete {
  return {
    type: "program.delete",
    address: formatAddress({ kind: "program", policy: program.ref.policy }),
    program: program.ref,
    reasonCode,
    reason,
  };
}

/**
 * The program each link intercept can serve runs: the composition of the
 * policies that select it (undefined: none does). @composed holds the
 * compositions of two or more (compositionsNeeded, composeDesired).
 */
function assignLinks(
  desired: DesiredPolicy[],
  observed: ObservedState,
  composed: DesiredProgram[],
): Map<ObservedLink, DesiredProgram | undefined> {
  const owners = new Map<ObservedLink, DesiredProgram | undefined>();
  const programs = new Map<string, DesiredProgram>();
  for (const link of observed.links) {
    const selecting = claimants(desired, link);
    if (!servable(link)) {
      const naming = selecting.find((want) => want.policy.interfaces.include?.includes(link.name));
      if (naming) {
        throw new InterceptError(
          "plan-conflict",
          `policy "${naming.policy.name}" names interface ${link.name}, a ${link.linkType} link: intercept's programs serve Ethernet links only`,
        );
      }
      continue;
    }
    if (selecting.length === 0) {
      owners.set(link, undefined);
      continue;
    }
    const name = compositionName(selecting.map((want) => want.policy.name));
    let program = programs.get(name);
    if (!program) {
      program =
        selecting.length === 1 ? ownProgram(selecting[0]!) : composed.find((candidate) => candidate.name === name);
      if (!program) throw new Error(`composition ${name} was not compiled before the plan (compositionsNeeded)`);
      programs.set(name, program);
    }
    owners.set(link, program);
  }
  return owners;
}

/** Links whose frames the programs can parse: Ethernet, not loopback. */
function servable(link: ObservedLink): boolean {
  return !link.loopback && link.linkType === "ether";
}

function planLink(view: LinkView, owner: DesiredProgram | undefined, observed: ObservedState): Change[] {
  const { link } = view;
  const address = formatAddress({ kind: "attachment", link: link.name });
  const ref = { ifindex: link.ifindex, name: link.name };
  const from = view.running;
  const ours = Object.keys(from) as Hook[];
  if (!owner) {
    // Our filters gone, the qdisc we made would be empty: it goes with them.
    const emptyAfter = observed.ownedQdiscs.includes(link.ifindex) && link.clsact && link.foreign.length === 0;
    if (ours.length > 0) {
      const remove: AttachmentDelete = {
        type: "attachment.delete",
        address,
        link: ref,
        from,
        removeQdisc: emptyAfter,
        reasonCode: "link-unselected",
        reason: "no policy selects this link",
      };
      return [remove];
    }
    if (emptyAfter) {
      const qdisc: QdiscDelete = {
        type: "qdisc.delete",
        address: formatAddress({ kind: "qdisc", link: link.name }),
        link: ref,
        reasonCode: "empty-qdisc",
        reason: "clsact qdisc intercept created, holding nothing (left by an interrupted run)",
      };
      return [qdisc];
    }
    return [];
  }
  const taken = link.foreign.find((filter) => filter.inOurSlot);
  if (taken) {
    throw new InterceptError(
      "plan-conflict",
      `interface ${link.name}: tc pref ${taken.pref} handle ${taken.handle}, where intercept attaches, is held by a filter intercept did not create (${taken.kind} ${taken.programName ?? ""}); remove it or exclude the interface`,
    );
  }
  const target = { link: ref, program: owner.program, hooks: owner.hooks };
  if (ours.length === 0) {
    const create: AttachmentCreate = {
      type: "attachment.create",
      address,
      ...target,
      addQdisc: !link.clsact,
      reasonCode: "link-selected",
      reason: `attach ${owner.name}`,
    };
    return [create];
  }
  const kept = observed.programs.find((p) => sameVersion(p.ref, owner.program) && p.contentHash === owner.contentHash);
  const detach = ours.filter((hook) => !owner.hooks.includes(hook));
  const current =
    kept !== undefined &&
    detach.length === 0 &&
    owner.hooks.every((hook) => link.filters[hook] === kept.programIds[hook]);
  if (current) return [];
  const half = view.halfSwitched;
  const added = half ? [] : owner.hooks.filter((hook) => !(hook in from));
  const hooksChange = [
    ...(added.length > 0 ? [`adding ${hookList(added)}`] : []),
    ...(detach.length > 0 ? [`removing ${hookList(detach)}`] : []),
  ];
  const byPlugin = attachedByPlugin(link, from, observed);
  const update: AttachmentUpdate = {
    type: "attachment.update",
    address,
    ...target,
    from,
    detach,
    reasonCode: byPlugin ? "node-program" : half ? "half-switched" : "program-switched",
    reason: `switch from ${byPlugin ? "the node's program (attached by the CNI plugin)" : describeRunning(from, owner.hooks, half)} to ${describeVersion(owner.program)}${hooksChange.map((what) => `, ${what}`).join("")}`,
  };
  return [update];
}

/** Whether @link's hooks run only node programs (`agent --cni`'s, attached by the CNI plugin). */
function attachedByPlugin(link: ObservedLink, from: HookPrograms, observed: ObservedState): boolean {
  const hooks = HOOKS.filter((hook) => hook in from);
  return (
    hooks.length > 0 && hooks.every((hook) => from[hook] === null && observed.nodePrograms?.has(link.filters[hook]!))
  );
}

/** "demo@1a2b3c4d", or per hook on a half-switched link. */
function describeRunning(from: HookPrograms, wanted: Hook[], half: boolean): string {
  const name = (ref: VersionRef | null | undefined) =>
    ref ? describeVersion(ref) : ref === null ? "an unknown program" : "nothing";
  if (!half) return name(from[HOOKS.find((hook) => hook in from)!]);
  const hooks = HOOKS.filter((hook) => hook in from || wanted.includes(hook));
  return `${hooks.map((hook) => `${hook} ${name(from[hook])}`).join(", ")} (half-switched by an interrupted apply)`;
}

function hookList(hooks: Hook[]): string {
  return `the ${hooks.join(" and ")} hook${hooks.length === 1 ? "" : "s"}`;
}

/**
 * Live edits: @policy's rules (interceptors, then outbound rules) whose
 * enabled flag differs in @program's version that stays. In a composed
 * program the rule keeps its address (rule.<policy>[i]) and is written at
 * its slot there (composedSlots).
 */
function planRules(policy: ValidPolicy, program: DesiredProgram, kept: ObservedProgram | undefined): RuleUpdate[] {
  if (!kept) return [];
  const member = program.members.findIndex((candidate) => candidate.name === policy.name);
  const slots = composedSlots(program.members)[member]!;
  const where = program.members.length > 1 ? ` in ${program.name}` : "";
  const rules = ruleSlots(policy).map((slot) =>
    slot.kind === "interceptor"
      ? { rule: slot.rule, slot: slots[slot.slot]!, what: ruleSummary(slot.rule) }
      : {
          rule: slot.rule,
          slot: slots[slot.slot]!,
          what: `outbound tcp ${slot.rule.originalPort} → proxy ${slot.rule.port}`,
        },
  );
  return rules
    .filter(({ rule, slot }) => kept.enabled[slot] !== rule.enabled)
    .map(({ rule, slot, what }) => ({
      type: "rule.update",
      address: formatAddress({ kind: "rule", policy: policy.name, index: rule.index }),
      program: kept.ref,
      index: slot,
      enabled: rule.enabled,
      reasonCode: "rule-toggled" as const,
      reason: `${what}: ${rule.enabled ? "enable" : "disable"}${where} (live edit, no reload)`,
    }));
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}
