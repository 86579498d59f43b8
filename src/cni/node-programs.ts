import type { ProgramBuilder } from "../toolchain/index.js";
import { type ObservedProgram, type ProgramLoad } from "../datapath/types.js";
import { HOOKS, type Hook } from "../model/hooks.js";
import { sameVersion, type VersionRef } from "../model/version.js";
import { InterceptError } from "../errors.js";
import type { NodeAttachment } from "../model/cni.js";
import { ruleSlots } from "../model/rule-slots.js";
import type { DesiredPolicy } from "../reconcile/desired.js";

/**
 * What CNI mode needs of the node's pin folder (KernelDatapath.node(); a
 * fake in unit tests): its versions, and loading, unloading and live edits.
 */
export interface NodeDatapath {
  observeVersions(): Promise<ObservedProgram[]>;
  /** Where a version's program for a hook is pinned: what the plugin opens. */
  programPin(ref: VersionRef, hook: Hook): string;
  loadProgram(load: ProgramLoad): Promise<void>;
  unloadProgram(ref: VersionRef): Promise<void>;
  setRule(program: VersionRef, index: number, enabled: boolean): Promise<void>;
}

/** What a sync left: the attachments the node table lists, and the versions nothing lists any more. */
export interface NodeSync {
  attachments: NodeAttachment[];
  stale: VersionRef[];
  /** Versions loaded, and rule switches written, by this sync. */
  loaded: VersionRef[];
  ruleWrites: number;
}

/**
 * Makes the node's pin folder hold one complete version of every policy
 * with tc programs: a version already loaded (same content hash) is kept,
 * its rule switches brought in line with the policy (a live edit reaches
 * the pods the plugin attached it to), and any other is loaded. Versions
 * of policies no longer given are returned as stale, for the caller to
 * unpin once the node table no longer names them.
 */
export async function syncNodePrograms(
  datapath: NodeDatapath,
  desired: readonly DesiredPolicy[],
  builder: ProgramBuilder,
): Promise<NodeSync> {
  const attached = desired.filter((want) => want.hooks.length > 0);
  let observed = await datapath.observeVersions();
  const loaded: VersionRef[] = [];
  let ruleWrites = 0;
  for (const want of attached) {
    const kept = complete(observed, want);
    if (kept) {
      ruleWrites += await alignRules(datapath, want, kept);
      continue;
    }
    await datapath.loadProgram({
      ref: want.program,
      contentHash: want.contentHash,
      objectPath: await builder.object(want.compiled, want.contentHash),
      hooks: want.hooks,
      enabled: ruleSlots(want.policy).map((slot) => slot.rule.enabled),
      prefixes: want.compiled.prefixes,
    });
    loaded.push(want.program);
  }
  if (loaded.length > 0) observed = await datapath.observeVersions();
  const attachments = attached.map((want) => attachment(datapath, want, complete(observed, want)));
  const stale = observed.map((p) => p.ref).filter((ref) => !attached.some((want) => sameVersion(want.program, ref)));
  return { attachments, stale, loaded, ruleWrites };
}

/** The version of @want that is loaded whole (its content hash recorded, a program for each of its hooks). */
function complete(observed: ObservedProgram[], want: DesiredPolicy): ObservedProgram | undefined {
  return observed.find(
    (p) =>
      sameVersion(p.ref, want.program) &&
      p.contentHash === want.contentHash &&
      want.hooks.every((hook) => p.programIds[hook] !== undefined),
  );
}

/** Live edits: writes the rule switches of @kept that differ from the policy's; how many it wrote. */
async function alignRules(datapath: NodeDatapath, want: DesiredPolicy, kept: ObservedProgram): Promise<number> {
  const differing = ruleSlots(want.policy).filter(({ slot, rule }) => kept.enabled[slot] !== rule.enabled);
  for (const { slot, rule } of differing) await datapath.setRule(kept.ref, slot, rule.enabled);
  return differing.length;
}

function attachment(datapath: NodeDatapath, want: DesiredPolicy, version: ObservedProgram | undefined): NodeAttachment {
  if (!version)
    throw new InterceptError("apply-failed", `node program ${want.program.policy}: not complete right after its load`);
  const hooks = HOOKS.filter((hook) => want.hooks.includes(hook));
  return {
    policy: want.policy.name,
    version: want.program.version,
    contentHash: want.contentHash,
    namespaces: want.policy.namespaces ? [...want.policy.namespaces] : null,
    include: want.policy.interfaces.include ? [...want.policy.interfaces.include] : null,
    exclude: [...want.policy.interfaces.exclude],
    programs: Object.fromEntries(hooks.map((hook) => [hook, datapath.programPin(version.ref, hook)])),
    programIds: Object.fromEntries(hooks.map((hook) => [hook, version.programIds[hook]!])),
  };
}
