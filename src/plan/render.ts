import { styleText } from "node:util";
import { describeNamespace } from "../model/namespace.js";
import { outputHeader } from "../model/output-format.js";
import type { NetworkNamespace } from "../model/namespace.js";
import { actionOf, summarise, type Action, type Plan, type PlanWarning } from "./model.js";

type Colour = "green" | "yellow" | "red" | "magenta";

const SYMBOL: Record<Action, { symbol: string; colour: Colour; verb: string }> = {
  create: { symbol: "+", colour: "green", verb: "create" },
  update: { symbol: "~", colour: "yellow", verb: "update in place" },
  replace: { symbol: "-/+", colour: "magenta", verb: "replace" },
  delete: { symbol: "-", colour: "red", verb: "destroy" },
};

/** Terraform-style text: one line per change with its reason, then the summary. */
export function renderPlan(plan: Plan, options: { colour: boolean }): string {
  const paint = (colour: Colour | "bold", text: string) => (options.colour ? styleText(colour, text) : text);
  const warnings = plan.warnings
    .map((warning) => `${paint("yellow", "Warning:")} ${describeWarning(warning, plan.netns)}\n`)
    .join("");
  if (plan.changes.length === 0) {
    return `${paint("bold", "No changes.")} The kernel in ${describeNamespace(plan.netns)} matches the policies.\n${warnings && `\n${warnings}`}`;
  }
  const width = Math.max(...plan.changes.map((change) => change.address.length));
  const lines = plan.changes.map((change) => {
    const { symbol, colour, verb } = SYMBOL[actionOf(change)];
    return `  ${paint(colour, symbol.padStart(3))} ${change.address.padEnd(width)}  ${verb}: ${change.reason}`;
  });
  const { add, change, destroy } = summarise(plan);
  return (
    [
      `intercept will perform the following actions in ${describeNamespace(plan.netns)}:`,
      "",
      ...lines,
      "",
      `${paint("bold", "Plan:")} ${add} to add, ${change} to change, ${destroy} to destroy.`,
      "",
    ].join("\n") + (warnings && `\n${warnings}`)
  );
}

/** A warning in words: what is wrong now, what applying would do, what to do about it. */
export function describeWarning(warning: PlanWarning, netns: NetworkNamespace): string {
  const where = describeNamespace(netns);
  switch (warning.kind) {
    case "proxy-not-listening":
      return `policy ${warning.policy} rule ${warning.rule} steers port ${warning.originalPorts} to tcp port ${warning.port}, where nothing listens in ${where}: applying now would drop new connections to port ${warning.originalPorts} on ${warning.links.join(", ")} (onProxyDown: drop); start the proxy first, or set onProxyDown: pass`;
    case "outbound-proxy-not-listening":
      return `policy ${warning.policy} outbound rule ${warning.rule} sends connections to port ${warning.originalPort} to tcp port ${warning.port}, where nothing listens in ${where}: applying now would refuse new connections to port ${warning.originalPort} from ${warning.cgroups.join(", ")}; start the proxy first`;
    case "outbound-proxy-uncaptured":
      return `policy ${warning.policy} outbound rule ${warning.rule}: tcp port ${warning.port} is listened on in cgroup ${warning.listenerCgroups.map((cgroup) => cgroup || "/").join(", ")}, outside every captured and exempt cgroup: its SO_ORIGINAL_DST queries will fail with ENOENT; run the proxy in a cgroup of exempt.cgroups`;
    case "namespaces-match-nothing": {
      const here =
        warning.namespace === undefined ? "the host's namespace, which has no name" : `"${warning.namespace}"`;
      return `policy ${warning.policy} (${warning.file}): namespaces ${JSON.stringify(warning.namespaces)} match no name of the namespace planned (${here}): the policy is left out here${didYouMean(warning.suggestion)}`;
    }
    case "interfaces-match-nothing":
      return `policy ${warning.policy} (${warning.file}): interfaces.include "${warning.include}" matches no link in ${where} (links here: ${warning.links.join(", ") || "none"}): nothing is attached for it${didYouMean(warning.suggestion)}`;
  }
}

function didYouMean(suggestion: string | undefined): string {
  return suggestion === undefined ? "" : `; did you mean "${suggestion}"?`;
}

/** `plan --json`: schemas/plan-output.schema.json. */
export function planJson(plan: Plan) {
  return {
    ...outputHeader("plan"),
    namespace: plan.netns.name ?? null,
    changes: plan.changes.map((change) => ({ action: actionOf(change), ...change })),
    summary: summarise(plan),
    warnings: plan.warnings.map((warning) => ({ ...warning, message: describeWarning(warning, plan.netns) })),
  };
}
