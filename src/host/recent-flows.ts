/**
 * The agent's per-namespace flow files under /run/intercept/flows
 * (src/model/recent-flows.ts): the last records of each rule, written
 * whole (a temporary file renamed over the last one, so a reader never
 * sees half of one), and the ring buffer's reader lock.
 */
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { InterceptError } from "../errors.js";
import { asRecentFlowsDocument, flowsFiles, type RecentFlowsDocument } from "../model/recent-flows.js";
import { lockNamespace, type LockHolder, type NamespaceLock } from "./lock.js";

export async function publishRecentFlows(dir: string, key: string, document: RecentFlowsDocument): Promise<void> {
  const file = flowsFiles(key, dir).recent;
  const temporary = `${file}.${process.pid}.tmp`;
  try {
    await mkdir(dir, { recursive: true, mode: 0o755 });
    await writeFile(temporary, `${JSON.stringify(document)}\n`, { mode: 0o644 });
    await rename(temporary, file);
  } catch (error) {
    await rm(temporary, { force: true });
    throw fileError("write", file, error);
  }
}

export async function removeRecentFlows(dir: string, key: string): Promise<void> {
  const file = flowsFiles(key, dir).recent;
  try {
    await rm(file, { force: true });
  } catch (error) {
    throw fileError("remove", file, error);
  }
}

export async function readRecentFlows(dir: string, key: string): Promise<RecentFlowsDocument | undefined> {
  const file = flowsFiles(key, dir).recent;
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined; // no agent publishes here
    throw fileError("read", file, error);
  }
  try {
    return asRecentFlowsDocument(JSON.parse(text));
  } catch (error) {
    if (error instanceof SyntaxError) return undefined; // not ours: files are only ever renamed in whole
    throw error;
  }
}

/**
 * The lock of @key's ring buffer, taken at once or refused: a ring buffer
 * has one consumer position, and two readers would each get part of the records.
 */
export async function lockFlowReader(dir: string, key: string, holder: string): Promise<NamespaceLock> {
  let heldBy: LockHolder | undefined;
  try {
    return await lockNamespace(key, {
      dir,
      holder,
      timeoutMs: 0,
      onWait: (holder) => {
        heldBy = holder;
      },
    });
  } catch (error) {
    if (!(error instanceof InterceptError) || error.code !== "lock-held" || !heldBy) throw error;
    throw new InterceptError(
      "lock-held",
      `the flow records are read by ${heldBy.description}: a ring buffer has one reader`,
    );
  }
}

function fileError(what: string, file: string, error: unknown): InterceptError {
  const code = (error as NodeJS.ErrnoException).code ?? String(error);
  return new InterceptError("file-access", `cannot ${what} ${path.basename(file)} in ${path.dirname(file)}: ${code}`);
}
