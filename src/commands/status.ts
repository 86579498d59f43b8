import type { RuleCounters } from "../datapath/types.js";
import type { Hook } from "../model/hooks.js";
import type { ProgramBuilder } from "../toolchain/index.js";
import { quoted } from "../diagnostics.js";
import { InterceptError, PolicyError } from "../errors.js";
import { describeNamespace, type NetworkNamespace } from "../model/namespace.js";
import { loadDesired, type DesiredPolicy } from "../reconcile/index.js";
import { describeWarning } from "../plan/render.js";
import { describeDrift } from "../reconcile/drift.js";
import { inspect, type ProgramReport, type StatusReport } from "../reconcile/inspect.js";
import { formatAddress } from "../model/addresses.js";
import { membersOf } from "../model/composition.js";
import { sameVersion } from "../model/version.js";
import { cidrText, ruleSummary, singleOriginalPort, type OutboundRule, type Rule } from "../validate/index.js";
import { outputHeader } from "../model/output-format.js";
import type { CommandContext } from "./context.js";
import { printJson } from "./output.js";
import { counted } from "./words.js";
import { describeLastEvents, lastEvents, statusFlows, type StatusFlows } from "./status-events.js";

/** `intercept status`: attached links, live programs, rules with their counters. */
export async function statusCommand(
  context: CommandContext,
  paths: string[],
  options: { netns: NetworkNamespace; json: boolean; objects?: string },
): Promise<number> {
  const { desired, policiesError } = await policiesForLabels(paths, await context.programBuilder(options.objects));
  const datapath = await context.host.openDatapath(options.netns, "status");
  const report = await inspect(datapath, desired);
  const flows = await statusFlows(datapath.namespaceKey, context.host);
  if (options.json) printJson(withFlowsJson(statusJson(report, policiesError), flows), context.stdout);
  else context.stdout.write(renderStatus(report, policiesError, flows));
  return 0;
}

/** `status --json` with the flow records: `flows { state, agentPid, note }`, and each rule's `lastEvents` (null when not kept). */
export function withFlowsJson(document: ReturnType<typeof statusJson>, flows: StatusFlows) {
  return {
    ...document,
    flows: { state: flows.state, agentPid: flows.agentPid, note: flows.note },
    programs: document.programs.map((program) => ({
      ...program,
      rules: program.rules.map((rule) => ({ ...rule, lastEvents: lastEvents(flows, program.version, rule.index) })),
    })),
  };
}

/**
 * The policies on disk name the live rules; status still shows the kernel
 * when they are invalid, and says why rules are unnamed.
 */
async function policiesForLabels(
  paths: string[],
  builder: ProgramBuilder,
): Promise<{ desired: DesiredPolicy[]; policiesError: string | undefined }> {
  try {
    return { desired: await loadDesired(paths, builder), policiesError: undefined };
  } catch (error) {
    if (error instanceof PolicyError) return { desired: [], policiesError: policiesNote(error) };
    // A node without clang cannot tell which program its policies build into; the kernel is still shown.
    if (error instanceof InterceptError && error.code === "tool-missing")
      return { desired: [], policiesError: `${error.message}: rules are shown by index (pass --objects DIR)` };
    throw error;
  }
}

/** Why the policies cannot name the rules: what is missing, or how many errors they have. */
export function policiesNote(error: PolicyError): string {
  const missing = error.diagnostics.filter((diagnostic) => diagnostic.code === "load/not-found");
  if (missing.length === 0 || missing.length < error.diagnostics.length)
    return `${error.message}: rules are shown by index (run \`intercept validate\`)`;
  const paths = missing.map((diagnostic) => quoted(diagnostic.file, 80)).join(", ");
  return `no policies to name the rules: ${paths} ${missing.length === 1 ? "does" : "do"} not exist; rules are shown by index (give the policies' paths)`;
}

