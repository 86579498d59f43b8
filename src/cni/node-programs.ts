import type { ProgramBuilder } from "../toolchain/index.js";
import { type ObservedProgram, type ProgramLoad } from "../datapath/types.js";
import { HOOKS, type Hook } from "../model/hooks.js";
import { sameVersion, type VersionRef } from "../model/version.js";
import { InterceptError } from "../errors.js";
import type { NodeAttachment, NodeComposition } from "../model/cni.js";
import { composedRules } from "../model/rule-slots.js";
import { likelyCompositions } from "../compile/index.js";
import { composeDesired, ownProgram, type DesiredPolicy, type DesiredProgram } from "../reconcile/desired.js";

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

/** What a sync left: the attachments and compositions the node table lists, and the versions nothing lists any more. */
export interface NodeSync {
  attachments: NodeAttachment[];
  compositions: NodeComposition[];
  stale: VersionRef[];
  /** Versions loaded, and rule switches written, by this sync. */
  loaded: VersionRef[];
  ruleWrites: number;
}

/**
 * Makes the node's pin folder hold one complete version of every program
 * a pod's interface may need: each policy's own with tc programs, and each
 * composition that policies are likely to form on one interface
 * (likelyCompositions: the sets `build --out` prebuilds), so that an
 * interface two policies select is captured by the plugin too. A version
 * already loaded (same content hash) is kept, its rule switches brought in
 * line with the policies (a live edit reaches the pods the plugin attached
 * it to), and any other is loaded. Versions no longer wanted are returned
 * as stale, for the caller to unpin once the node table no longer names them.
 */
export async function syncNodePrograms(
  datapath: NodeDatapath,
  desired: readonly DesiredPolicy[],
  builder: ProgramBuilder,
): Promise<NodeSync> {
  const attached = desired.filter((want) => want.hooks.length > 0);
  const sets = likelyCompositions(attached.map((want) => want.policy)).map((members) => members.map((m) => m.name));
  const composed = await composeDesired(attached, sets);
  const programs = [...attached.map(ownProgram), ...composed];
  let observed = await datapath.observeVersions();
  const loaded: VersionRef[] = [];
  let ruleWrites = 0;
  for (const want of programs) {
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
      enabled: enabledOf(want),
      prefixes: want.compiled.prefixes,
    });
    loaded.push(want.program);
  }
  if (loaded.length > 0) observed = await datapath.observeVersions();
  const loadedVersion = (want: DesiredProgram) => {
    const version = complete(observed, want);
    if (!version)
      throw new InterceptError("apply-failed", `node program ${want.name}: not complete right after its load`);
    return version;
  };
  const attachments = attached.map((want) => attachment(datapath, want, loadedVersion(ownProgram(want))));
  const compositions = composed.map((want) => composition(datapath, want, loadedVersion(want)));
  const stale = observed.map((p) => p.ref).filter((ref) => !programs.some((want) => sameVersion(want.program, ref)));
  return { attachments, compositions, stale, loaded, ruleWrites };
}

/** Each rule's switch as @want's policies have it, in the program's slot order. */
function enabledOf(want: DesiredProgram): boolean[] {
  return composedRules(want.members).map((rule) => rule.enabled);
}

/** The version of @want that is loaded whole (its content hash recorded, a program for each of its hooks). */
function complete(observed: ObservedProgram[], want: DesiredProgram): ObservedProgram | undefined {
  return observed.find(
    (p) =>
      sameVersion(p.ref, want.program) &&
      p.contentHash === want.contentHash &&
      want.hooks.every((hook) => p.programIds[hook] !== undefined),
  );
}

/** Live edits: writes the rule switches of @kept that differ from the policies'; how many it wrote. */
async function alignRules(datapath: NodeDatapath, want: DesiredProgram, kept: ObservedProgram): Promise<number> {
  const enabled = enabledOf(want);
  const differing = enabled.flatMap((on, slot) => (kept.enabled[slot] === on ? [] : [slot]));
  for (const slot of differing) await datapath.setRule(kept.ref, slot, enabled[slot]!);
  return differing.length;
}

/** The pinned program and kernel id of each of @version's hooks, in hook order. */
function pinned(datapath: NodeDatapath, hooks: readonly Hook[], version: ObservedProgram) {
  const used = HOOKS.filter((hook) => hooks.includes(hook));
  return {
    programs: Object.fromEntries(used.map((hook) => [hook, datapath.programPin(version.ref, hook)])),
    programIds: Object.fromEntries(used.map((hook) => [hook, version.programIds[hook]!])),
  };
}

function attachment(datapath: NodeDatapath, want: DesiredPolicy, version: ObservedProgram): NodeAttachment {
  return {
    policy: want.policy.name,
    version: want.program.version,
    contentHash: want.contentHash,
    namespaces: want.policy.namespaces ? [...want.policy.namespaces] : null,
    include: want.policy.interfaces.include ? [...want.policy.interfaces.include] : null,
    exclude: [...want.policy.interfaces.exclude],
    ...pinned(datapath, want.hooks, version),
  };
}

function composition(datapath: NodeDatapath, want: DesiredProgram, version: ObservedProgram): NodeComposition {
  return {
    name: want.name,
    policies: want.members.map((member) => member.name),
    version: want.program.version,
    contentHash: want.contentHash,
    ...pinned(datapath, want.hooks, version),
  };
}
