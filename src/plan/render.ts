import { styleText } from "node:util";
import { describeNamespace } from "../model/namespace.js";
import { outputHeader } from "../model/output-format.js";
import { actionOf, summarise, type Action, type Plan } from "./model.js";

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
  if (plan.changes.length === 0) {
    return `${paint("bold", "No changes.")} The kernel in ${describeNamespace(plan.netns)} matches the policies.\n`;
  }
  const width = Math.max(...plan.changes.map((change) => change.address.length));
  const lines = plan.changes.map((change) => {
    const { symbol, colour, verb } = SYMBOL[actionOf(change)];
    return `  ${paint(colour, symbol.padStart(3))} ${change.address.padEnd(width)}  ${verb}: ${change.reason}`;
  });
  const { add, change, destroy } = summarise(plan);
  return [
    `intercept will perform the following actions in ${describeNamespace(plan.netns)}:`,
    "",
    ...lines,
    "",
    `${paint("bold", "Plan:")} ${add} to add, ${change} to change, ${destroy} to destroy.`,
    "",
  ].join("\n");
}

/** `plan --json`: schemas/plan-output.schema.json. */
export function planJson(plan: Plan) {
  return {
    ...outputHeader("plan"),
    namespace: plan.netns.name ?? null,
    changes: plan.changes.map((change) => ({ action: actionOf(change), ...change })),
    summary: summarise(plan),
  };
}
