import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { COUNTER_SLOTS, counterKey } from "../compile/counters.js";
import type { PrefixEntry } from "../compile/match.js";
import { prefixBytes, prefixMap } from "../compile/prefixes.js";
import { CommandError, InterceptError } from "../errors.js";
import { batch, createHashMap, deleteMapEntry, dumpMap, formattedEntries, hostBytes, loadAndPin, mapKeys, updateMap, updateMaps, type MapUpdate } from "../kernel/bpftool.js";
import { runJson, type NetworkNamespace } from "../kernel/exec.js";
import { listLinks } from "../kernel/links.js";
import { namespaceKey } from "../kernel/namespace.js";
import { requireKernelPrivileges } from "../kernel/privileges.js";
import { ensureBpffs, isPolicyName, isVersionName, listEntries, PinLayout, removeIfEmpty, removePins } from "../kernel/pins.js";
import { addClsact, deleteClsact, deleteFilter, inOurSlot, isOurs, listLinkStates, replaceFilters } from "../kernel/tc.js";
import { HOOKS, type Counter, type Datapath, type Hook, type LinkRef, type ObservedLink, type ObservedProgram, type ObservedState, type ProgramLoad, type RuleCounters, type VersionRef } from "./types.js";

/** Entries of the owned-qdisc registry: far more links than a namespace has. */
const QDISC_REGISTRY_ENTRIES = 4096;

/** The real datapath: bpftool, tc and ip, for one network namespace. */
export class KernelDatapath implements Datapath {
  private constructor(
    readonly netns: NetworkNamespace,
    readonly namespaceKey: string,
    private readonly pins: PinLayout,
  ) {}

  /**
   * Checks privileges (@command names what needs them), that the namespace
   * exists, and that bpffs is mounted; nothing is changed in the kernel.
   */
  static async open(netns: NetworkNamespace, command: string): Promise<KernelDatapath> {
    await requireKernelPrivileges(command, netns);
    const key = await namespaceKey(netns);
    await ensureBpffs();
    return new KernelDatapath(netns, key, new PinLayout(key));
  }

  async observe(): Promise<ObservedState> {
    const links = await listLinks(this.netns);
    const [tcStates, programs, ownedQdiscs] = await Promise.all([
      listLinkStates(this.netns, links.map((link) => link.name)),
      this.observePrograms(),
      this.ownedQdiscs(),
    ]);
    const observed: ObservedLink[] = [];
    for (const link of links) {
      const state = tcStates.get(link.name);
      if (!state) continue; // vanished between `ip link` and `tc`: nothing of ours to plan for on it
      const entry: ObservedLink = { ...link, clsact: state.clsact, filters: {}, foreign: [] };
      for (const hook of HOOKS) {
        for (const filter of state.filters[hook]) {
          if (isOurs(filter) && filter.programId) entry.filters[hook] = filter.programId;
          else entry.foreign.push({ hook, pref: filter.pref, handle: filter.handle, kind: filter.kind, programName: filter.programName, inOurSlot: inOurSlot(filter) });
        }
      }
      observed.push(entry);
    }
    return { netns: this.netns, namespaceKey: this.namespaceKey, links: observed, programs, ownedQdiscs };
  }

  private async ownedQdiscs(): Promise<number[]> {
    return existsSync(this.pins.qdiscs) ? mapKeys(this.pins.qdiscs) : [];
  }

  /**
   * Every pinned version, read with one bpftool process. bpftool's batch
   * stops at its first failing command (a version whose load was cut short
   * lacks a map), so when it fails each version is read on its own, and
   * one that cannot be read is reported as incomplete rather than hiding
   * the others.
   */
  private async observePrograms(): Promise<ObservedProgram[]> {
    const versions: VersionRef[] = [];
    for (const policy of (await listEntries(this.pins.namespaceDir, "directories")).filter(isPolicyName)) {
      for (const version of (await listEntries(this.pins.policy(policy), "directories")).filter(isVersionName)) versions.push({ policy, version });
    }
    const pinned = await Promise.all(versions.map(async (ref) => ({
      ref,
      hooks: HOOKS.filter((hook) => existsSync(this.pins.program(ref, hook))),
    })));
    const commands = pinned.map(({ ref, hooks }) => this.programCommands(ref, hooks));
    try {
      const outputs = await batch(commands.flat(), true);
      let next = 0;
      return pinned.map(({ ref, hooks }, index) => toProgram(ref, hooks, outputs.slice(next, (next += commands[index]!.length))));
    } catch (error) {
      if (!(error instanceof CommandError)) throw error;
      return Promise.all(pinned.map(({ ref, hooks }, index) => this.observeProgram(ref, hooks, commands[index]!)));
    }
  }

