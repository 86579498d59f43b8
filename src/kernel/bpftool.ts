import { availableParallelism } from "node:os";
import { mkdir } from "node:fs/promises";
import { CommandError } from "../errors.js";
import { hexByte, hostOrder } from "../model/host-order.js";
import type { HashMapShape } from "./bpf-syscall.js";
import { run, runJson, runWithInput } from "./exec.js";
import { Together } from "./together.js";

/**
 * The command that loads every program of an object and pins programs and
 * maps under @pinDir, which must exist (bpftool creates only the last
 * level). No `type`: each program's section names its type (tc →
 * sched_cls, cgroup/connect4 → cgroup_sock_addr, sockops, cgroup/getsockopt),
 * which one object of tc and cgroup programs needs. @reuse gives maps by
 * name that the object uses instead of making its own (they are pinned
 * under @pinDir too).
 */
export function loadCommand(objectPath: string, pinDir: string, reuse: Record<string, string> = {}): string[] {
  const maps = Object.entries(reuse).flatMap(([name, pin]) => ["map", "name", name, "pinned", pin]);
  return ["prog", "loadall", objectPath, `${pinDir}/progs`, ...maps, "pinmaps", `${pinDir}/maps`];
}

/** Loads an object's programs and pins them and its maps under @pinDir (loadCommand), which is made first. */
export async function loadAndPin(
  objectPath: string,
  pinDir: string,
  reuse: Record<string, string> = {},
): Promise<void> {
  await mkdir(pinDir, { recursive: true });
  await run("bpftool", loadCommand(objectPath, pinDir, reuse));
}

/** Runs @commands, in order, in one bpftool process: one alone as it is, more as a batch (none: no process). */
export async function runCommands(commands: string[][]): Promise<void> {
  if (commands.length === 1) await run("bpftool", commands[0]!);
  else await batch(commands);
}

/**
 * Batches of callers' commands (runCommandsTogether), as many bpftool
 * processes at a time as the machine has cores: a load is bpftool's CPU
 * alone (libbpf reading the kernel's BTF, then the verifier), so one at a
 * time would leave the other cores idle through a burst.
 */
const together = new Together<string[], void>(async (callers) => {
  await runWithInput("bpftool", ["batch", "file", "-"], `${callers.flat().join("\n")}\n`).catch(unlessStaleErrno);
  return callers.map(() => undefined);
}, availableParallelism());

/**
 * Runs @commands, in order, in a bpftool process shared with the commands
 * other callers ask for meanwhile (Together): each caller's commands in
 * order and whole. For a burst of namespaces loading their versions at
 * once, that is a few processes instead of one per namespace. Callers'
 * commands must not depend on each other (each namespace has its own
 * pins). bpftool stops at the first failing command without saying which
 * it was: when a shared batch fails, every caller in it is told so, and
 * undoes what its commands may have done and tries again alone, as after a
 * failed batch of its own.
 */
export function runCommandsTogether(commands: string[][]): Promise<void> {
  if (commands.length === 0) return Promise.resolve();
  const lines = commands.map(batchLine);
  if (lines.some((line) => line === undefined)) return runCommands(commands); // a word a batch cannot hold: alone
  return together.run(lines as string[]);
}

/** Bytes of a host-order integer, as bpftool's `hex` arguments. */
export function hostBytes(value: number, size: 1 | 2 | 4 | 8): string[] {
  return hostOrder(value, size).map(hexByte);
}

export interface MapUpdate {
  pin: string;
  key: string[];
  value: string[];
}

export function updateCommand({ pin, key, value }: MapUpdate): string[] {
  return ["map", "update", "pinned", pin, "key", "hex", ...key, "value", "hex", ...value];
}

export async function updateMap(pin: string, key: string[], value: string[]): Promise<void> {
  await run("bpftool", updateCommand({ pin, key, value }));
}

