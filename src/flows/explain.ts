/**
 * `intercept explain`: what would happen to one connection now, and why.
 * Inbound, each link running a program of ours gets the connection's first
 * packet through a side copy of that program (test-run.ts); the policy the
 * program was built from names the rule, its file:line and the rules that
 * came close (explain-rules.ts). Links without a program say why not.
 * Outbound, the policies' compiled rule sets decide for a cgroup and uid.
 */
import { InterceptError } from "../errors.js";
import type { ProgramBuilder } from "../toolchain/index.js";
import type { Datapath } from "../datapath/types.js";
import { run } from "../kernel/exec.js";
import { type NetworkNamespace } from "../model/namespace.js";
import { namespaceKey } from "../kernel/namespace.js";
import { PinLayout } from "../kernel/pins.js";
import { listListeners, type Listener } from "../kernel/sockets.js";
import type { LoadedPolicy } from "../load/index.js";
import { composedSlots, slotCount, slottedRules } from "../model/rule-slots.js";
import type { VersionRef } from "../model/version.js";
import type { DesiredPolicy } from "../reconcile/desired.js";
import { inspect, type ProgramReport, type StatusReport } from "../reconcile/inspect.js";
import { appliesIn } from "../validate/namespaces.js";
import type { OutboundRule, Rule, ValidPolicy } from "../validate/model.js";
import {
  inboundMatches,
  noProgramReason,
  outboundVerdict,
  type Endpoint,
  type InboundConnection,
  type OutboundConnection,
} from "./explain-rules.js";
import { RuleDirectory } from "./rules.js";
import { firstPacket } from "./test-packet.js";
import { withSideCopy, type TestRunResult } from "./test-run.js";

const TC_ACT_SHOT = 2;

export type InboundVerdict =
  | "steered"
  | "proxy-down-dropped"
  | "proxy-down-passed"
  | "rewritten"
  | "rule-disabled"
  | "no-rule"
  | "unknown-program";

export interface NamedRule {
  label: string;
  location: string | null;
  summary: string | null;
}

export interface LinkExplanation {
  link: string;
  policy: string | null;
  version: string | null;
  verdict: InboundVerdict;
  /** One sentence: why. */
  reason: string;
  rule: NamedRule | null;
  /** Where the connection goes: the proxy's port, for a rule that acts. */
  target: { port: number; listener: boolean } | null;
  /** Whether the live program's test run agrees with the policy's rules (null: not run). */
  testRun: { returnValue: number; slot: number | null; counter: string | null } | null;
  nearMisses: { rule: NamedRule; reason: string }[];
}

export interface UnattachedLink {
  link: string;
  reasons: string[];
}

export interface InboundExplanation {
  direction: "inbound";
  connection: InboundConnection;
  links: LinkExplanation[];
  unattached: UnattachedLink[];
}

export interface OutboundExplanation {
  direction: "outbound";
  connection: OutboundConnection;
  policies: {
    policy: string;
    verdict: string;
    reason: string;
    rule: NamedRule | null;
    nearMisses: { rule: NamedRule; reason: string }[];
  }[];
}

export interface ExplainContext {
  netns: NetworkNamespace;
  datapath: Datapath;
  desired: DesiredPolicy[];
  loaded: LoadedPolicy[];
  builder: ProgramBuilder;
}

/** explainMany for one connection. */
export async function explainInbound(
  context: ExplainContext,
  connection: InboundConnection,
): Promise<InboundExplanation> {
  return (await explainMany(context, [connection]))[0]!;
}

/**
 * Each of @connections, explained: one side copy per link serves them all
 * (a copy's load is most of the cost).
 */
export async function explainMany(
  context: ExplainContext,
  connections: InboundConnection[],
): Promise<InboundExplanation[]> {
  await refuseTimeWait(context.netns, connections);
  const report = await inspect(context.datapath, context.desired);
  const pins = new PinLayout(await namespaceKey(context.netns));
  const directory = await RuleDirectory.read(pins, context.desired, context.loaded);
  const listeners = await listListeners(context.netns);
  const perLink: LinkExplanation[][] = connections.map(() => []);
  for (const link of report.links) {
    const version = link.programs.ingress;
    if (!version) continue;
    const program = report.programs.find((candidate) => sameRef(candidate.program.ref, version));
    const explained = await explainLink(context, pins, directory, link.link, version, program, connections, listeners);
    explained.forEach((explanation, index) => perLink[index]!.push(explanation));
  }
  const unattached = report.observed.links
    .filter((link) => link.filters.ingress === undefined)
    .map((link) => ({
      link: link.name,
      reasons: noProgramReasons(context.desired, link, context.netns.name),
    }));
  return connections.map((connection, index) => ({
    direction: "inbound",
    connection,
    links: perLink[index]!,
    unattached,
  }));
}

