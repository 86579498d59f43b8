import { existsSync } from "node:fs";
import { InterceptError } from "../errors.js";
import { deleteMapEntry, hostBytes, mapKeys } from "../kernel/bpftool.js";
import { listLinks } from "../kernel/links.js";
import { pins } from "../kernel/pins.js";
import { programOnLink, type LiveState } from "../live/index.js";
import { summarise, type AttachmentChange, type Change, type Plan, type ProgramChange, type RuleChange } from "../plan/index.js";
import { attachProgram, detachProgram, loadProgram, setRule, tidyNamespace, unloadProgram, type Undo } from "./steps.js";

/** The object file built for each content hash the plan loads. */
export type ObjectsByHash = Map<string, string>;

export class ApplyError extends InterceptError {
  constructor(message: string, readonly rolledBack: boolean) {
    super("apply-failed", message);
  }
}

/**
 * Stage 7: executes exactly the plan's changes, in an order that never
 * leaves a link without a filter: load new programs, point links at them,
 * flip rules, detach, and only then unpin what is no longer used. If a step
 * fails, every step done so far is undone in reverse, so the kernel is left
 * as it was before the apply. An abort (@interrupt) is honoured between
 * steps the same way: the step in flight finishes, then all is undone.
 */
export async function applyPlan(plan: Plan, live: LiveState, objects: ObjectsByHash, log: (line: string) => void, interrupt?: AbortSignal): Promise<void> {
  const undos: Undo[] = [];
  const ordered = [
    ...plan.changes.filter((c): c is ProgramChange => c.resource === "program" && c.action !== "delete"),
    ...plan.changes.filter((c): c is AttachmentChange => c.resource === "attachment" && c.action !== "delete"),
    ...plan.changes.filter((c): c is RuleChange => c.resource === "rule"),
    ...plan.changes.filter((c): c is AttachmentChange => c.resource === "attachment" && c.action === "delete"),
  ];
  let step = "";
  try {
    for (const change of ordered) {
      interrupt?.throwIfAborted();
      step = change.address;
      if (process.env.INTERCEPT_FAIL_AT === change.address) throw new Error("forced failure (INTERCEPT_FAIL_AT, for testing rollback)");
      undos.push(await execute(change, plan, live, objects));
      log(`${change.address}: ${done(change)}`);
    }
    interrupt?.throwIfAborted(); // nothing is committed until old programs are unpinned
  } catch (error) {
    const rolledBack = await rollBack(undos);
    await tidy(plan).catch(() => {});
    const interrupted = interrupt?.aborted && error === interrupt.reason;
    throw new ApplyError(
      (interrupted ? `${(error as Error).message} after ${undos.length} of ${ordered.length} steps\n` : `${step}: ${(error as Error).message}\n`) +
        (rolledBack ? "Rolled back: the kernel is as it was before this apply." : "Rollback failed: run `intercept plan` to see the state."),
      rolledBack,
    );
  }
  // Past this point nothing runs the old programs any more; unpinning frees them.
  for (const change of plan.changes) {
    if (change.resource === "program" && change.oldDir) {
      await unloadProgram(change.oldDir);
      if (change.action === "delete") log(`${change.address}: destroyed`);
    }
  }
  await tidy(plan);
  const { add, change, destroy } = summarise(plan);
  log(`Apply complete! Resources: ${add} added, ${change} changed, ${destroy} destroyed.`);
}

async function execute(change: Change, plan: Plan, live: LiveState, objects: ObjectsByHash): Promise<Undo> {
  const { netns, namespaceKey } = plan;
  switch (change.resource) {
    case "program": {
      const object = objects.get(change.contentHash!);
      if (!object) throw new Error(`no object built for ${change.contentHash}`);
      return loadProgram(object, pins.version(namespaceKey, change.policy, change.contentHash!), change.contentHash!, change.enabled!);
    }
    case "attachment": {
      const previousDir = previousProgramDir(live, change.ifindex);
      if (change.action === "delete") return detachProgram(netns, namespaceKey, change.link, change.ifindex, previousDir);
      const dir = pins.version(namespaceKey, change.policy!, change.contentHash!);
      return attachProgram(netns, namespaceKey, change.link, change.ifindex, dir, previousDir);
    }
    case "rule": {
      const dir = pins.version(namespaceKey, change.policy, change.contentHash);
      await setRule(dir, change.index, change.enabled);
      return () => setRule(dir, change.index, !change.enabled);
    }
  }
}

/**
 * Forgets qdiscs of links that no longer exist (their clsact went with
 * them), then removes the namespace's pin directory if nothing of ours is
 * left in it.
 */
async function tidy(plan: Plan): Promise<void> {
  const registry = pins.qdiscs(plan.namespaceKey);
  let owned = existsSync(registry) ? await mapKeys(registry) : [];
  const existing = new Set((await listLinks(plan.netns)).map((link) => link.ifindex));
  for (const ifindex of owned.filter((i) => !existing.has(i))) await deleteMapEntry(registry, hostBytes(ifindex, 4));
  owned = owned.filter((i) => existing.has(i));
  await tidyNamespace(plan.namespaceKey, owned.length);
}

function previousProgramDir(live: LiveState, ifindex: number): string | undefined {
  const attachment = live.attachments.find((a) => a.link.ifindex === ifindex);
  return attachment ? programOnLink(live, attachment)?.dir : undefined;
}

async function rollBack(undos: Undo[]): Promise<boolean> {
  let complete = true;
  for (const undo of undos.reverse()) {
    await undo().catch(() => {
      complete = false;
    });
  }
  return complete;
}

function done(change: Change): string {
  if (change.resource === "rule") return change.enabled ? "enabled" : "disabled";
  return { create: "created", update: "updated", replace: "replaced", delete: "destroyed" }[change.action];
}
