import { type Datapath, type ObservedProgram, type ObservedState, type RuleCounters } from "../datapath/types.js";
import { HOOKS, type CgroupHook, type Hook } from "../model/hooks.js";
import { sameVersion, type VersionRef } from "../model/version.js";
import { type CgroupAttachment } from "../kernel/cgroups.js";
import { InterceptError, messageOf } from "../errors.js";
import { composedSlots, ruleSlots } from "../model/rule-slots.js";
import type { OutboundRule, Rule, ValidPolicy } from "../validate/index.js";
import { composeDesired, ownProgram, type DesiredPolicy, type DesiredProgram } from "./desired.js";
import { findDrift } from "./drift.js";
import { type Drift } from "../plan/model.js";
import { viewOf } from "./observed-view.js";
import { compositionsNeeded } from "./make-plan.js";
import { namedCgroups } from "./make-plan-cgroups.js";
import { outboundWarnings } from "./warnings.js";
import type { PlanWarning } from "../plan/model.js";

/** What `status` and the agent's metrics show: each live version with its rules and counters. */
export interface StatusReport {
  observed: ObservedState;
  programs: ProgramReport[];
  links: LinkReport[];
  /** Cgroups running programs of ours, and those the policies name. */
  cgroups: CgroupReport[];
  /** What an interrupted run left behind (plan repairs it). */
  drift: Drift[];
  /** Outbound proxies listening where no program of ours answers their SO_ORIGINAL_DST. */
  warnings: PlanWarning[];
}

export interface ProgramReport {
  program: ObservedProgram;
  /** The program on disk this version was built from, when the caller knows it (matched by content hash). */
  desired: DesiredProgram | undefined;
  rules: RuleReport[];
  /** Why the counters could not be read; they are then absent, never shown as zeros. */
  countersError: string | undefined;
}

export interface RuleReport {
  /** Its slot in the program's maps. */
  index: number;
  /** The policy the rule belongs to, its file and its index there (rule.<policy>[index]), when the policies name it. */
  owner: { policy: string; file: string; index: number } | undefined;
  rule: Rule | undefined;
  /** The outbound rule at this index, when the policy names one there. */
  outbound: OutboundRule | undefined;
  enabled: boolean;
  counters: RuleCounters | undefined;
}

export interface LinkReport {
  link: string;
  ifindex: number;
  /** The version each of our hooks runs (undefined: a program no pinned version of ours has). */
  programs: Partial<Record<Hook, VersionRef | undefined>>;
  programIds: Partial<Record<Hook, number>>;
}

export interface CgroupReport {
  path: string;
  id: number;
  /** Our programs on it: which version on which hook. */
  programs: { hook: CgroupHook; program: VersionRef }[];
  /** Programs intercept did not attach, left alone. */
  foreign: CgroupAttachment[];
}

/**
 * Reads the kernel's state and every version's counters; rules are named
 * from @desired by exact program identity (content hash), since the kernel
 * holds only rule indexes.
 */
export async function inspect(datapath: Datapath, desired: DesiredPolicy[]): Promise<StatusReport> {
  const outbound = desired.some((want) => want.policy.outbound !== undefined);
  const observed = await datapath.observe({ cgroups: namedCgroups(desired), ...(outbound && { listeners: true }) });
  const view = viewOf(observed);
  const warnings = desired.flatMap((want) => outboundWarnings(want.policy, observed.listeners ?? [], false));
  // Composed programs are named from the policies that compose them, as plan composes them.
  const composed = await composeDesired(desired, compositionsNeeded(desired, observed)).catch((error: unknown) => {
    if (error instanceof InterceptError) return []; // a program that cannot be identified: its rules shown by index
    throw error;
  });
  const sources = [...desired.map(ownProgram), ...composed];
  const programs = await Promise.all(observed.programs.map((program) => reportProgram(datapath, program, sources)));
  const links = view.links
    .filter((entry) => Object.keys(entry.link.filters).length > 0)
    .map(({ link, running }) => {
      const programs: LinkReport["programs"] = {};
      for (const hook of HOOKS) if (hook in running) programs[hook] = running[hook] ?? undefined;
      return { link: link.name, ifindex: link.ifindex, programs, programIds: link.filters };
    });
  const cgroups = view.cgroups.map(({ cgroup, ours, foreign }) => ({
    path: cgroup.path,
    id: cgroup.id,
    programs: ours,
    foreign,
  }));
  return { observed, programs, links, cgroups, drift: findDrift(observed, view), warnings };
}

async function reportProgram(
  datapath: Datapath,
  program: ObservedProgram,
  sources: DesiredProgram[],
): Promise<ProgramReport> {
  const source = sources.find((d) => sameVersion(d.program, program.ref) && d.contentHash === program.contentHash);
  let counters: RuleCounters[] | undefined;
  let countersError: string | undefined;
  try {
    counters = await datapath.readCounters(program.ref, program.enabled.length);
  } catch (error) {
    countersError = messageOf(error);
  }
  const slots = source ? slotOwners(source) : [];
  const rules = program.enabled.map((enabled, index) => {
    const slot = slots[index];
    return {
      index,
      owner: slot && { policy: slot.policy.name, file: slot.policy.file, index: slot.slot.rule.index },
      rule: slot?.slot.kind === "interceptor" ? slot.slot.rule : undefined,
      outbound: slot?.slot.kind === "outbound" ? slot.slot.rule : undefined,
      enabled,
      counters: counters?.[index],
    };
  });
  return { program, desired: source, rules, countersError };
}

/** For each slot of @program's maps, the policy and rule it holds (composedSlots). */
function slotOwners(program: DesiredProgram) {
  const owners: { policy: ValidPolicy; slot: ReturnType<typeof ruleSlots<Rule, OutboundRule>>[number] }[] = [];
  const slots = composedSlots(program.members);
  program.members.forEach((policy, m) => {
    for (const slot of ruleSlots(policy)) owners[slots[m]![slot.slot]!] = { policy, slot };
  });
  return owners;
}