/** Why @link runs no program of the policies given: one line per policy with interceptors, said once each. */
export function noProgramReasons(
  desired: Pick<DesiredPolicy, "policy">[],
  link: { name: string; loopback: boolean; linkType: string },
  namespace: string | undefined,
): string[] {
  if (desired.length === 0) return ["no policies were given to say why (give the policies' paths)"];
  const linked = desired.filter((want) => want.policy.rules.length > 0);
  if (linked.length === 0) return ["no policy given has interceptors: they capture outbound only"];
  return [...new Set(linked.map((want) => noProgramReason(want.policy, link, namespace)))];
}

async function explainLink(
  context: ExplainContext,
  pins: PinLayout,
  directory: RuleDirectory,
  link: string,
  version: VersionRef,
  program: ProgramReport | undefined,
  connections: InboundConnection[],
  listeners: Listener[],
): Promise<LinkExplanation[]> {
  const base = { link, policy: version.policy, version: version.version };
  const desired = program?.desired;
  if (!program || !desired)
    return connections.map(() => ({
      ...base,
      verdict: "unknown-program",
      reason: `${version.policy}@${version.version} is not built from the policies given: give the policies it was applied from`,
      rule: null,
      target: null,
      testRun: null,
      nearMisses: [],
    }));
  const objectPath = await context.builder.object(desired.compiled, desired.contentHash);
  // A composed program numbers its members' rules in one sequence (src/model/rule-slots.ts).
  const slotOf = programSlots(desired.members);
  const rules = desired.members.flatMap((member) => member.rules);
  const slots = desired.members.reduce((sum, member) => sum + slotCount(member), 0);
  const enabled = (rule: Rule | OutboundRule) =>
    program.rules.find((entry) => entry.index === slotOf.get(rule))?.enabled ?? false;
  const name = (rule: Rule): NamedRule => {
    const { label, location, summary } = directory.resolve(version.version, slotOf.get(rule)!);
    return { label, location, summary };
  };
  return withSideCopy(pins, version, objectPath, async (copy) => {
    const ran = await copy.runMany(context.netns, connections.map(firstPacket), slots);
    return connections.map((connection, index) => ({
      ...base,
      ...verdictOf(rules, slotOf, connection, ran[index]!, enabled, name, listeners),
    }));
  });
}

/** The verdict, from what the side copy did and who listens, named from the policy's rules. */
function verdictOf(
  rules: readonly Rule[],
  slotOf: Map<Rule | OutboundRule, number>,
  connection: InboundConnection,
  ran: TestRunResult,
  enabled: (rule: Rule) => boolean,
  name: (rule: Rule) => NamedRule,
  listeners: Listener[],
): Omit<LinkExplanation, "link" | "policy" | "version"> {
  const { selected, selectedEnabled, nearMisses } = inboundMatches(rules, connection, enabled);
  const testRun = {
    returnValue: ran.returnValue,
    slot: ran.matched?.slot ?? null,
    counter: ran.matched?.counter ?? null,
  };
  const near = nearMisses.map((miss) => ({ rule: name(miss.rule), reason: miss.misses[0]! }));
  const acted = ran.matched ? rules.find((rule) => slotOf.get(rule) === ran.matched!.slot) : undefined;
  if (!acted) {
    // The program is the policy's by content hash, so the two agree; if they ever do not, the program's word stands.
    const why = !selected
      ? "no rule selects it: the packet is handed on untouched"
      : selectedEnabled
        ? `rule ${name(selected).label} selects it, yet the program handed it on untouched`
        : `rule ${name(selected).label} selects it but is disabled: the packet is handed on untouched`;
    return {
      verdict: selected && !selectedEnabled ? "rule-disabled" : "no-rule",
      reason: why,
      rule: selected ? name(selected) : null,
      target: null,
      testRun,
      nearMisses: near,
    };
  }
  const listener = listening(listeners, connection.destination, acted.port);
  if (ran.matched!.counter === "rewrittenIngress")
    return {
      verdict: "rewritten",
      reason: `its destination port is rewritten to ${acted.port}`,
      rule: name(acted),
      target: { port: acted.port, listener: connection.protocol === "tcp" && listener },
      testRun,
      nearMisses: near,
    };
  // Test run cannot assign a socket: a steered SYN always shows as proxy down there.
  const verdict: InboundVerdict = listener
    ? "steered"
    : ran.returnValue === TC_ACT_SHOT
      ? "proxy-down-dropped"
      : "proxy-down-passed";
  const reason = listener
    ? `the SYN is assigned to the listener on port ${acted.port}`
    : `nothing listens on port ${acted.port}: the SYN is ${verdict === "proxy-down-dropped" ? "dropped (onProxyDown: drop)" : "handed on (onProxyDown: pass)"}`;
  return { verdict, reason, rule: name(acted), target: { port: acted.port, listener }, testRun, nearMisses: near };
}

