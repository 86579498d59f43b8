import { UsageError } from "../errors.js";
import {
  explainInbound,
  explainOutbound,
  outboundContext,
  type ExplainContext,
  type InboundExplanation,
  type NamedRule,
  type OutboundExplanation,
} from "../flows/explain.js";
import { parseEndpoint, type Endpoint } from "../flows/explain-rules.js";
import { describeNamespace, type NetworkNamespace } from "../model/namespace.js";
import { outputHeader } from "../model/output-format.js";
import { desiredState, validPolicies } from "../reconcile/index.js";
import type { CommandContext } from "./context.js";
import { printJson } from "./output.js";

export interface ExplainCommandOptions {
  netns: NetworkNamespace;
  to: string | undefined;
  from: string | undefined;
  udp: boolean;
  cgroup: string | undefined;
  uid: string | undefined;
  json: boolean;
  objects?: string;
}

/** The client a connection comes from when --from is not given. */
const DEFAULT_SOURCE = { ipv4: "198.18.255.254", ipv6: "fd00::fffe" } as const;
const DEFAULT_SOURCE_PORT = 40000;

/** `intercept explain`: what would happen to a connection now, and why. */
export async function explainCommand(
  context: CommandContext,
  paths: string[],
  options: ExplainCommandOptions,
): Promise<number> {
  const { stdout } = context;
  const query = readQuery(options);
  const builder = await context.programBuilder(options.objects);
  const { loaded, policies } = await validPolicies(paths);
  const desired = await desiredState(loaded, policies, builder);
  const datapath = await context.host.openDatapath(options.netns, "explain");
  const explaining: ExplainContext = { netns: options.netns, datapath, desired, loaded, builder };
  if (query.direction === "outbound") {
    const { report, directory } = await outboundContext(explaining);
    const explanation = explainOutbound(report, directory, desired, options.netns, query.connection);
    if (options.json)
      printJson({ ...outputHeader("explain"), namespace: options.netns.name ?? null, ...explanation }, stdout);
    else stdout.write(renderOutbound(explanation, options.netns));
    return 0;
  }
  const explanation = await explainInbound(explaining, query.connection);
  if (options.json)
    printJson({ ...outputHeader("explain"), namespace: options.netns.name ?? null, ...explanation }, stdout);
  else stdout.write(renderInbound(explanation, options.netns));
  return 0;
}

type Query =
  | { direction: "inbound"; connection: InboundExplanation["connection"] }
  | { direction: "outbound"; connection: OutboundExplanation["connection"] };

/** The options as a connection; every mistake is a usage error, before anything is read. */
export function readQuery(options: Omit<ExplainCommandOptions, "netns" | "json" | "objects">): Query {
  if (options.to === undefined) throw new UsageError("explain needs --to ADDR:PORT");
  const destination = endpoint("--to", options.to, false);
  if ((options.cgroup === undefined) !== (options.uid === undefined))
    throw new UsageError("--cgroup and --uid go together: the connecting task's cgroup and uid");
  if (options.cgroup !== undefined) {
    if (options.udp) throw new UsageError("outbound capture is TCP only: --udp does not go with --cgroup");
    if (options.from !== undefined) throw new UsageError("--from is for inbound connections, not with --cgroup");
    if (!/^(0|[1-9][0-9]{0,9})$/.test(options.uid!) || Number(options.uid) > 0xffffffff)
      throw new UsageError(`--uid ${options.uid} is not a uid`);
    return {
      direction: "outbound",
      connection: { cgroup: options.cgroup.replace(/^\/+/, ""), uid: Number(options.uid), destination },
    };
  }
  const source =
    options.from === undefined
      ? { family: destination.family, address: DEFAULT_SOURCE[destination.family], port: DEFAULT_SOURCE_PORT }
      : endpoint("--from", options.from, true);
  if (source.family !== destination.family)
    throw new UsageError(`--from ${options.from} and --to ${options.to} are of different families`);
  if (source.port === 0) source.port = DEFAULT_SOURCE_PORT;
  return { direction: "inbound", connection: { protocol: options.udp ? "udp" : "tcp", source, destination } };
}

function endpoint(flag: string, text: string, portOptional: boolean): Endpoint {
  const read = parseEndpoint(text, portOptional);
  if (typeof read === "string") throw new UsageError(`${flag}: ${read}`);
  return read;
}

function endpointText(end: Endpoint): string {
  return end.family === "ipv6" ? `[${end.address}]:${end.port}` : `${end.address}:${end.port}`;
}

function ruleText(rule: NamedRule): string {
  const where = rule.location ? ` (${rule.location})` : "";
  return `${rule.label}${where}${rule.summary ? `: ${rule.summary}` : ""}`;
}

export function renderInbound(explanation: InboundExplanation, netns: NetworkNamespace): string {
  const { protocol, source, destination } = explanation.connection;
  const lines = [
    `${protocol} ${endpointText(source)} → ${endpointText(destination)} in ${describeNamespace(netns)}`,
    "",
  ];
  for (const link of explanation.links) {
    lines.push(`${link.link}: ${link.verdict}  (${link.policy}@${link.version})`);
    if (link.rule) lines.push(`  rule ${ruleText(link.rule)}`);
    lines.push(`  ${link.reason}`);
    for (const near of link.nearMisses)
      lines.push(`  not ${near.rule.label}${near.rule.location ? ` (${near.rule.location})` : ""}: ${near.reason}`);
  }
  if (explanation.links.length === 0) lines.push("no link here runs a program of intercept's");
  for (const link of explanation.unattached) {
    lines.push(`${link.link}: no program`);
    for (const reason of link.reasons) lines.push(`  ${reason}`);
  }
  return `${lines.join("\n")}\n`;
}

export function renderOutbound(explanation: OutboundExplanation, netns: NetworkNamespace): string {
  const { cgroup, uid, destination } = explanation.connection;
  const lines = [
    `connect() to ${endpointText(destination)} from cgroup /${cgroup}, uid ${uid}, in ${describeNamespace(netns)}`,
    "",
  ];
  for (const policy of explanation.policies) {
    lines.push(`${policy.policy}: ${policy.verdict}`);
    if (policy.rule) lines.push(`  rule ${ruleText(policy.rule)}`);
    lines.push(`  ${policy.reason}`);
    for (const near of policy.nearMisses)
      lines.push(`  not ${near.rule.label}${near.rule.location ? ` (${near.rule.location})` : ""}: ${near.reason}`);
  }
  if (explanation.policies.length === 0) lines.push("no policy given here has outbound capture");
  return `${lines.join("\n")}\n`;
}