/** `status --json`: schemas/status-output.schema.json. */
export function statusJson(report: StatusReport, policiesError: string | undefined) {
  return {
    ...outputHeader("status"),
    namespace: report.observed.netns.name ?? null,
    policiesError: policiesError ?? null,
    drift: report.drift.map((drift) => ({ ...drift, description: describeDrift(drift) })),
    warnings: report.warnings.map((warning) => ({
      ...warning,
      message: describeWarning(warning, report.observed.netns),
    })),
    links: report.links.map((link) => ({
      link: link.link,
      ifindex: link.ifindex,
      policy: runningPolicy(link.programs),
      programIds: link.programIds,
    })),
    cgroups: report.cgroups.map((cgroup) => ({
      path: cgroup.path,
      id: cgroup.id,
      policy: cgroup.programs[0]?.program.policy ?? null,
      programs: cgroup.programs.map(({ hook }) => hook),
      foreign: cgroup.foreign.map((attachment) => attachment.name),
    })),
    programs: report.programs.map(({ program, rules, countersError }) => ({
      policy: program.ref.policy,
      version: program.ref.version,
      contentHash: program.contentHash,
      complete: program.contentHash !== null,
      programIds: program.programIds,
      cgroupProgramIds: program.cgroupProgramIds,
      exemptCgroups: program.exemptCgroups,
      countersError: countersError ?? null,
      rules: rules.map(({ index, owner, rule, outbound, enabled, counters }) => ({
        index,
        ...(owner && {
          address: formatAddress({ kind: "rule", policy: owner.policy, index: owner.index }),
          file: owner.file,
        }),
        ...(rule && { selector: ruleSummary(rule), rule: ruleJson(rule) }),
        ...(outbound && {
          outbound: {
            originalPort: outbound.originalPort,
            port: outbound.port,
            cidrs: outbound.cidrs.map((cidr) => cidr.text),
          },
        }),
        enabled,
        counters: counters ?? null,
      })),
    })),
  };
}

/**
 * A rule as policies write it: a rule of one port keeps the originalPort it
 * always had, selectors appear only when the rule has them, CIDRs as text.
 */
function ruleJson(rule: Rule) {
  const single = singleOriginalPort(rule);
  const lists = { sources: rule.sources, exceptSources: rule.exceptSources, destinations: rule.destinations };
  return {
    ...(single !== undefined
      ? { originalPort: single }
      : { originalPorts: rule.originalPorts, exceptPorts: rule.exceptPorts }),
    ...Object.fromEntries(
      Object.entries(lists)
        .filter(([, cidrs]) => cidrs.length > 0)
        .map(([field, cidrs]) => [field, cidrs.map(cidrText)]),
    ),
    port: rule.port,
    protocol: rule.protocol,
    family: rule.family,
    strategy: rule.strategy,
    ...(rule.onProxyDown && { onProxyDown: rule.onProxyDown }),
  };
}

function runningPolicy(programs: StatusReport["links"][number]["programs"]): string | null {
  return Object.values(programs).find((ref) => ref !== undefined)?.policy ?? null;
}

/** A rule's counters in words: what its kind counts (all of them for a rule the policies do not name). */
function describeCounters(counters: RuleCounters, rule: Rule | undefined, outbound: OutboundRule | undefined): string {
  const rewrite = `in ${counters.rewrittenIngress.packets} pkts/${counters.rewrittenIngress.bytes} B  out ${counters.rewrittenEgress.packets} pkts/${counters.rewrittenEgress.bytes} B`;
  const steer = `steered ${counted(counters.steered.packets, "connection")} (${counters.timeWaitRecycled.packets} through a recycled TIME_WAIT)  proxy down ${counters.proxyDown.packets}  in TIME_WAIT ${counters.timeWait.packets}`;
  const redirected = `redirected ${counted(counters.redirected.packets, "connection")}`;
  if (outbound) return redirected;
  if (!rule) return `${rewrite}  ${steer}  ${redirected}`;
  return rule.strategy === "steer" ? steer : rewrite;
}

/** "app.slice (capture)", "proxy.slice (getsockopt)": where a version's cgroup programs run. */
function describeCgroups(report: StatusReport, ref: { policy: string; version: string }): string[] {
  return report.cgroups.flatMap((cgroup) => {
    const hooks = cgroup.programs
      .filter(({ program }) => program.policy === ref.policy && program.version === ref.version)
      .map(({ hook }) => hook);
    if (hooks.length === 0) return [];
    const what = hooks.length === 4 ? "capture" : hooks.join(", ");
    return [
      `${cgroup.path} (${what}${cgroup.foreign.length > 0 ? `; ${counted(cgroup.foreign.length, "other program")} left alone` : ""})`,
    ];
  });
}

