/**
 * The records' switches: each version's rule_events map, one slot per rule
 * and one for records of no rule. Off by default (the map starts zeroed);
 * turned on by the agent's `--flows` and by `watch --enable`. A live map
 * update, like a rule's `enabled`: no program is reloaded, and plans never
 * look at it, so it neither drifts nor is undone by a reconcile.
 */
import { existsSync } from "node:fs";
import { dumpMap, runCommands, updateCommand } from "../kernel/bpftool.js";
import { runJson } from "../kernel/exec.js";
import { listEntries, PinLayout } from "../kernel/pins.js";
import { arrayKey, MAPS, ruleEventsValue } from "../model/bpf-abi.js";
import { hexByte } from "../model/host-order.js";
import { isPolicyName } from "../model/policy-name.js";
import { isVersionName, type VersionRef } from "../model/version.js";

/** Every pinned version of the namespace that has record switches, optionally of @policies only. */
export async function versionsWithEvents(pins: PinLayout, policies?: readonly string[]): Promise<VersionRef[]> {
  const versions: VersionRef[] = [];
  for (const policy of (await listEntries(pins.namespaceDir, "directories")).filter(isPolicyName)) {
    if (policies && policies.length > 0 && !policies.includes(policy)) continue;
    for (const version of (await listEntries(pins.policy(policy), "directories")).filter(isVersionName)) {
      if (existsSync(pins.map({ policy, version }, MAPS.rule_events.name))) versions.push({ policy, version });
    }
  }
  return versions;
}

/** Each slot's switch of @ref, in slot order (the last: records of no rule). */
export async function readSwitches(pins: PinLayout, ref: VersionRef): Promise<boolean[]> {
  const entries = await dumpMap<number>(pins.map(ref, MAPS.rule_events.name));
  return entries.sort((a, b) => Number(a.key) - Number(b.key)).map((entry) => Number(entry.value) !== 0);
}

/** Sets the switches of @ref: @on for every slot, or one value per slot. */
export async function writeSwitches(pins: PinLayout, ref: VersionRef, on: boolean | boolean[]): Promise<void> {
  const slots = Array.isArray(on) ? on : (await readSwitches(pins, ref)).map(() => on);
  const pin = pins.map(ref, MAPS.rule_events.name);
  const commands = slots.map((enabled, slot) =>
    updateCommand({ pin, key: arrayKey(slot).map(hexByte), value: ruleEventsValue(enabled).map(hexByte) }),
  );
  if (commands.length > 0) await runCommands(commands);
}

/** Turns every record on in @versions, and gives back a function that puts each switch back as it was. */
export async function switchOn(pins: PinLayout, versions: VersionRef[]): Promise<() => Promise<void>> {
  const before = await Promise.all(versions.map((ref) => readSwitches(pins, ref)));
  await Promise.all(versions.map((ref) => writeSwitches(pins, ref, true)));
  return async () => {
    await Promise.all(versions.map((ref, i) => writeSwitches(pins, ref, before[i]!)));
  };
}

/**
 * Records dropped because the namespace's ring buffer was full, summed over
 * CPUs; 0 when no version has one. Read from the raw bytes, which every
 * dump has (a map made without BTF has no formatted values).
 */
export async function droppedRecords(pins: PinLayout, versions: VersionRef[]): Promise<number> {
  const ref = versions.find((candidate) => existsSync(pins.map(candidate, MAPS.flow_event_drops.name)));
  if (!ref) return 0;
  const dump = await runJson<RawEntry[]>("bpftool", [
    "-j",
    "map",
    "dump",
    "pinned",
    pins.map(ref, MAPS.flow_event_drops.name),
  ]);
  const cpus = dump.flatMap((entry) => entry.values ?? []);
  return cpus.reduce((sum, cpu) => sum + hostNumber(cpu.value), 0);
}

/** An entry of a per-CPU map as bpftool dumps it: each CPU's value as hex bytes. */
interface RawEntry {
  values?: { cpu: number; value: string[] }[];
}

function hostNumber(bytes: string[]): number {
  return Number(Buffer.from(bytes.map((byte) => Number.parseInt(byte, 16))).readBigUInt64LE(0));
}

/**
 * Whether any rule of the namespace @key records flows now: true or false,
 * or undefined when no program there has record switches.
 */
export async function recordsOn(key: string): Promise<boolean | undefined> {
  const pins = new PinLayout(key);
  const versions = await versionsWithEvents(pins);
  if (versions.length === 0) return undefined;
  const switches = await Promise.all(versions.map((ref) => readSwitches(pins, ref)));
  return switches.some((slots) => slots.some(Boolean));
}
