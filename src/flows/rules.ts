/**
 * Which rule a flow record is about. The datapath knows only its
 * program's version and the rule's slot; this is the one place that turns
 * them into a policy, a rule and where the rule is written. It is fed from
 * what the kernel says (each version's pin directory names its policy)
 * and, when given, from the policies on disk (matched by version, that is
 * by content hash), which name the rule and its file:line.
 */
import { listEntries, type PinLayout } from "../kernel/pins.js";
import { isProgramName, membersOf } from "../model/composition.js";
import { composedSlots, ruleSlots, type RuleSlot } from "../model/rule-slots.js";
import { isVersionName } from "../model/version.js";
import type { LoadedPolicy } from "../load/index.js";
import { composeDesired, type DesiredPolicy } from "../reconcile/desired.js";
import { ruleSummary, type OutboundRule, type Rule, type ValidPolicy } from "../validate/index.js";

/** A record's rule, as far as what is known names it. */
export interface ResolvedRule {
  /** The policy, or null for a version no pin directory names (a program unloaded since). */
  policy: string | null;
  /** The rule's slot: its `rule.<policy>[slot]` address; null for a record of no rule. */
  slot: number | null;
  /** "web[0]": what watch and status print. */
  label: string;
  /** "policies/web.yaml:4", when the policies were given. */
  location: string | null;
  /** The rule's one-line summary, when the policies were given. */
  summary: string | null;
}

interface KnownVersion {
  policy: string;
  /**
   * What each slot holds, from the policies on disk it was built from (one,
   * or a composition's, src/model/composition.ts), with where each rule is written.
   */
  source?: SlotOwner[];
}

interface SlotOwner {
  policy: ValidPolicy;
  loaded: LoadedPolicy | undefined;
  entry: RuleSlot<Rule, OutboundRule>;
}

export class RuleDirectory {
  /** What resolve worked out, by version, then slot. */
  private readonly resolved = new Map<string, Map<number, ResolvedRule>>();
  /** What recordRule worked out, by version, then slot. */
  private readonly recorded = new Map<string, Map<number, ResolvedRule>>();

  private constructor(private readonly versions: Map<string, KnownVersion>) {}

  /** The versions pinned under @pins, named from @desired where a version is one of them. */
  static async read(
    pins: PinLayout,
    desired: DesiredPolicy[] = [],
    loaded: LoadedPolicy[] = [],
  ): Promise<RuleDirectory> {
    const byVersion = new Map(
      desired.map((want) => [want.program.version, { name: want.program.policy, members: [want.policy] }]),
    );
    const byFile = new Map(loaded.map((policy) => [policy.file, policy]));
    const names = (await listEntries(pins.namespaceDir, "directories")).filter(isProgramName);
    // Compositions are named by their policies: composed as plan composes them, to name their slots.
    const given = new Set(desired.map((want) => want.policy.name));
    const sets = names
      .map(membersOf)
      .filter((set): set is string[] => set !== undefined && set.length > 1 && set.every((name) => given.has(name)));
    for (const program of await composeDesired(desired, sets))
      byVersion.set(program.program.version, { name: program.name, members: program.members });
    const versions = new Map<string, KnownVersion>();
    for (const policy of names) {
      for (const version of (await listEntries(pins.policy(policy), "directories")).filter(isVersionName)) {
        const want = byVersion.get(version);
        versions.set(version, {
          policy,
          ...(want?.name === policy && { source: slotOwners(want.members, byFile) }),
        });
      }
    }
    return new RuleDirectory(versions);
  }

  /** Whether @version is known (one loaded since this was read is not). */
  has(version: string): boolean {
    return this.versions.has(version);
  }

  /** The versions known, with their policy. */
  get policies(): Map<string, string> {
    return new Map([...this.versions].map(([version, known]) => [version, known.policy]));
  }

  /**
   * What @slot of the program @version is. The one place a slot becomes a
   * rule. Kept once worked out (a directory does not change): watch asks
   * for every record, and a rule's location and summary take some work.
   */
  resolve(version: string, slot: number): Readonly<ResolvedRule> {
    return remembered(this.resolved, version, slot, () => this.work(version, slot));
  }

  /**
   * The rule of a flow record written by @version for @slot: resolve's,
   * but a slot past the policy's rules (known when the policies were
   * given) is the record of no rule, with slot null. Kept, as resolve's.
   */
  recordRule(version: string, slot: number): Readonly<ResolvedRule> {
    return remembered(this.recorded, version, slot, () => {
      const rule = this.resolve(version, slot);
      const slots = this.slots(version);
      return slots !== undefined && slot >= slots ? { ...rule, slot: null } : rule;
    });
  }

  private work(version: string, slot: number): ResolvedRule {
    const known = this.versions.get(version);
    const program = known?.policy ?? null;
    const name = program ?? `version ${version}`;
    const source = known?.source;
    if (!source) return { policy: program, slot, label: `${name}[${slot}]`, location: null, summary: null };
    const owner = source[slot];
    if (!owner) return { policy: program, slot: null, label: name, location: null, summary: null };
    // A rule keeps its own policy's address in a composed program: rule.<policy>[index].
    const { policy, loaded, entry } = owner;
    const pointer =
      entry.kind === "interceptor"
        ? `/interceptors/${entry.slot}`
        : `/outbound/rules/${entry.slot - policy.rules.length}`;
    const span = loaded?.sourceMap.span(pointer);
    return {
      policy: policy.name,
      slot: entry.slot,
      label: `${policy.name}[${entry.slot}]`,
      location: span ? `${policy.file}:${span.line}` : null,
      summary:
        entry.kind === "interceptor" ? ruleSummary(entry.rule as Rule) : outboundSummary(entry.rule as OutboundRule),
    };
  }

  /** How many rule slots @version has, when its policy is known: the slot after them is "no rule". */
  slots(version: string): number | undefined {
    return this.versions.get(version)?.source?.length;
  }
}

/** @cache's entry for @version and @slot, worked out by @work when missing. */
function remembered(
  cache: Map<string, Map<number, ResolvedRule>>,
  version: string,
  slot: number,
  work: () => ResolvedRule,
): ResolvedRule {
  let slots = cache.get(version);
  if (!slots) cache.set(version, (slots = new Map()));
  let rule = slots.get(slot);
  if (!rule) slots.set(slot, (rule = work()));
  return rule;
}

/** For each slot of the program of @members (composedSlots), the policy and rule it holds. */
function slotOwners(members: ValidPolicy[], byFile: Map<string, LoadedPolicy>): SlotOwner[] {
  const owners: SlotOwner[] = [];
  const slots = composedSlots(members);
  members.forEach((policy, m) => {
    for (const entry of ruleSlots(policy))
      owners[slots[m]![entry.slot]!] = { policy, loaded: byFile.get(policy.file), entry };
  });
  return owners;
}

function outboundSummary(rule: OutboundRule): string {
  const to = rule.cidrs.length === 0 ? "any destination" : rule.cidrs.map((cidr) => cidr.text).join(", ");
  return `outbound tcp ${to} port ${rule.originalPort} -> local ${rule.port}`;
}
