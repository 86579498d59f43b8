import { createHash } from "node:crypto";
import { copyFile, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import type { CompiledPolicy } from "../compile/index.js";
import { InterceptError, messageOf } from "../errors.js";
import { compositionName, isProgramName, isProgramObjectFileName } from "../model/composition.js";
import { isPolicyName, objectFileName } from "../model/policy-name.js";
import { clangBuilder, compilerVersion, findOnPath, type BuiltPolicy } from "./clang.js";
import type { ProgramBuilder } from "./types.js";

const MANIFEST = "manifest.json";

/**
 * What `intercept build --out DIR` writes beside the objects, and what
 * `--objects DIR` trusts nothing of without checking: an object for each
 * policy's own program and each composition links are likely to make
 * (likelyCompositions), with the policies it holds; a node picks the one
 * for the composition a link needs, by its name;
 * the sha256 of the C it was built from (so a changed policy is refused,
 * not run with an old program), its content hash (the identity plans use,
 * clang's version included), and the object's own sha256 (so a tampered
 * object is refused).
 */
export interface ObjectManifest {
  format: "intercept-objects";
  formatVersion: 1;
  clang: string;
  objects: ManifestEntry[];
}

export interface ManifestEntry {
  /** The program's name: a policy's, or a composition's (src/model/composition.ts). */
  policy: string;
  /** The policies the program holds, in composition order: [policy] for a policy's own (absent in older manifests). */
  policies?: string[];
  sourceHash: string;
  contentHash: string;
  /** A file name in the manifest's directory: never a path. */
  object: string;
  sha256: string;
  minimumKernel: string;
}

/** Copies each built object into @dir as <program>.bpf.o and writes the manifest; returns the manifest. */
export async function writeObjects(dir: string, built: BuiltPolicy[]): Promise<ObjectManifest> {
  await mkdir(dir, { recursive: true });
  const objects: ManifestEntry[] = [];
  for (const { compiled, contentHash, objectPath } of built) {
    const object = objectFileName(compiled.policy.name);
    await copyFile(objectPath, path.join(dir, object));
    objects.push({
      policy: compiled.policy.name,
      policies: compiled.members.map((member) => member.name),
      sourceHash: compiled.sourceHash,
      contentHash,
      object,
      sha256: sha256(await readFile(objectPath)),
      minimumKernel: compiled.minimumKernel,
    });
  }
  const manifest: ObjectManifest = {
    format: "intercept-objects",
    formatVersion: 1,
    clang: await compilerVersion(),
    objects,
  };
  const partial = path.join(dir, `${MANIFEST}.${process.pid}.tmp`);
  await writeFile(partial, `${JSON.stringify(manifest, null, 2)}\n`);
  await rename(partial, path.join(dir, MANIFEST));
  return manifest;
}

/**
 * Programs from objects built elsewhere (`--objects DIR`): a node needs no
 * clang for the policies the manifest has. A policy it lacks is built with
 * clang if clang is installed; a policy whose C changed since, or an object
 * whose bytes changed, is refused before anything touches the kernel.
 */
export async function prebuiltObjects(dir: string): Promise<ProgramBuilder> {
  const manifest = await readManifest(dir);
  const byPolicy = new Map(manifest.objects.map((entry) => [entry.policy, entry]));
  const entryFor = (compiled: CompiledPolicy): ManifestEntry | undefined => {
    const entry = byPolicy.get(compiled.policy.name);
    if (entry && entry.sourceHash !== compiled.sourceHash) {
      throw new InterceptError(
        "prebuilt-mismatch",
        `policy ${compiled.policy.name}: its C is not the C ${path.join(dir, entry.object)} was built from (the policy or intercept changed since): build the objects again`,
      );
    }
    return entry;
  };
  return {
    async identify(compiled) {
      const entry = entryFor(compiled);
      if (entry) return entry.contentHash;
      await requireClang(compiled, dir);
      return clangBuilder.identify(compiled);
    },
    async object(compiled, contentHash) {
      const entry = entryFor(compiled);
      if (!entry || entry.contentHash !== contentHash) return clangBuilder.object(compiled, contentHash);
      const file = path.join(dir, entry.object);
      const bytes = await readFile(file).catch((error: NodeJS.ErrnoException) => {
        throw new InterceptError(
          "file-access",
          `policy ${compiled.policy.name}: cannot read ${file}: ${error.code ?? messageOf(error)}`,
        );
      });
      if (sha256(bytes) !== entry.sha256) {
        throw new InterceptError(
          "prebuilt-mismatch",
          `policy ${compiled.policy.name}: ${file} is not the object its manifest names (sha256 differs): build the objects again`,
        );
      }
      return file;
    },
  };
}

/** `--objects DIR`: programs from objects built in CI; otherwise clang here. */
export async function programBuilder(objects: string | undefined): Promise<ProgramBuilder> {
  return objects === undefined ? clangBuilder : prebuiltObjects(objects);
}

async function requireClang(compiled: CompiledPolicy, dir: string): Promise<void> {
  if (await findOnPath("clang")) return;
  throw new InterceptError(
    "tool-missing",
    `${compiled.members.length > 1 ? "the composition of" : "policy"} ${compiled.members.map((m) => m.name).join(", ")} has no prebuilt object in ${dir} and clang is not installed: build the objects in CI (\`intercept build --out DIR\`) or install clang`,
  );
}

async function readManifest(dir: string): Promise<ObjectManifest> {
  const file = path.join(dir, MANIFEST);
  let value: unknown;
  try {
    value = JSON.parse(await readFile(file, "utf8"));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new InterceptError(
      "file-access",
      `--objects: cannot read ${file}: ${code ?? messageOf(error).slice(0, 80)} (make it with \`intercept build --out ${dir}\`)`,
    );
  }
  const problem = manifestProblem(value);
  if (problem)
    throw new InterceptError(
      "prebuilt-mismatch",
      `--objects: ${file} is not an object manifest of this intercept: ${problem}`,
    );
  return value as ObjectManifest;
}

const HEX64 = /^[0-9a-f]{64}$/;

/** The first way @value is not a manifest, or undefined. Every field is checked: a manifest is input. */
function manifestProblem(value: unknown): string | undefined {
  const manifest = value as Partial<ObjectManifest> | null;
  if (typeof manifest !== "object" || manifest === null) return "not a JSON object";
  if (manifest.format !== "intercept-objects" || manifest.formatVersion !== 1)
    return "format is not intercept-objects version 1";
  if (!Array.isArray(manifest.objects)) return "objects is not a list";
  for (const [index, entry] of manifest.objects.entries()) {
    const e = entry as Partial<ManifestEntry> | null;
    const at = `objects[${index}]`;
    if (typeof e !== "object" || e === null) return `${at} is not an object`;
    if (typeof e.policy !== "string" || !isProgramName(e.policy)) return `${at}.policy is not a program name`;
    // A manifest written before compositions lists no policies: its programs are policies' own.
    const own = e.policies === undefined && isPolicyName(e.policy);
    if (
      !own &&
      (!Array.isArray(e.policies) ||
        e.policies.length === 0 ||
        !e.policies.every((name) => typeof name === "string" && isPolicyName(name)) ||
        compositionName(e.policies) !== e.policy)
    )
      return `${at}.policies are not the policies of ${e.policy}`;
    if (typeof e.object !== "string" || !isProgramObjectFileName(e.object))
      return `${at}.object is not a file name of ours`;
    for (const field of ["sourceHash", "contentHash", "sha256"] as const) {
      if (typeof e[field] !== "string" || !HEX64.test(e[field])) return `${at}.${field} is not a sha256`;
    }
  }
  return undefined;
}

function sha256(bytes: Buffer): string {
  return createHash("sha256").update(bytes).digest("hex");
}
