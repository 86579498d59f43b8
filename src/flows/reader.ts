/**
 * Reads a namespace's ring buffer of flow records. bpftool has no ring
 * buffer reader and Node cannot mmap one, so a small C program does it
 * (templates/observe/flow_reader.c, on libbpf): built on first use with
 * clang, the compiler every policy is built with, and cached by its
 * source's hash. It writes each record as it found it, framed
 * (./frames.ts), a batch at a time.
 */
import { createHash } from "node:crypto";
import { readFile, rename } from "node:fs/promises";
import { existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { cacheDir } from "../cache-dir.js";
import { CommandError, InterceptError } from "../errors.js";
import { run } from "../kernel/exec.js";
import { type ControlWord, READY, RecordBatches } from "./frames.js";

const READER_SOURCE = fileURLToPath(new URL("../../../templates/observe/flow_reader.c", import.meta.url));

let built: Promise<string> | undefined;

/** The reader's executable, built once per source (clang and libbpf-dev, as `build` needs). */
export function flowReader(): Promise<string> {
  built ??= buildReader();
  return built;
}

async function buildReader(): Promise<string> {
  const source = await readFile(READER_SOURCE);
  const hash = createHash("sha256").update(source).digest("hex").slice(0, 16);
  const dir = (await cacheDir("readers")) ?? os.tmpdir();
  const binary = path.join(dir, `flow_reader-${hash}`);
  if (existsSync(binary)) return binary;
  const temporary = `${binary}.${process.pid}.tmp`;
  try {
    await run("clang", ["-O2", "-Wall", "-Werror", "-o", temporary, READER_SOURCE, "-lbpf"]);
  } catch (error) {
    if (error instanceof InterceptError && error.code === "tool-missing")
      throw new InterceptError(
        "tool-missing",
        "clang not found: `watch` builds its ring buffer reader on first use (install clang and libbpf-dev)",
      );
    throw error;
  }
  await rename(temporary, binary);
  return binary;
}

/** A running reader: its records, in order, until stop(). */
export interface FlowStream {
  /** Resolves once the reader holds the ring buffer: a record sent after this is seen. */
  ready: Promise<void>;
  /** The records, in order, as they come: a batch at a time (what one read brought). */
  batches: AsyncIterable<Buffer[]>;
  /** Stops the reader; the iteration then ends. */
  stop(): Promise<void>;
}

/** Starts reading the ring buffer pinned at @pin. */
export async function readFlows(pin: string): Promise<FlowStream> {
  // stdout is not buffered by execa: the records go to the caller, for as long as it watches.
  const child = execa(await flowReader(), [pin], {
    reject: false,
    stdin: "ignore",
    extendEnv: false,
    buffer: { stdout: false, stderr: true },
  });
  let markReady: () => void = () => undefined;
  let failReady: (error: Error) => void = () => undefined;
  const ready = new Promise<void>((resolve, reject) => {
    markReady = resolve;
    failReady = reject;
  });
  // Piped now, so that it reads "ready" from the start, whenever the caller begins to iterate.
  const frames = child.stdout!.pipe(new RecordBatches());
  frames.on("control", (word: ControlWord) => word === READY && markReady());
  const finished = child.then((result) => {
    if (result.exitCode !== 0 && !result.isTerminated)
      failReady(new CommandError(`flow_reader ${pin}`, String(result.stderr)));
    else failReady(new InterceptError("flows-unavailable", `the flow reader of ${pin} stopped before it was ready`));
    return result;
  });
  async function* batches(): AsyncGenerator<Buffer[]> {
    for await (const batch of frames) yield batch as Buffer[];
    const result = await finished;
    if (result.exitCode !== 0 && !result.isTerminated)
      throw new CommandError(`flow_reader ${pin}`, String(result.stderr));
  }
  return {
    ready,
    batches: batches(),
    async stop() {
      child.kill("SIGTERM");
      await finished;
    },
  };
}