/** Whether a TCP listener on @port would take a connection to @destination. */
function listening(listeners: Listener[], destination: Endpoint, port: number): boolean {
  return listeners.some((listener) => {
    if (listener.port !== port) return false;
    const address = listener.address.replace(/^\[|\]$/g, "").replace(/%.*$/, "");
    if (address === "*" || address === "::") return true;
    if (address === "0.0.0.0") return destination.family === "ipv4";
    return address === destination.address || address === `::ffff:${destination.address}`;
  });
}

/**
 * A SYN whose tuple is in TIME_WAIT makes the program send a real RST
 * ahead of it, test run or not: refused, before anything is loaded.
 */
async function refuseTimeWait(netns: NetworkNamespace, connections: InboundConnection[]): Promise<void> {
  const tcp = connections.filter((connection) => connection.protocol === "tcp");
  if (tcp.length === 0) return;
  const text = await run("ss", ["-H", "--tcp", "--numeric", "state", "time-wait"], netns);
  const end = (endpoint: Endpoint) =>
    endpoint.family === "ipv6" ? `[${endpoint.address}]:${endpoint.port}` : `${endpoint.address}:${endpoint.port}`;
  const lines = text.split("\n").map((line) => line.trim().split(/\s+/));
  for (const connection of tcp) {
    const [local, peer] = [end(connection.destination), end(connection.source)];
    if (lines.some((fields) => fields.includes(local) && fields.includes(peer)))
      throw new InterceptError(
        "explain-refused",
        `${peer} → ${local} is in TIME_WAIT: a SYN for it would end that TIME_WAIT for real; give another --from port`,
      );
  }
}

export function explainOutbound(
  report: StatusReport,
  directory: RuleDirectory,
  desired: DesiredPolicy[],
  netns: NetworkNamespace,
  connection: OutboundConnection,
): OutboundExplanation {
  const policies: OutboundExplanation["policies"] = [];
  for (const want of desired) {
    const outbound = want.policy.outbound;
    if (!outbound || !appliesIn(want.policy, netns.name)) continue;
    // The program holding this policy's outbound rules: its own, or a composition it is a member of.
    const program = report.programs.find((candidate) =>
      candidate.desired?.members.some((member) => member.name === want.policy.name && member.file === want.policy.file),
    );
    const slotOf = programSlots(program?.desired?.members ?? []);
    const version = program?.program.ref.version ?? want.program.version;
    const name = (rule: OutboundRule): NamedRule => {
      const { label, location, summary } = directory.resolve(version, slotOf.get(rule) ?? rule.index);
      return { label, location, summary };
    };
    if (!program) {
      policies.push({
        policy: want.policy.name,
        verdict: "not-applied",
        reason: `policy ${want.policy.name}'s outbound capture is not loaded here (see \`intercept plan\`)`,
        rule: null,
        nearMisses: [],
      });
      continue;
    }
    const enabled = (rule: OutboundRule) =>
      program.rules.find((entry) => entry.index === slotOf.get(rule))?.enabled ?? false;
    const result = outboundVerdict(outbound, connection, enabled);
    policies.push({
      policy: want.policy.name,
      verdict: result.verdict,
      reason: result.reason,
      rule: "rule" in result ? name(result.rule) : null,
      nearMisses:
        result.verdict === "no-rule"
          ? result.nearMisses.map((miss) => ({ rule: name(miss.rule), reason: miss.miss }))
          : [],
    });
  }
  return { direction: "outbound", connection, policies };
}

export async function outboundContext(context: ExplainContext) {
  const report = await inspect(context.datapath, context.desired);
  const pins = new PinLayout(await namespaceKey(context.netns));
  return { report, directory: await RuleDirectory.read(pins, context.desired, context.loaded) };
}

/** Each rule of @members' program, interceptor or outbound, with its slot in that program. */
function programSlots(members: readonly ValidPolicy[]): Map<Rule | OutboundRule, number> {
  const slots = composedSlots(members);
  const slotOf = new Map<Rule | OutboundRule, number>();
  members.forEach((member, m) => {
    for (const [i, rule] of slottedRules<Rule, OutboundRule>(member).entries()) slotOf.set(rule, slots[m]![i]!);
  });
  return slotOf;
}

function sameRef(a: VersionRef, b: VersionRef): boolean {
  return a.policy === b.policy && a.version === b.version;
}
