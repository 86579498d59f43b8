import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { endianness, tmpdir } from "node:os";
import path from "node:path";
import { run, runJson } from "./exec.js";

/**
 * Loads every program of an object and pins programs and maps under @pinDir.
 * No `type`: each program's section names its type (tc → sched_cls,
 * cgroup/connect4 → cgroup_sock_addr, sockops, cgroup/getsockopt), which
 * one object of tc and cgroup programs needs. @reuse gives maps by name
 * that the object uses instead of making its own (they are pinned under
 * @pinDir too).
 */
export async function loadAndPin(objectPath: string, pinDir: string, reuse: Record<string, string> = {}): Promise<void> {
  await mkdir(pinDir, { recursive: true }); // bpftool creates only the last level
  const maps = Object.entries(reuse).flatMap(([name, pin]) => ["map", "name", name, "pinned", pin]);
  await run("bpftool", ["prog", "loadall", objectPath, `${pinDir}/progs`, ...maps, "pinmaps", `${pinDir}/maps`]);
}

/** Bytes of a host-order integer, as bpftool's `hex` arguments. */
export function hostBytes(value: number, size: number): string[] {
  const buffer = Buffer.alloc(size);
  if (size === 4) (endianness() === "LE" ? buffer.writeUInt32LE(value) : buffer.writeUInt32BE(value));
  else throw new Error(`unsupported integer size ${size}`);
  return [...buffer].map((byte) => byte.toString(16).padStart(2, "0"));
}

export interface MapUpdate {
  pin: string;
  key: string[];
  value: string[];
}

function updateArgs({ pin, key, value }: MapUpdate): string[] {
  return ["map", "update", "pinned", pin, "key", "hex", ...key, "value", "hex", ...value];
}

export async function updateMap(pin: string, key: string[], value: string[]): Promise<void> {
  await run("bpftool", updateArgs({ pin, key, value }));
}

/** Many updates in one bpftool process: filling 10,000 rules takes one exec, not 10,000. */
export async function updateMaps(updates: MapUpdate[]): Promise<void> {
  await batch(updates.map(updateArgs), false);
}

/**
 * Runs commands in one bpftool process (`bpftool batch`); with @json, returns
 * each command's output in order. bpftool stops at the first failing command,
 * so callers fall back to single calls when they need to know which failed.
 */
export async function batch(commands: string[][], json: true): Promise<unknown[]>;
export async function batch(commands: string[][], json: false): Promise<void>;
export async function batch(commands: string[][], json: boolean): Promise<unknown[] | void> {
  if (commands.length === 0) return [];
  const dir = await mkdtemp(path.join(tmpdir(), "intercept-batch-"));
  try {
    const file = path.join(dir, "commands");
    // Pin paths are ours (no spaces); the batch format is one command per line.
    await writeFile(file, `${commands.map((command) => command.join(" ")).join("\n")}\n`);
    if (!json) return void (await run("bpftool", ["batch", "file", file]));
    return (await runJson<{ output: unknown }[]>("bpftool", ["-j", "batch", "file", file])).map((entry) => entry.output);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export interface MapEntry<V> {
  key: number;
  value?: V;
  values?: { cpu: number; value: V }[];
}

/** Entries as bpftool formats them from BTF (`formatted`). */
export async function dumpMap<V>(pin: string): Promise<MapEntry<V>[]> {
  return formattedEntries<V>(await runJson("bpftool", ["-j", "map", "dump", "pinned", pin]));
}

export function formattedEntries<V>(dump: unknown): MapEntry<V>[] {
  return (dump as { formatted: MapEntry<V> }[]).map((entry) => entry.formatted);
}

/** A pinned map of our own, for bookkeeping that must live in the kernel, not in a file. */
export async function createHashMap(pin: string, name: string, entries: number): Promise<void> {
  await run("bpftool", ["map", "create", pin, "type", "hash", "key", "4", "value", "4", "entries", String(entries), "name", name]);
}

export async function deleteMapEntry(pin: string, key: string[]): Promise<void> {
  await run("bpftool", ["map", "delete", "pinned", pin, "key", "hex", ...key]);
}

/** Keys of a hash map of u32 keys. */
export async function mapKeys(pin: string): Promise<number[]> {
  const entries = await runJson<{ key: string[] }[]>("bpftool", ["-j", "map", "dump", "pinned", pin]);
  return entries.map((entry) => Buffer.from(entry.key.map((byte) => parseInt(byte, 16))).readUInt32LE(0));
}
