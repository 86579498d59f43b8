/**
 * Which rule a flow record is about. The datapath knows only its
 * program's version and the rule's slot; this is the one place that turns
 * them into a policy, a rule and where the rule is written. It is fed from
 * what the kernel says (each version's pin directory names its policy)
 * and, when given, from the policies on disk (matched by version, that is
 * by content hash), which name the rule and its file:line.
 */
import { listEntries, type PinLayout } from "../kernel/pins.js";
import { isProgramName } from "../model/composition.js";
import { ruleSlots, slotCount } from "../model/rule-slots.js";
import { isVersionName } from "../model/version.js";
import type { LoadedPolicy } from "../load/index.js";
import type { DesiredPolicy } from "../reconcile/desired.js";
import { ruleSummary, type OutboundRule, type Rule } from "../validate/index.js";

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
  /** The policy on disk it was built from, with where each rule is written. */
  source?: { desired: DesiredPolicy; loaded: LoadedPolicy | undefined };
}

export class RuleDirectory {
  private constructor(private readonly versions: Map<string, KnownVersion>) {}

  /** The versions pinned under @pins, named from @desired where a version is one of them. */
  static async read(
    pins: PinLayout,
    desired: DesiredPolicy[] = [],
    loaded: LoadedPolicy[] = [],
  ): Promise<RuleDirectory> {
    const byVersion = new Map(desired.map((want) => [want.program.version, want]));
    const byFile = new Map(loaded.map((policy) => [policy.file, policy]));
    const versions = new Map<string, KnownVersion>();
    // A composition's version (src/model/composition.ts) is listed under its name; its slots are not named yet.
    for (const policy of (await listEntries(pins.namespaceDir, "directories")).filter(isProgramName)) {
      for (const version of (await listEntries(pins.policy(policy), "directories")).filter(isVersionName)) {
        const want = byVersion.get(version);
        versions.set(version, {
          policy,
          ...(want?.program.policy === policy && { source: { desired: want, loaded: byFile.get(want.policy.file) } }),
        });
      }
    }
    return new RuleDirectory(versions);
  }

  /** The versions known, with their policy. */
  get policies(): Map<string, string> {
    return new Map([...this.versions].map(([version, known]) => [version, known.policy]));
  }

  /** What @slot of the program @version is. The one place a slot becomes a rule. */
  resolve(version: string, slot: number): ResolvedRule {
    const known = this.versions.get(version);
    const policy = known?.policy ?? null;
    const name = policy ?? `version ${version}`;
    const source = known?.source;
    if (!source) return { policy, slot, label: `${name}[${slot}]`, location: null, summary: null };
    const entry = ruleSlots(source.desired.policy).find((candidate) => candidate.slot === slot);
    if (!entry) return { policy, slot: null, label: name, location: null, summary: null };
    const pointer =
      entry.kind === "interceptor"
        ? `/interceptors/${slot}`
        : `/outbound/rules/${slot - source.desired.policy.rules.length}`;
    const span = source.loaded?.sourceMap.span(pointer);
    return {
      policy,
      slot,
      label: `${name}[${slot}]`,
      location: span ? `${source.desired.policy.file}:${span.line}` : null,
      summary:
        entry.kind === "interceptor" ? ruleSummary(entry.rule as Rule) : outboundSummary(entry.rule as OutboundRule),
    };
  }

  /** How many rule slots @version has, when its policy is known: the slot after them is "no rule". */
  slots(version: string): number | undefined {
    const source = this.versions.get(version)?.source;
    return source ? slotCount(source.desired.policy) : undefined;
  }
}

function outboundSummary(rule: OutboundRule): string {
  const to = rule.cidrs.length === 0 ? "any destination" : rule.cidrs.map((cidr) => cidr.text).join(", ");
  return `outbound tcp ${to} port ${rule.originalPort} -> local ${rule.port}`;
}
