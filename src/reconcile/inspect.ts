import {
  cgroupProgramOwner,
  HOOKS,
  sameVersion,
  type CgroupAttachment,
  type CgroupHook,
  type Datapath,
  type Hook,
  type ObservedProgram,
  type ObservedState,
  type RuleCounters,
  type VersionRef,
} from "../datapath/types.js";
import { messageOf } from "../errors.js";
import { ruleSlots } from "../model/rule-slots.js";
import type { OutboundRule, Rule } from "../validate/index.js";
import type { DesiredPolicy } from "./desired.js";
import { findDrift, type Drift } from "./drift.js";
import { namedCgroups } from "./plan-cgroups.js";
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
  /** The policy on disk this version was built from, when the caller knows it (matched by content hash). */
  desired: DesiredPolicy | undefined;
  rules: RuleReport[];
  /** Why the counters could not be read; they are then absent, never shown as zeros. */
  countersError: string | undefined;
}

export interface RuleReport {
  index: number;
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
  const warnings = desired.flatMap((want) => outboundWarnings(want.policy, observed.listeners ?? [], false));
  const programs = await Promise.all(observed.programs.map((program) => reportProgram(datapath, program, desired)));
  const links = observed.links
    .filter((link) => Object.keys(link.filters).length > 0)
    .map((link) => {
      const running: LinkReport["programs"] = {};
      for (const hook of HOOKS) {
        const id = link.filters[hook];
        if (id !== undefined) running[hook] = observed.programs.find((p) => p.programIds[hook] === id)?.ref;
      }
      return { link: link.name, ifindex: link.ifindex, programs: running, programIds: link.filters };
    });
  const cgroups = observed.cgroups.map((cgroup) => {
    const report: CgroupReport = { path: cgroup.path, id: cgroup.id, programs: [], foreign: [] };
    for (const attachment of cgroup.attached) {
      const owner = cgroupProgramOwner(observed.programs, attachment.programId);
      if (owner && owner.hook === attachment.hook)
        report.programs.push({ hook: owner.hook, program: owner.program.ref });
      else report.foreign.push(attachment);
    }
    return report;
  });
  return { observed, programs, links, cgroups, drift: findDrift(observed), warnings };
}

async function reportProgram(
  datapath: Datapath,
  program: ObservedProgram,
  desired: DesiredPolicy[],
): Promise<ProgramReport> {
  const source = desired.find((d) => sameVersion(d.program, program.ref) && d.contentHash === program.contentHash);
  let counters: RuleCounters[] | undefined;
  let countersError: string | undefined;
  try {
    counters = await datapath.readCounters(program.ref, program.enabled.length);
  } catch (error) {
    countersError = messageOf(error);
  }
  const slots = source ? ruleSlots(source.policy) : [];
  const rules = program.enabled.map((enabled, index) => {
    const slot = slots[index];
    return {
      index,
      rule: slot?.kind === "interceptor" ? slot.rule : undefined,
      outbound: slot?.kind === "outbound" ? slot.rule : undefined,
      enabled,
      counters: counters?.[index],
    };
  });
  return { program, desired: source, rules, countersError };
}
