import { readFileSync } from "node:fs";
import { type FileHandle, open, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import type { ObservedState } from "../datapath/types.js";
import { displayLine } from "../diagnostics.js";
import { InterceptError, messageOf } from "../errors.js";
import type { NetworkNamespace } from "../model/namespace.js";
import type { Change, Plan } from "./model.js";
import { observedSnapshot, type ObservedSnapshot } from "./snapshot.js";

const SCHEMA_PATH = fileURLToPath(new URL("../../../schemas/saved-plan.schema.json", import.meta.url));
/** A plan of 10,000 rules is a few MB; anything far larger is not one of ours. */
const MAX_SAVED_PLAN_BYTES = 64 * 1024 * 1024;

/**
 * A plan saved by `plan --out FILE`, applied later by `apply --plan FILE`.
 * It is data, never instructions: apply checks it against
 * schemas/saved-plan.schema.json, validates the policies in it exactly like
 * policy files, computes the plan again from them and the kernel, and
 * executes only if that equals the saved changes. No path travels in it.
 */
export interface SavedPlan {
  format: "intercept-plan";
  formatVersion: 3;
  createdAt: string;
  namespace: string | null;
  namespaceKey: string;
  /** What the kernel held when the plan was made: apply refuses, naming what moved, if it differs. */
  observed: ObservedSnapshot;
  policies: SavedPolicy[];
  changes: Change[];
}

export interface SavedPolicy {
  /** Where it was read from: a label for messages and the default name, never opened. */
  source: string;
  /** The policy as loaded from its file (plain data), with its name filled in. */
  definition: Record<string, unknown>;
}

export async function savePlan(
  file: string,
  plan: Plan,
  observed: ObservedState,
  policies: SavedPolicy[],
): Promise<void> {
  const saved: SavedPlan = {
    format: "intercept-plan",
    formatVersion: 3,
    createdAt: new Date().toISOString(),
    namespace: plan.netns.name ?? null,
    namespaceKey: observed.namespaceKey,
    observed: observedSnapshot(observed),
    policies,
    changes: plan.changes,
  };
  try {
    await writeFile(file, `${JSON.stringify(saved, null, 2)}\n`);
  } catch (error) {
    throw new InterceptError(
      "file-access",
      `cannot write the plan to ${file}: ${(error as NodeJS.ErrnoException).code ?? messageOf(error)}`,
    );
  }
}

/**
 * Whether @file is a saved plan, decided by reading it, not by its name: a
 * regular file whose content is a JSON object naming the format. Policies
 * (YAML or TypeScript) never are.
 */
export async function isSavedPlan(file: string): Promise<boolean> {
  const head = await readHead(file, 256);
  return head !== undefined && /^\s*\{[\s\S]*"format"\s*:\s*"intercept-plan"/.test(head);
}

async function readHead(file: string, bytes: number): Promise<string | undefined> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(file, "r");
    if (!(await handle.stat()).isFile()) return undefined;
    const buffer = Buffer.alloc(bytes);
    const { bytesRead } = await handle.read(buffer, 0, bytes, 0);
    return buffer.subarray(0, bytesRead).toString("utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "EISDIR") return undefined; // not a file: policies decide what it is
    throw new InterceptError("file-access", `cannot read ${file}: ${code ?? messageOf(error)}`);
  } finally {
    await handle?.close();
  }
}

/** Reads and checks a saved plan's shape; what it claims is checked by the caller against the kernel. */
export async function readSavedPlan(file: string): Promise<SavedPlan> {
  const invalid = (why: string) => new InterceptError("saved-plan-invalid", `${file}: not a saved plan: ${why}`);
  let text: string;
  try {
    const handle = await open(file, "r");
    try {
      const size = (await handle.stat()).size;
      if (size > MAX_SAVED_PLAN_BYTES) throw invalid(`${size} bytes, more than any plan intercept writes`);
      text = await handle.readFile("utf8");
    } finally {
      await handle.close();
    }
  } catch (error) {
    if (error instanceof InterceptError) throw error;
    throw new InterceptError(
      "file-access",
      `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? messageOf(error)}`,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw invalid(`not JSON (${displayLine(messageOf(error).slice(0, 80))})`); // JSON.parse quotes the text
  }
  const problem = await schemaProblem(value);
  if (problem) throw invalid(problem);
  return value as SavedPlan;
}

/** The first way @value breaks the saved-plan schema, in words; undefined when it conforms. */
async function schemaProblem(value: unknown): Promise<string | undefined> {
  // ajv only on this path: compiling the schema costs ~100 ms that plan and apply from policies never pay.
  const { Ajv2020 } = await import("ajv/dist/2020.js");
  const validate = new Ajv2020({ allErrors: false, strict: true }).compile(
    JSON.parse(readFileSync(SCHEMA_PATH, "utf8")),
  );
  if (validate(value)) return undefined;
  const [error] = validate.errors ?? [];
  // The path is made of the file's own keys: printable, like any text from a file.
  return displayLine(`${error?.instancePath || "the file"} ${error?.message ?? "is invalid"}`.slice(0, 200));
}

/** Where a saved plan applies. */
export function savedNamespace(saved: SavedPlan): NetworkNamespace {
  return saved.namespace === null ? {} : { name: saved.namespace };
}
