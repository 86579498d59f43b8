import { createHash } from "node:crypto";
import { copyFile, mkdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import type { CompiledPolicy } from "../compile/index.js";
import { run } from "../kernel/exec.js";

export const BUILD_DIR = "build";
const CACHE_DIR = path.join(BUILD_DIR, "cache");

/** `clang -O2 -g -target bpf`; the multiarch include dir holds asm/types.h on Debian. */
export async function compileBpf(source: string, output: string, includeDirs: string[] = []): Promise<void> {
  const includes = [`/usr/include/${await multiarch()}`, ...includeDirs].map((dir) => `-I${dir}`);
  await run("clang", ["-O2", "-g", "-target", "bpf", "-Wall", "-Werror", ...includes, "-c", source, "-o", output]);
}

let multiarchTriple: Promise<string> | undefined;
function multiarch(): Promise<string> {
  multiarchTriple ??= run("clang", ["-print-multiarch"]).then((out) => out.trim() || "x86_64-linux-gnu");
  return multiarchTriple;
}

let clangVersion: Promise<string> | undefined;
function compilerVersion(): Promise<string> {
  clangVersion ??= cachedCompilerVersion();
  return clangVersion;
}

/**
 * `clang --version`, remembered for the binary it came from (path, size,
 * mtime): the content hash needs it on every plan, and an unchanged policy
 * should never run clang at all.
 */
async function cachedCompilerVersion(): Promise<string> {
  const binary = await findOnPath("clang");
  const identity = binary && (await stat(binary).then((s) => `${binary}:${s.size}:${s.mtimeMs}`, () => undefined));
  const file = path.join(CACHE_DIR, "clang-version.json");
  const cached = identity && (await readFile(file, "utf8").then((text) => JSON.parse(text) as { identity: string; version: string }, () => undefined));
  if (cached && cached.identity === identity) return cached.version;
  const version = (await run("clang", ["--version"])).split("\n")[0]!.trim();
  if (identity) {
    await mkdir(CACHE_DIR, { recursive: true });
    await writeFile(file, JSON.stringify({ identity, version }));
  }
  return version;
}

async function findOnPath(tool: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter).filter(Boolean)) {
    const candidate = path.join(dir, tool);
    if (await stat(candidate).then((s) => s.isFile(), () => false)) return candidate;
  }
  return undefined;
}

/** A policy's program identity: its C source and the compiler that builds it. */
export async function contentHash(compiled: CompiledPolicy): Promise<string> {
  return createHash("sha256").update(compiled.source).update("\0").update(await compilerVersion()).digest("hex");
}

export interface BuiltPolicy {
  compiled: CompiledPolicy;
  contentHash: string;
  /** build/<name>.bpf.o */
  objectPath: string;
  /** Whether clang ran (false: served from the cache). */
  compiledNow: boolean;
}

/**
 * Stage 4: compiles generated C to a BPF object with clang. Objects are
 * cached by content hash, so an unchanged policy never runs clang again.
 */
export async function buildPolicy(compiled: CompiledPolicy): Promise<BuiltPolicy> {
  const hash = await contentHash(compiled);
  const cached = path.join(CACHE_DIR, `${hash}.bpf.o`);
  const objectPath = path.join(BUILD_DIR, `${compiled.policy.name}.bpf.o`);
  const compiledNow = !(await exists(cached));
  if (compiledNow) {
    await mkdir(CACHE_DIR, { recursive: true });
    // clang reads the exact source we hashed, not whatever generated/ holds.
    const source = path.join(CACHE_DIR, `${hash}.bpf.c`);
    const partial = `${cached}.${process.pid}.tmp`;
    await writeFile(source, compiled.source);
    await compileBpf(source, partial);
    await rename(partial, cached);
  }
  await copyFile(cached, objectPath);
  return { compiled, contentHash: hash, objectPath, compiledNow };
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(() => true, () => false);
}
