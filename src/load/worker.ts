/**
 * The policy worker's entry (a worker_threads worker; see evaluation.ts):
 * reads, evaluates and validates policies off the main thread, under a heap
 * limit, telling the main thread which file and phase it is on so that a
 * deadline or the limit can be reported there. One request at a time.
 */
import { parentPort } from "node:worker_threads";
import { validatePolicies } from "../validate/index.js";
import { findPolicyFiles } from "./files.js";
import { readPolicyFile, readSource, type ReadPhase } from "./read.js";
import { SourceText } from "./source-map.js";
import { fromData, toData, type WorkerMessage, type WorkerRequest } from "./worker-protocol.js";
import type { LoadedPolicy, LoadResult } from "./index.js";

const port = parentPort;
if (!port) throw new Error("src/load/worker.ts runs only as a worker thread");

port.on("message", (request: WorkerRequest) => {
  void answer(request);
});

async function answer({ id, target, validate }: WorkerRequest): Promise<void> {
  const send = (message: WorkerMessage) => port!.postMessage(message);
  const progress = (file: string, phase: ReadPhase) => send({ id, type: "progress", file, phase });
  const policies: LoadedPolicy[] = [];
  const read = (file: string, result: LoadResult) => {
    send({ id, type: "read", file, policies: result.policies.map(toData), diagnostics: result.diagnostics });
    policies.push(...result.policies);
  };
  try {
    if (target.kind === "source") {
      read(target.file, await readSource(new SourceText(target.file, target.text), { cache: false }, progress));
    } else {
      let files = target.kind === "rest" ? target.files : [];
      if (target.kind === "rest") policies.push(...target.carried.map(fromData));
      else {
        progress(target.paths[0] ?? ".", "finding");
        const found = await findPolicyFiles(target.paths);
        send({ id, type: "found", ...found });
        files = found.files;
      }
      for (const file of files) read(file.file, await readPolicyFile(file, progress));
    }
    send({ id, type: "done", ...(validate && { validation: validatePolicies(policies, (file) => progress(file, "validating")) }) });
  } catch (error) {
    // Not the files' fault (they end in diagnostics): the main thread reports it as an internal error.
    const failure = error instanceof Error ? { message: error.message, ...(error.stack !== undefined && { stack: error.stack }) } : { message: String(error) };
    send({ id, type: "failed", error: failure });
  }
}
