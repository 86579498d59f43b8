/**
 * The policy worker's entry (a worker_threads worker; see client.ts):
 * loads and validates policies off the main thread, under a heap limit,
 * posting which file and phase it is on, and each result as it is reached,
 * on the request's steps port (which the main thread reads lazily), so
 * that a deadline or the limit can be reported at the file it stopped, and
 * what came before it kept. One request at a time.
 */
import { parentPort } from "node:worker_threads";
import { findPolicyFiles } from "../../load/files.js";
import type { LoadedPolicy } from "../../load/index.js";
import { readPolicyFile, type ReadPhase } from "../../load/read.js";
import { validatePolicies } from "../../validate/index.js";
import { fromData, monotonicMs, toData, type Step, type WorkerMessage, type WorkerRequest } from "./protocol.js";

const port = parentPort;
if (!port) throw new Error("policy-worker/worker.ts runs only as a worker thread");

port.on("message", (request: WorkerRequest) => {
  void answer(request);
});

async function answer({ id, target, steps }: WorkerRequest): Promise<void> {
  const send = (message: WorkerMessage) => port!.postMessage(message);
  const step = (message: Step) => steps.postMessage(message);
  const progress = (file: string, phase: ReadPhase) => step({ type: "progress", file, phase, at: monotonicMs() });
  try {
    const policies: LoadedPolicy[] = target.kind === "rest" ? target.carried.map(fromData) : [];
    let files = target.kind === "rest" ? target.files : [];
    if (target.kind === "paths") {
      progress(target.paths[0] ?? ".", "finding");
      const found = await findPolicyFiles(target.paths);
      step({ type: "found", ...found });
      files = found.files;
    }
    for (const file of files) {
      const result = await readPolicyFile(file, progress);
      step({
        type: "read",
        file: file.file,
        policies: result.policies.map(toData),
        diagnostics: result.diagnostics,
      });
      policies.push(...result.policies);
    }
    send({ id, type: "done", validation: validatePolicies(policies, (file) => progress(file, "validating")) });
  } catch (error) {
    // Not the files' fault (they end in diagnostics): the main thread reports it as an internal error.
    const failure =
      error instanceof Error
        ? { message: error.message, ...(error.stack !== undefined && { stack: error.stack }) }
        : { message: String(error) };
    send({ id, type: "failed", error: failure });
  }
}