  private async observeProgram(ref: VersionRef, hooks: Hook[], commands: string[][]): Promise<ObservedProgram> {
    try {
      return toProgram(ref, hooks, await Promise.all(commands.map((command) => runJson("bpftool", ["-j", ...command]))));
    } catch (error) {
      if (!(error instanceof CommandError)) throw error;
      return { ref, contentHash: null, programIds: {}, enabled: [] }; // unreadable: a load cut short
    }
  }

  private programCommands(ref: VersionRef, hooks: Hook[]): string[][] {
    return [
      ...hooks.map((hook) => ["prog", "show", "pinned", this.pins.program(ref, hook)]),
      ["map", "dump", "pinned", this.pins.map(ref, "policy_meta")],
      ["map", "dump", "pinned", this.pins.map(ref, "rule_state")],
    ];
  }

  async readCounters(program: VersionRef, rules: number): Promise<RuleCounters[]> {
    return readVersionCounters(this.pins, program, rules);
  }

  async loadProgram(load: ProgramLoad): Promise<void> {
    await loadVersion(this.pins, load);
  }

  async unloadProgram(ref: VersionRef): Promise<void> {
    await unloadVersion(this.pins, ref);
  }

  async addQdisc(link: LinkRef): Promise<void> {
    // Recorded before it is made: a crash in between leaves a record of a qdisc that
    // does not exist (forgotten by tidy), never a qdisc nobody knows is ours.
    if (!existsSync(this.pins.qdiscs)) {
      await mkdir(this.pins.namespaceDir, { recursive: true });
      await createHashMap(this.pins.qdiscs, "intercept_qdisc", QDISC_REGISTRY_ENTRIES);
    }
    await updateMap(this.pins.qdiscs, hostBytes(link.ifindex, 4), hostBytes(1, 4));
    try {
      await addClsact(this.netns, link.name);
    } catch (error) {
      await deleteMapEntry(this.pins.qdiscs, hostBytes(link.ifindex, 4));
      throw error;
    }
  }

  async removeQdisc(link: LinkRef): Promise<void> {
    await deleteClsact(this.netns, link.name);
    await deleteMapEntry(this.pins.qdiscs, hostBytes(link.ifindex, 4));
  }

  async attachFilters(link: LinkRef, program: VersionRef, hooks: Hook[]): Promise<void> {
    await replaceFilters(this.netns, link.name, hooks.map((hook) => ({ hook, programPin: this.pins.program(program, hook) })));
  }

  async detachFilter(link: LinkRef, hook: Hook): Promise<void> {
    await deleteFilter(this.netns, link.name, hook);
  }

  async setRule(program: VersionRef, index: number, enabled: boolean): Promise<void> {
    await writeRule(this.pins, program, index, enabled);
  }

  async forgetNamespace(): Promise<void> {
    await removePins(this.pins.namespaceDir);
    await removeIfEmpty(path.dirname(this.pins.namespaceDir));
  }

  async exists(): Promise<boolean> {
    try {
      return (await namespaceKey(this.netns)) === this.namespaceKey; // a namespace of the same name made since is another one
    } catch (error) {
      if (error instanceof InterceptError && error.code === "netns-not-found") return false;
      throw error;
    }
  }

  async tidy(): Promise<void> {
    const links = new Set((await listLinks(this.netns)).map((link) => link.ifindex));
    let owned = await this.ownedQdiscs();
    for (const ifindex of owned.filter((index) => !links.has(index))) await deleteMapEntry(this.pins.qdiscs, hostBytes(ifindex, 4));
    owned = owned.filter((index) => links.has(index));
    if (owned.length === 0) await removePins(this.pins.qdiscs);
    for (const policy of await listEntries(this.pins.namespaceDir, "directories")) await removeIfEmpty(path.join(this.pins.namespaceDir, policy));
    await removeIfEmpty(this.pins.namespaceDir);
    await removeIfEmpty(path.dirname(this.pins.namespaceDir));
  }

}

