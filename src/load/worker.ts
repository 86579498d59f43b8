/**
 * The policy worker's entry (a worker_threads worker; see evaluation.ts):
 * reads, evaluates and validates policies off the main thread, under a heap
 * limit, telling the main thread which file and phase it is on so that a
 * deadline or the limit can be reported there. One request at a time.
 */
import { parentPort } from "node:worker_threads";
import { validatePolicies } from "../validate/index.js";
import { readPolicies, readSource, type ReadPhase } from "./read.js";
import { SourceText } from "./source-map.js";
import { toData, type WorkerMessage, type WorkerRequest, type WorkerResult } from "./worker-protocol.js";
import type { LoadResult } from "./index.js";

const port = parentPort;
if (!port) throw new Error("src/load/worker.ts runs only as a worker thread");

port.on("message", (request: WorkerRequest) => {
  void answer(request);
});

async function answer({ id, target, validate }: WorkerRequest): Promise<void> {
  const send = (message: WorkerMessage) => port!.postMessage(message);
  const progress = (file: string, phase: ReadPhase) => send({ id, type: "progress", file, phase });
  try {
    const loaded: LoadResult = target.kind === "paths"
      ? await readPolicies(target.paths, progress)
      : await readSource(new SourceText(target.file, target.text), { cache: false }, progress);
    const result: WorkerResult = { policies: loaded.policies.map(toData), diagnostics: loaded.diagnostics };
    if (validate) result.validation = validatePolicies(loaded.policies, (file) => progress(file, "validating"));
    send({ id, type: "done", result });
  } catch (error) {
    // Not the files' fault (they end in diagnostics): the main thread reports it as an internal error.
    const failure = error instanceof Error ? { message: error.message, ...(error.stack !== undefined && { stack: error.stack }) } : { message: String(error) };
    send({ id, type: "failed", error: failure });
  }
}
