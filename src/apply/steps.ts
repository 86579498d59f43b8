import { existsSync } from "node:fs";
import { rmdir } from "node:fs/promises";
import path from "node:path";
import { createHashMap, deleteMapEntry, hostBytes, loadAndPin, mapKeys, updateMap, updateMaps } from "../kernel/bpftool.js";
import type { NetworkNamespace } from "../kernel/exec.js";
import { pins, removePins } from "../kernel/pins.js";
import { addClsact, deleteClsact, deleteFilter, hasClsact, HOOKS, listFilters, replaceFilter, type Hook } from "../kernel/tc.js";

/** Each step returns how to undo it, so a failed apply can put things back. */
export type Undo = () => Promise<void>;

/** Loads a program version, fills its maps, and records which content it is. */
export async function loadProgram(objectPath: string, dir: string, contentHash: string, enabled: boolean[]): Promise<Undo> {
  if (existsSync(dir)) await removePins(dir); // a version left half-loaded by a crash
  const undo = async () => {
    await removePins(dir);
    await removeIfEmpty(path.dirname(dir));
  };
  try {
    await loadAndPin(objectPath, dir);
    await updateMaps([
      ...enabled.map((on, index) => ruleUpdate(dir, index, on)),
      { pin: pins.map(dir, "policy_meta"), key: hostBytes(0, 4), value: [...Buffer.from(contentHash.padEnd(64, "\0").slice(0, 64))].map(hex) },
    ]);
  } catch (error) {
    await undo();
    throw error;
  }
  return undo;
}

function ruleUpdate(dir: string, index: number, enabled: boolean) {
  return { pin: pins.map(dir, "rule_state"), key: hostBytes(index, 4), value: hostBytes(enabled ? 1 : 0, 4) };
}

/** A live edit: one rule's enabled flag, read by the running program at its next packet. */
export async function setRule(dir: string, index: number, enabled: boolean): Promise<void> {
  const { pin, key, value } = ruleUpdate(dir, index, enabled);
  await updateMap(pin, key, value);
}

/** Points both of a link's hooks at a program version, creating clsact when missing. */
export async function attachProgram(netns: NetworkNamespace, namespaceKey: string, link: string, ifindex: number, dir: string, previousDir?: string): Promise<Undo> {
  const undoQdisc = await ensureClsact(netns, namespaceKey, link, ifindex);
  const attached: Hook[] = [];
  const undo = async () => {
    for (const hook of attached) {
      if (previousDir) await replaceFilter(netns, link, hook, pins.program(previousDir, hook));
      else await deleteFilter(netns, link, hook);
    }
    await undoQdisc();
  };
  try {
    for (const hook of HOOKS) {
      await replaceFilter(netns, link, hook, pins.program(dir, hook));
      attached.push(hook);
    }
  } catch (error) {
    await undo();
    throw error;
  }
  return undo;
}

/** Removes our filters from a link, then the clsact qdisc if we made it and it is empty. */
export async function detachProgram(netns: NetworkNamespace, namespaceKey: string, link: string, ifindex: number, previousDir?: string): Promise<Undo> {
  for (const hook of HOOKS) await deleteFilter(netns, link, hook);
  await removeOwnedClsact(netns, namespaceKey, link, ifindex);
  return async () => {
    if (previousDir) await attachProgram(netns, namespaceKey, link, ifindex, previousDir);
  };
}

async function ensureClsact(netns: NetworkNamespace, namespaceKey: string, link: string, ifindex: number): Promise<Undo> {
  if (await hasClsact(netns, link)) return async () => {};
  await addClsact(netns, link);
  const registry = pins.qdiscs(namespaceKey);
  if (!existsSync(registry)) await createHashMap(registry, "intercept_qdisc", 4096);
  await updateMap(registry, hostBytes(ifindex, 4), hostBytes(1, 4));
  return () => removeOwnedClsact(netns, namespaceKey, link, ifindex);
}

/** Removes the clsact qdisc of @link if intercept created it and no filter is left on it. */
async function removeOwnedClsact(netns: NetworkNamespace, namespaceKey: string, link: string, ifindex: number): Promise<void> {
  const registry = pins.qdiscs(namespaceKey);
  if (!existsSync(registry) || !(await mapKeys(registry)).includes(ifindex)) return;
  const remaining = await Promise.all(HOOKS.map((hook) => listFilters(netns, link, hook).catch(() => [])));
  if (remaining.some((filters) => filters.length > 0)) return; // still ours, not yet empty
  await deleteClsact(netns, link).catch(() => {});
  await deleteMapEntry(registry, hostBytes(ifindex, 4));
}

/** Unpins a program version; the kernel frees it once no filter runs it. */
export async function unloadProgram(dir: string): Promise<void> {
  await removePins(dir);
  await removeIfEmpty(path.dirname(dir));
}

/** Removes the namespace's pin directory once nothing of ours is left in it. */
export async function tidyNamespace(namespaceKey: string, ownedQdiscsLeft: number): Promise<void> {
  if (ownedQdiscsLeft > 0) return;
  const dir = pins.namespace(namespaceKey);
  await removePins(pins.qdiscs(namespaceKey));
  await removeIfEmpty(dir);
  await removeIfEmpty(path.dirname(dir));
}

async function removeIfEmpty(dir: string): Promise<void> {
  await rmdir(dir).catch(() => {});
}

function hex(byte: number): string {
  return byte.toString(16).padStart(2, "0");
}
