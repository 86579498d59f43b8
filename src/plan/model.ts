import type { NetworkNamespace } from "../kernel/exec.js";

/**
 * A plan is data: the list of changes that takes the live kernel to the
 * policies. `plan` renders it, `apply` and the agent execute it.
 *
 * Addresses: program.<policy>, attachment.<link>, rule.<policy>[<index>].
 */
export type Change = ProgramChange | AttachmentChange | RuleChange;

export interface ProgramChange {
  resource: "program";
  action: "create" | "replace" | "delete";
  address: string;
  policy: string;
  /** The version to load (create, replace). */
  contentHash?: string;
  /** Desired enabled flag per rule, written into the new version's rule_state. */
  enabled?: boolean[];
  /** The version to unpin (replace, delete). */
  oldDir?: string;
  reason: string;
}

export interface AttachmentChange {
  resource: "attachment";
  action: "create" | "update" | "delete";
  address: string;
  link: string;
  ifindex: number;
  /** What the link should run (create, update). */
  policy?: string;
  contentHash?: string;
  reason: string;
}

export interface RuleChange {
  resource: "rule";
  action: "update";
  address: string;
  policy: string;
  contentHash: string;
  index: number;
  enabled: boolean;
  reason: string;
}

export interface Plan {
  /** The namespace the plan is for. */
  netns: NetworkNamespace;
  namespaceKey: string;
  changes: Change[];
}

export interface PlanSummary {
  add: number;
  change: number;
  destroy: number;
}

/** Terraform's counting: a replace adds one and destroys one. */
export function summarise(plan: Plan): PlanSummary {
  const summary = { add: 0, change: 0, destroy: 0 };
  for (const change of plan.changes) {
    if (change.action === "create" || change.action === "replace") summary.add++;
    if (change.action === "delete" || change.action === "replace") summary.destroy++;
    if (change.action === "update") summary.change++;
  }
  return summary;
}
