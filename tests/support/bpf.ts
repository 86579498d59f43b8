/**
 * Loads a policy's program for packet-level tests and runs it on crafted
 * frames with BPF_PROG_TEST_RUN (`bpftool prog run`). Pins go under a
 * unique directory that close() removes; nothing is attached anywhere.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { buildPolicy } from "../../src/build/index.js";
import { compilePolicies } from "../../src/compile/index.js";
import { loadVersion, readVersionCounters, writeRule } from "../../src/datapath/kernel.js";
import type { Hook, RuleCounters, VersionRef } from "../../src/datapath/types.js";
import { run } from "../../src/kernel/exec.js";
import { ensureBpffs, PIN_ROOT, PinLayout } from "../../src/kernel/pins.js";
import type { ValidPolicy } from "../../src/validate/index.js";

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
 */
export async function testRun(pin: string, frame: Buffer, repeat = 1): Promise<TestRun> {
  const dir = await mkdtemp(path.join(tmpdir(), "intercept-test-run-"));
  try {
    const [input, output] = [path.join(dir, "in.bin"), path.join(dir, "out.bin")];
    await writeFile(input, frame);
    const printed = await run("bpftool", ["prog", "run", "pinned", pin, "data_in", input, "data_out", output, "repeat", String(repeat)]);
    return {
      returnValue: Number(/Return value: (\d+)/.exec(printed)?.[1]) | 0,
      output: await readFile(output),
      nanoseconds: Number(/duration \(average\): (\d+)ns/.exec(printed)?.[1]),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export class LoadedProgram {
  private constructor(
    readonly pins: PinLayout,
    readonly ref: VersionRef,
    private readonly root: string,
  ) {}

  static async load(policy: ValidPolicy): Promise<LoadedProgram> {
    await ensureBpffs();
    const [compiled] = compilePolicies([policy]);
    const built = await buildPolicy(compiled!);
    const root = path.join(PIN_ROOT, `test-${randomBytes(4).toString("hex")}`);
    const pins = new PinLayout("ns0", root);
    const ref = { policy: policy.name, version: built.contentHash.slice(0, 16) };
    await loadVersion(pins, { ref, contentHash: built.contentHash, objectPath: built.objectPath, hooks: compiled!.hooks, enabled: policy.rules.map((rule) => rule.enabled) });
    return new LoadedProgram(pins, ref, root);
  }

  run(hook: Hook, frame: Buffer, repeat = 1): Promise<TestRun> {
    return testRun(this.programPin(hook), frame, repeat);
  }

  programPin(hook: Hook): string {
    return this.pins.program(this.ref, hook);
  }

  async counters(rule: number): Promise<RuleCounters> {
    return (await readVersionCounters(this.pins, this.ref, rule + 1))[rule]!;
  }

  /** A live edit, as apply makes it. */
  setRule(index: number, enabled: boolean): Promise<void> {
    return writeRule(this.pins, this.ref, index, enabled);
  }

  async close(): Promise<void> {
    await rm(this.root, { recursive: true, force: true });
  }
}

/** A ValidPolicy for tests, with the defaults validation would fill in. */
export function testPolicy(name: string, rules: readonly Partial<ValidPolicy["rules"][number]>[]): ValidPolicy {
  return {
    name,
    file: `${name}.yaml`,
    interfaces: { include: null, exclude: [] },
    rules: rules.map((rule, index) => {
      const protocol = rule.protocol ?? "tcp";
      const strategy = rule.strategy ?? (protocol === "tcp" ? "steer" : "rewrite");
      return {
        index,
        originalPort: 0,
        port: 0,
        protocol,
        family: "any",
        strategy,
        ...(strategy === "steer" && { onProxyDown: "drop" as const }),
        enabled: true,
        ...rule,
      };
    }),
  };
}
