import type { ProgramBuilder } from "../toolchain/index.js";
import { type ObservedProgram, type ProgramLoad } from "../datapath/types.js";
import { HOOKS, type Hook } from "../model/hooks.js";
import { sameVersion, type VersionRef } from "../model/version.js";
import { InterceptError } from "../errors.js";
import { compositionName } from "../model/composition.js";
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

/** A composition the node could not build or load: the plugin fails an ADD it is needed for (101). */
export interface SkippedComposition {
  name: string;
  reason: string;
}

/** What a sync left: the attachments and compositions the node table lists, and the versions nothing lists any more. */
export interface NodeSync {
  attachments: NodeAttachment[];
  compositions: NodeComposition[];
  /** Compositions left out of the table, and why (no prebuilt object and no clang, a verifier refusal, …). */
  skipped: SkippedComposition[];
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
 * interface two policies select is captured by the plugin too. A policy's
 * own program that cannot be loaded fails the sync; a composition that
 * cannot is left out (skipped, with why): the agent still captures such an
 * interface with the namespace's own program, as it did before. A version
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
  const skipped: SkippedComposition[] = [];
  const composed = await composeEach(attached, skipped);
  let observed = await datapath.observeVersions();
  const loaded: VersionRef[] = [];
  let ruleWrites = 0;
  for (const want of attached.map(ownProgram)) {
    const load = await ensureLoaded(datapath, builder, observed, want);
    if (load === "loaded") loaded.push(want.program);
    else ruleWrites += load;
  }
  const composedLoaded: DesiredProgram[] = [];
  for (const want of composed) {
    try {
      const load = await ensureLoaded(datapath, builder, observed, want);
      if (load === "loaded") loaded.push(want.program);
      else ruleWrites += load;
      composedLoaded.push(want);
    } catch (error) {
      // Not fatal: the agent captures such an interface itself; the plugin fails its ADD with 101.
      if (!(error instanceof InterceptError)) throw error;
      skipped.push({ name: want.name, reason: error.message });
    }
  }
  const programs = [...attached.map(ownProgram), ...composedLoaded];
  if (loaded.length > 0) observed = await datapath.observeVersions();
  const loadedVersion = (want: DesiredProgram) => {
    const version = complete(observed, want);
    if (!version)
      throw new InterceptError("apply-failed", `node program ${want.name}: not complete right after its load`);
    return version;
  };
  const attachments = attached.map((want) => attachment(datapath, want, loadedVersion(ownProgram(want))));
  const compositions = composedLoaded.map((want) => composition(datapath, want, loadedVersion(want)));
  const stale = observed.map((p) => p.ref).filter((ref) => !programs.some((want) => sameVersion(want.program, ref)));
  return { attachments, compositions, skipped, stale, loaded, ruleWrites };
}

/**
 * The programs of the compositions @attached's policies are likely to form;
 * one that cannot be composed is added to @skipped instead, with why.
 */
async function composeEach(attached: DesiredPolicy[], skipped: SkippedComposition[]): Promise<DesiredProgram[]> {
  const sets = likelyCompositions(attached.map((want) => want.policy)).map((members) => members.map((m) => m.name));
  const composed: DesiredProgram[] = [];
  for (const set of sets) {
    try {
      composed.push(...(await composeDesired(attached, [set])));
    } catch (error) {
      if (!(error instanceof InterceptError)) throw error;
      skipped.push({ name: compositionName(set), reason: error.message });
    }
  }
  return composed;
}

/**
 * Loads @want unless a complete version of it is in @observed; a kept one
 * has its rule switches brought in line. "loaded", or how many switches
 * were written.
 */
async function ensureLoaded(
  datapath: NodeDatapath,
  builder: ProgramBuilder,
  observed: ObservedProgram[],
  want: DesiredProgram,
): Promise<"loaded" | number> {
  const kept = complete(observed, want);
  if (kept) return alignRules(datapath, want, kept);
  await datapath.loadProgram({
    ref: want.program,
    contentHash: want.contentHash,
    objectPath: await builder.object(want.compiled, want.contentHash),
    hooks: want.hooks,
    enabled: enabledOf(want),
    prefixes: want.compiled.prefixes,
  });
  return "loaded";
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
