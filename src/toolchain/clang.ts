import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rename, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { cacheDir } from "../cache-dir.js";
import type { CompiledPolicy } from "../compile/index.js";
import { InterceptError } from "../errors.js";
import { run } from "../kernel/exec.js";
import type { ProgramBuilder } from "./types.js";

/** `clang -O2 -g -target bpf`; the multiarch include dir holds asm/types.h on Debian. */
export async function compileBpf(source: string, output: string, includeDirs: string[] = []): Promise<void> {
  const includes = [`/usr/include/${await multiarch()}`, ...includeDirs].map((dir) => `-I${dir}`);
  await clang(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror", ...includes, "-c", source, "-o", output]);
}

/**
 * Runs clang. Without it, the one line says what a user can do on either
 * side of the GitOps split: install it where policies are built, or apply
 * objects built elsewhere (`build --out DIR`, then `--objects DIR`).
 */
async function clang(args: string[]): Promise<string> {
  try {
    return await run("clang", args);
  } catch (error) {
    if (!(error instanceof InterceptError && error.code === "tool-missing")) throw error;
    throw new InterceptError(
      "tool-missing",
      "clang not found: install clang and libbpf-dev (Debian: apt-get install clang llvm libbpf-dev), or build the objects where clang is with `intercept build --out DIR` and pass `--objects DIR` here",
      { cause: error },
    );
  }
}

let multiarchTriple: Promise<string> | undefined;
function multiarch(): Promise<string> {
  multiarchTriple ??= clang(["-print-multiarch"]).then((out) => out.trim() || "x86_64-linux-gnu");
  return multiarchTriple;
}

let clangVersion: Promise<string> | undefined;
/** The first line of `clang --version`: part of every program's identity. */
export function compilerVersion(): Promise<string> {
  clangVersion ??= cachedCompilerVersion();
  return clangVersion;
}

/**
 * Objects and clang's version live in the user's cache directory, never in
 * the checkout (validate and build work in a read-only one); without a
 * usable cache directory, in a directory of this process's own.
 */
let objectDir: Promise<string> | undefined;
function objectCache(): Promise<string> {
  objectDir ??= cacheDir("objects").then((dir) => dir ?? mkdtemp(path.join(tmpdir(), "intercept-objects-")));
  return objectDir;
}

/**
 * `clang --version`, remembered for the binary it came from (path, size,
 * mtime): the content hash needs it on every plan, and an unchanged policy
 * should never run clang at all.
 */
async function cachedCompilerVersion(): Promise<string> {
  const binary = await findOnPath("clang");
  const identity =
    binary &&
    (await stat(binary).then(
      (s) => `${binary}:${s.size}:${s.mtimeMs}`,
      () => undefined,
    ));
  const file = path.join(await objectCache(), "clang-version.json");
  const cached = identity && (await readJson<{ identity: string; version: string }>(file));
  if (cached && cached.identity === identity) return cached.version;
  const version = (await clang(["--version"])).split("\n")[0]!.trim();
  if (identity) await writeAtomically(file, JSON.stringify({ identity, version }));
  return version;
}

/** The directory on PATH that has @tool, if any. */
export async function findOnPath(tool: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter).filter(Boolean)) {
    const candidate = path.join(dir, tool);
    if (
      await stat(candidate).then(
        (s) => s.isFile(),
        () => false,
      )
    )
      return candidate;
  }
  return undefined;
}

/** A policy's program identity: its C source and the compiler that builds it. */
export async function contentHash(compiled: CompiledPolicy): Promise<string> {
  return contentHashWith(compiled, await compilerVersion());
}

function contentHashWith(compiled: CompiledPolicy, version: string): string {
  return createHash("sha256").update(compiled.source).update("\0").update(version).digest("hex");
}

export interface BuiltPolicy {
  compiled: CompiledPolicy;
  contentHash: string;
  /** The object in the cache, named by content hash. */
  objectPath: string;
  /** Whether clang ran (false: served from the cache). */
  compiledNow: boolean;
}

/** Builds in progress in this process, by content hash. */
const building = new Map<string, Promise<BuiltPolicy>>();

/**
 * Stage 4: compiles generated C to a BPF object with clang. Objects are
 * cached by content hash, so an unchanged policy never runs clang again,
 * and concurrent builds of one content hash (the agent applying one policy
 * to many namespaces at once) share one clang run: they would otherwise
 * all compile it, writing the same source and partial object files.
 */
export async function buildPolicy(compiled: CompiledPolicy): Promise<BuiltPolicy> {
  const hash = await contentHash(compiled);
  let build = building.get(hash);
  if (!build) {
    build = buildObject(compiled, hash).finally(() => building.delete(hash));
    building.set(hash, build);
  }
  return { ...(await build), compiled };
}

async function buildObject(compiled: CompiledPolicy, hash: string): Promise<BuiltPolicy> {
  const cache = await objectCache();
  const objectPath = path.join(cache, `${hash}.bpf.o`);
  const compiledNow = !(await exists(objectPath));
  if (compiledNow) {
    // clang reads the exact source we hashed, not whatever generated/ holds.
    const source = path.join(cache, `${hash}.bpf.c`);
    const partial = `${objectPath}.${process.pid}.tmp`;
    await writeFile(source, compiled.source);
    await compileBpf(source, partial);
    await rename(partial, objectPath);
  }
  return { compiled, contentHash: hash, objectPath, compiledNow };
}

/** Builds with the clang on PATH: a program's identity includes clang's version. */
export const clangBuilder: ProgramBuilder = {
  identify: contentHash,
  identifier: async () => {
    const version = await compilerVersion();
    return (compiled) => contentHashWith(compiled, version);
  },
  object: async (compiled) => (await buildPolicy(compiled)).objectPath,
};

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

async function readJson<T>(file: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(file, "utf8")) as T;
  } catch {
    return undefined; // not there yet, or written by something else: asked again
  }
}

async function writeAtomically(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const partial = `${file}.${process.pid}.tmp`;
  await writeFile(partial, text);
  await rename(partial, file);
}
