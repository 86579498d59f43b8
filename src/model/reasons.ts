/**
 * Why a plan makes a change, as a stable code: what decisions and tools
 * read (saved plans compare it, `plan --json` prints it). The change's
 * `reason` text says the same in words for a reviewer and may be reworded
 * freely; nothing decides on it. Terraform's ActionReason, but also
 * compared by saved plans, since a different cause is a different plan.
 */
export const REASON_CODES = [
  /** program.create: a policy no link ran before. */
  "policy-added",
  /** program.create: a composition of policies that select the same links. */
  "composition-added",
  /** program.create or program.delete: a version whose load never finished (an interrupted apply). */
  "interrupted-load",
  /** program.replace: a policy's program changed. */
  "policy-changed",
  /** program.replace: a composed program changed (each member's rules reload with it). */
  "shared-program-changed",
  /** program.delete: a complete version beside the one the policy keeps. */
  "stale-version",
  /** program.delete: a policy no longer given. */
  "policy-removed",
  /** program.delete: a policy that now runs composed with others everywhere it runs. */
  "policy-composed",
  /** program.delete: a composition no link runs any more. */
  "composition-removed",
  /** attachment.create: a link a policy selects that runs nothing of ours yet. */
  "link-selected",
  /** attachment.update: a link switches to the version its policies give. */
  "program-switched",
  /** attachment.update or cgroup.update: a link or cgroup left running two versions by an interrupted apply. */
  "half-switched",
  /** attachment.update: a link running the node's program, attached by the CNI plugin. */
  "node-program",
  /** attachment.delete: a link no policy selects any more. */
  "link-unselected",
  /** qdisc.delete: a clsact qdisc intercept created, holding nothing. */
  "empty-qdisc",
  /** registry.update: records of qdiscs that are gone. */
  "qdisc-gone",
  /** pins.delete: pins an interrupted run left empty. */
  "empty-pins",
  /** rule.update: a rule switched on or off (live edit). */
  "rule-toggled",
  /** cgroup.create: a cgroup a policy names that runs nothing of ours yet. */
  "cgroup-named",
  /** cgroup.delete: a cgroup no policy names any more. */
  "cgroup-unnamed",
  /** exemption.update: an exempt cgroup was made again (live edit). */
  "cgroup-recreated",
] as const;

export type ReasonCode = (typeof REASON_CODES)[number];

/**
 * What an interrupted run can leave, found by the observed view: a drift
 * entry's `kind` is its code (stable; its description is text for display).
 */
export const DRIFT_CODES = [
  "incomplete-version",
  "half-switched",
  "unknown-program",
  "empty-qdisc",
  "stale-qdisc-record",
  "empty-pins",
  "cgroup-half-switched",
] as const;

export type DriftCode = (typeof DRIFT_CODES)[number];