function deleteCommand(pin: string, key: string[]): string[] {
  return ["map", "delete", "pinned", pin, "key", "hex", ...key];
}

/** Many updates in one bpftool process: filling 10,000 rules takes one exec, not 10,000. */
export async function updateMaps(updates: MapUpdate[]): Promise<void> {
  await batch(updates.map(updateCommand));
}

/**
 * Runs commands in one bpftool process (`bpftool batch`). bpftool stops at
 * the first failing command, so callers fall back to single calls when they
 * need to know which failed.
 * A command with a word the batch format cannot hold (an object path with a
 * `#` or a quote: bpftool's batch has no escapes) makes them run one by one,
 * stopping at the first failure just the same.
 */
export async function batch(commands: string[][]): Promise<void> {
  if (commands.length === 0) return;
  const lines = commands.map(batchLine);
  if (lines.some((line) => line === undefined)) return oneByOne(commands);
  // On its standard input: no file to write and remove for each of them.
  await runWithInput("bpftool", ["batch", "file", "-"], `${lines.join("\n")}\n`).catch(unlessStaleErrno);
}

/**
 * bpftool 7.1's batch checks errno once every command has run, to tell a
 * failed read of the file from its end, and so takes the EEXIST that
 * libbpf's mkdir of an existing pin directory leaves behind a successful
 * `prog loadall` for a failure to read. A failed command stops the batch
 * with its own error before that check, and reading a file never fails
 * with EEXIST: this message means every command succeeded.
 */
function unlessStaleErrno(error: unknown): void {
  if (
    error instanceof CommandError &&
    error.stderr.trim().split("\n").at(-1) === "Error: reading batch file failed: File exists"
  )
    return;
  throw error;
}

async function oneByOne(commands: string[][]): Promise<void> {
  for (const command of commands) await run("bpftool", command);
}

/**
 * One command as a line of a batch file, or undefined when a word cannot be
 * written there. bpftool splits a line at whitespace, takes a word that
 * starts with a quote up to the next one, cuts the line at `#`, and joins a
 * line ending in `\\` to the next.
 */
function batchLine(command: string[]): string | undefined {
  const words: string[] = [];
  for (const word of command) {
    if (/^[\w./:@%+=,-]+$/.test(word)) words.push(word);
    else if (word !== "" && !/["#\\\n\r]/.test(word)) words.push(`"${word}"`);
    else return undefined;
  }
  return words.join(" ");
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

/**
 * The commands that set @updates in a hash map pinned at @pin, creating it
 * first when @create describes it (a map of our own, for bookkeeping that
 * must live in the kernel, not in a file).
 */
export function hashMapCommands(pin: string, updates: Omit<MapUpdate, "pin">[], create?: HashMapShape): string[][] {
  const made = create
    ? [
        [
          "map",
          "create",
          pin,
          "type",
          "hash",
          "key",
          String(create.keySize),
          "value",
          String(create.valueSize),
          "entries",
          String(create.entries),
          "name",
          create.name,
        ],
      ]
    : [];
  return [...made, ...updates.map((update) => updateCommand({ pin, ...update }))];
}

export async function deleteMapEntry(pin: string, key: string[]): Promise<void> {
  await run("bpftool", deleteCommand(pin, key));
}

/** Deletes each of @keys from the map pinned at @pin, in one bpftool process; stops at the first missing. */
export async function deleteMapEntries(pin: string, keys: string[][]): Promise<void> {
  if (keys.length === 1) await deleteMapEntry(pin, keys[0]!);
  else await batch(keys.map((key) => deleteCommand(pin, key)));
}

/** Keys of a hash map of u32 keys. */
export async function mapKeys(pin: string): Promise<number[]> {
  const entries = await runJson<{ key: string[] }[]>("bpftool", ["-j", "map", "dump", "pinned", pin]);
  return entries.map((entry) => Buffer.from(entry.key.map((byte) => parseInt(byte, 16))).readUInt32LE(0));
}