/**
 * The text form: each link with the program it runs and, for each rule,
 * the policy and file it came from; then programs no link runs (a policy's
 * own program whose links are yet to come, or one that captures cgroups).
 */
export function renderStatus(report: StatusReport, policiesError: string | undefined, flows?: StatusFlows): string {
  const lines = [`intercept in ${describeNamespace(report.observed.netns)}:`];
  if (policiesError) lines.push(`  note: ${policiesError}`);
  if (flows && report.programs.length > 0) lines.push(`  flow records: ${flows.note}`);
  for (const drift of report.drift) lines.push(`  DRIFT: ${describeDrift(drift)}`);
  for (const warning of report.warnings) lines.push(`  WARNING: ${describeWarning(warning, report.observed.netns)}`);
  if (report.programs.length === 0) lines.push("  nothing is loaded");
  const runs = (link: StatusReport["links"][number], program: ProgramReport) =>
    Object.values(link.programs).some((ref) => ref !== undefined && sameVersion(ref, program.program.ref));
  for (const link of report.links) {
    const program = report.programs.find((candidate) => runs(link, candidate));
    const ids = (Object.entries(link.programIds) as [Hook, number][]).map(([hook, id]) => `${hook}=${id}`).join(" ");
    lines.push(
      `  link ${link.link}: ${program ? describeProgram(program) : "a program intercept did not pin"}  ${ids}`,
    );
    if (program) lines.push(...describeRules(program, "    ", flows));
  }
  const unattached = report.programs.filter((program) => !report.links.some((link) => runs(link, program)));
  for (const program of unattached) {
    const ids = (Object.entries(program.program.programIds) as [Hook, number][])
      .map(([hook, id]) => `${hook}=${id}`)
      .join(" ");
    lines.push(`  ${describeProgram(program)}  programs ${ids || "(none)"}  links: (none)`);
    const cgroupIds = Object.entries(program.program.cgroupProgramIds)
      .map(([hook, id]) => `${hook}=${id}`)
      .join(" ");
    if (cgroupIds) lines.push(`    cgroup programs ${cgroupIds}`);
    const cgroups = describeCgroups(report, program.program.ref);
    if (cgroups.length > 0 || cgroupIds)
      lines.push(`    cgroups: ${cgroups.length > 0 ? cgroups.join(", ") : "(none)"}`);
    lines.push(...describeRules(program, "    ", flows));
  }
  return `${lines.join("\n")}\n`;
}

/** "program db+web @1a2b3c4d5e6f (policies db, web)": a version, and whose rules it holds. */
function describeProgram({ program, desired }: ProgramReport): string {
  const policies = desired ? desired.members.map((member) => member.name) : (membersOf(program.ref.policy) ?? []);
  const holds = policies.length > 1 ? ` (policies ${policies.join(", ")})` : "";
  const incomplete = program.contentHash === null ? "  INCOMPLETE: a load never finished" : "";
  return `program ${program.ref.policy} @${(program.contentHash ?? program.ref.version).slice(0, 12)}${holds}${incomplete}`;
}

/** Each rule of @program: its address, file, what it matches, its switch and its counters. */
function describeRules(
  { program, rules, countersError }: ProgramReport,
  indent: string,
  flows?: StatusFlows,
): string[] {
  const lines = countersError ? [`${indent}counters unreadable: ${countersError}`] : [];
  for (const { index, owner, rule, outbound, enabled, counters } of rules) {
    const what = rule
      ? `${ruleSummary(rule)} ${rule.strategy}`
      : outbound
        ? `outbound tcp ${outbound.originalPort} -> proxy ${outbound.port}${outbound.cidrs.length > 0 ? ` (${outbound.cidrs.map((cidr) => cidr.text).join(", ")})` : ""}`
        : "(rule not in the given policies)";
    const address = owner
      ? `${formatAddress({ kind: "rule", policy: owner.policy, index: owner.index })} (${owner.file})`
      : `[${index}]`;
    lines.push(
      `${indent}${address} ${what.padEnd(28)} ${enabled ? "enabled " : "disabled"}${counters ? `  ${describeCounters(counters, rule, outbound)}` : ""}`,
    );
    if (flows) lines.push(...describeLastEvents(flows, program.ref.version, index, `${indent}  `));
  }
  return lines;
}
