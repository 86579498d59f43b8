/** BPF_PROG_TEST_RUN through bpftool: a pinned program on a crafted frame (packet tests, the datapath benchmark). */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { run } from "../src/kernel/exec.js";
import { type NetworkNamespace } from "../src/model/namespace.js";

export interface TestRun {
  /** The program's return value, as a signed int (TC_ACT_UNSPEC is -1). */
  returnValue: number;
  /** The frame as the program left it. */
  output: Buffer;
  /** Average ns per run, as the kernel measures it. */
  nanoseconds: number;
}

/**
 * Runs a pinned program on @frame with BPF_PROG_TEST_RUN (`bpftool prog
 * run`), @repeat times on the same skb: a rewrite persists between repeats.
 * The skb belongs to @netns's loopback device, so that is where a program's
 * socket lookups look (run in an empty namespace, they find nothing).
 */
export async function testRun(pin: string, frame: Buffer, repeat = 1, netns: NetworkNamespace = {}): Promise<TestRun> {
  const dir = await mkdtemp(path.join(tmpdir(), "intercept-test-run-"));
  try {
    const [input, output] = [path.join(dir, "in.bin"), path.join(dir, "out.bin")];
    await writeFile(input, frame);
    const printed = await run(
      "bpftool",
      ["prog", "run", "pinned", pin, "data_in", input, "data_out", output, "repeat", String(repeat)],
      netns,
    );
    return {
      returnValue: Number(/Return value: (\d+)/.exec(printed)?.[1]) | 0,
      output: await readFile(output),
      nanoseconds: Number(/duration \(average\): (\d+)ns/.exec(printed)?.[1]),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
