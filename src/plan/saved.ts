import { createHash } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { InterceptError } from "../errors.js";
import type { LiveState } from "../live/index.js";
import type { ValidPolicy } from "../validate/index.js";
import type { Plan } from "./model.js";

/**
 * A plan saved by `plan --out FILE`, applied later by `apply FILE`: the
 * changes, the policies they load (to compile and build at apply time),
 * and a fingerprint of the live state they were computed from, so apply
 * can refuse when the kernel moved in between.
 */
export interface SavedPlan {
  format: "intercept-plan";
  format_version: 1;
  createdAt: string;
  liveFingerprint: string;
  plan: Plan;
  policies: ValidPolicy[];
}

/** What the plan depends on in the live state; foreign filters are not ours to plan for. */
export function liveFingerprint(live: LiveState): string {
  const relevant = {
    namespaceKey: live.namespaceKey,
    links: live.links.map((l) => [l.ifindex, l.name, l.loopback]).sort(),
    programs: live.programs.map((p) => [p.policy, p.contentHash, p.dir, p.programIds.ingress, p.programIds.egress, p.enabled]).sort(),
    attachments: live.attachments.map((a) => [a.link.ifindex, a.programIds.ingress ?? 0, a.programIds.egress ?? 0]).sort(),
    ownedQdiscs: [...live.ownedQdiscs].sort(),
  };
  return createHash("sha256").update(JSON.stringify(relevant)).digest("hex");
}

export async function savePlan(file: string, plan: Plan, live: LiveState, policies: ValidPolicy[]): Promise<void> {
  const saved: SavedPlan = {
    format: "intercept-plan",
    format_version: 1,
    createdAt: new Date().toISOString(),
    liveFingerprint: liveFingerprint(live),
    plan,
    policies,
  };
  await writeFile(file, `${JSON.stringify(saved, null, 2)}\n`);
}

export async function readSavedPlan(file: string): Promise<SavedPlan> {
  let saved: SavedPlan;
  try {
    saved = JSON.parse(await readFile(file, "utf8"));
  } catch (error) {
    throw new InterceptError("saved-plan-invalid", `${file}: not a saved plan (${(error as Error).message})`);
  }
  if (saved?.format !== "intercept-plan" || saved.format_version !== 1) {
    throw new InterceptError("saved-plan-invalid", `${file}: not a saved plan of this version of intercept (make one with \`intercept plan --out FILE\`)`);
  }
  return saved;
}

/** A policy path, or a saved plan? Policies end in .ts, .yaml or .yml. */
export function isSavedPlanPath(file: string): boolean {
  return !/\.(ts|ya?ml)$/.test(file);
}
