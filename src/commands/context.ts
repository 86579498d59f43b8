import type { Host } from "../host/types.js";
import type { ProgramBuilder } from "../toolchain/index.js";
import type { ProgressStream } from "./progress.js";

/** Where a command writes: a stream, and whether it is a terminal (progress is shown only there). */
export type Output = ProgressStream;

/**
 * What a command that looks at or changes the kernel is given: the Host
 * port (every datapath, lock and signal comes from it), how programs are
 * built, and where its output goes. src/cli.ts assembles the one context
 * of a run from KernelHost, as it assembles the agent; unit tests give a
 * FakeHost and capture the output.
 */
export interface CommandContext {
  readonly host: Host;
  /** The builder for `--objects DIR` (undefined: clang on this machine). */
  programBuilder(objects: string | undefined): Promise<ProgramBuilder>;
  /** The command's result: the plan, the status, JSON. */
  readonly stdout: Output;
  /** Everything said about the run: progress, waits, cancellations. */
  readonly stderr: Output;
}