/*
 * One version's pins, for any pin layout: the datapath's, or a packet
 * test's own directory (tests load programs without attaching them).
 */

/** Loads and pins a version, fills its rule switches, and records its content hash last. */
export async function loadVersion(pins: PinLayout, load: ProgramLoad): Promise<void> {
  const dir = pins.version(load.ref);
  await removePins(dir); // a version left half-loaded by a crash
  try {
    await loadAndPin(load.objectPath, dir);
    // policy_meta last: a version whose content hash is recorded is complete.
    await updateMaps([
      ...load.enabled.map((enabled, index) => ruleUpdate(pins, load.ref, index, enabled)),
      ...load.prefixes.map((entry) => prefixUpdate(pins, load.ref, entry)),
      { pin: pins.map(load.ref, "policy_meta"), key: hostBytes(0, 4), value: [...Buffer.from(load.contentHash.padEnd(64, "\0").slice(0, 64))].map(hex) },
    ]);
  } catch (error) {
    await unloadVersion(pins, load.ref);
    throw error;
  }
}

export async function unloadVersion(pins: PinLayout, ref: VersionRef): Promise<void> {
  await removePins(pins.version(ref));
  await removeIfEmpty(pins.policy(ref.policy));
}

/** Each rule's counters, slot by slot, summed over CPUs (rule_counters is per-CPU). */
export async function readVersionCounters(pins: PinLayout, ref: VersionRef, rules: number): Promise<RuleCounters[]> {
  const entries = new Map((await dumpMap<Counter>(pins.map(ref, "rule_counters"))).map((entry) => [entry.key, entry.values ?? []]));
  const total = (key: number): Counter =>
    (entries.get(key) ?? []).reduce((sum, { value }) => ({ packets: sum.packets + value.packets, bytes: sum.bytes + value.bytes }), { packets: 0, bytes: 0 });
  return Array.from({ length: rules }, (_, rule) =>
    Object.fromEntries(COUNTER_SLOTS.map((slot) => [slot, total(counterKey(rule, slot))])) as RuleCounters);
}

export async function writeRule(pins: PinLayout, ref: VersionRef, index: number, enabled: boolean): Promise<void> {
  const { pin, key, value } = ruleUpdate(pins, ref, index, enabled);
  await updateMap(pin, key, value);
}

function ruleUpdate(pins: PinLayout, ref: VersionRef, index: number, enabled: boolean): MapUpdate {
  return { pin: pins.map(ref, "rule_state"), key: hostBytes(index, 4), value: hostBytes(enabled ? 1 : 0, 4) };
}

function prefixUpdate(pins: PinLayout, ref: VersionRef, entry: PrefixEntry): MapUpdate {
  const { key, value } = prefixBytes(entry);
  return { pin: pins.map(ref, prefixMap(entry)), key: key.map(hex), value: value.map(hex) };
}

function toProgram(ref: VersionRef, hooks: Hook[], outputs: unknown[]): ObservedProgram {
  const programIds: Partial<Record<Hook, number>> = {};
  hooks.forEach((hook, index) => (programIds[hook] = (outputs[index] as { id?: number } | undefined)?.id));
  const [meta, state] = outputs.slice(hooks.length);
  const metaEntries = formattedEntries<{ content_hash: number[] | string }>(meta);
  const contentHash = cString(metaEntries[0]?.value?.content_hash);
  return {
    ref,
    contentHash: contentHash === "" ? null : contentHash,
    programIds,
    enabled: formattedEntries<{ enabled: number }>(state).map((entry) => entry.value?.enabled === 1),
  };
}

/** bpftool prints a char array as its bytes; the string ends at the first NUL. */
function cString(chars: number[] | string | undefined): string {
  if (typeof chars === "string") return chars;
  const bytes = chars ?? [];
  const end = bytes.indexOf(0);
  return Buffer.from(end === -1 ? bytes : bytes.slice(0, end)).toString("latin1");
}

function hex(byte: number): string {
  return byte.toString(16).padStart(2, "0");
}
