import { contentHash } from "../build/index.js";
import { compilePolicies } from "../compile/index.js";
import type { NetworkNamespace } from "../kernel/exec.js";
import { describeNamespace } from "../kernel/namespace.js";
import { loadPolicies } from "../load/index.js";
import { readRuleCounters, type Counter } from "../live/counters.js";
import { isAttached, programOnLink, readLiveState, type LiveProgram } from "../live/index.js";
import { validatePolicies, type Rule } from "../validate/index.js";

interface RuleStatus {
  index: number;
  rule?: Pick<Rule, "originalPort" | "port" | "protocol" | "family">;
  enabled: boolean;
  ingress: Counter;
  egress: Counter;
}

/** `intercept status`: attached links, live programs, rules with their counters. */
export async function statusCommand(paths: string[], options: { netns: NetworkNamespace; json: boolean }): Promise<number> {
  const live = await readLiveState(options.netns);
  const known = await knownRules(paths);
  const programs = await Promise.all(live.programs.map(async (program) => ({
    policy: program.policy,
    contentHash: program.contentHash,
    programIds: program.programIds,
    rules: await ruleStatuses(program, known.get(program.contentHash)),
  })));
  const links = live.attachments
    .filter(isAttached)
    .map((a) => ({ link: a.link.name, ifindex: a.link.ifindex, policy: programOnLink(live, a)?.policy ?? null, programIds: a.programIds }));
  const status = { namespace: options.netns.name ?? null, links, programs };
  process.stdout.write(options.json ? `${JSON.stringify(status, null, 2)}\n` : renderStatus(status, options.netns));
  return 0;
}

/** Rules of the policies on disk, by content hash, to label live rules (the kernel holds only indexes). */
async function knownRules(paths: string[]): Promise<Map<string, Rule[]>> {
  const { policies } = validatePolicies((await loadPolicies(paths)).policies);
  const byHash = new Map<string, Rule[]>();
  for (const compiled of compilePolicies(policies)) byHash.set(await contentHash(compiled), compiled.policy.rules);
  return byHash;
}

async function ruleStatuses(program: LiveProgram, rules: Rule[] | undefined): Promise<RuleStatus[]> {
  const counters = await readRuleCounters(program);
  return program.enabled.map((enabled, index) => {
    const rule = rules?.[index];
    const described = rule && { originalPort: rule.originalPort, port: rule.port, protocol: rule.protocol, family: rule.family };
    return { index, ...(described && { rule: described }), enabled, ...counters[index]! };
  });
}

function renderStatus(
  status: { links: { link: string; policy: string | null; programIds: object }[]; programs: { policy: string; contentHash: string; programIds: { ingress: number; egress: number }; rules: RuleStatus[] }[] },
  netns: NetworkNamespace,
): string {
  const lines = [`intercept in ${describeNamespace(netns)}:`];
  if (status.programs.length === 0) lines.push("  nothing is loaded");
  for (const program of status.programs) {
    const attached = status.links.filter((l) => l.policy === program.policy).map((l) => l.link);
    lines.push(`  policy ${program.policy} @${program.contentHash.slice(0, 12)}  programs ingress=${program.programIds.ingress} egress=${program.programIds.egress}`);
    lines.push(`    links: ${attached.length > 0 ? attached.join(", ") : "(none)"}`);
    for (const rule of program.rules) {
      const what = rule.rule ? `${rule.rule.protocol} ${rule.rule.originalPort} -> ${rule.rule.port}` : "(rule not in the given policies)";
      lines.push(`    [${rule.index}] ${what.padEnd(22)} ${rule.enabled ? "enabled " : "disabled"}  in ${rule.ingress.packets} pkts/${rule.ingress.bytes} B  out ${rule.egress.packets} pkts/${rule.egress.bytes} B`);
    }
  }
  return `${lines.join("\n")}\n`;
}
