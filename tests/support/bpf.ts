/**
 * Loads a policy's program for packet-level tests and runs it on crafted
 * frames with BPF_PROG_TEST_RUN (`bpftool prog run`). Pins go under a
 * unique directory that close() removes.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { loadProgram } from "../../src/apply/steps.js";
import { buildPolicy } from "../../src/build/index.js";
import { compilePolicies } from "../../src/compile/index.js";
import { readRuleCounters, type RuleCounters } from "../../src/live/counters.js";
import { run } from "../../src/kernel/exec.js";
import { ensureBpffs, pins, PIN_ROOT } from "../../src/kernel/pins.js";
import type { Hook } from "../../src/kernel/tc.js";
import type { ValidPolicy } from "../../src/validate/index.js";

export interface TestRun {
  returnValue: number;
  output: Buffer;
  /** Average ns per run as BPF_PROG_TEST_RUN reports it. */
  nanoseconds: number;
}

export class LoadedProgram {
  private constructor(
    readonly dir: string,
    private readonly root: string,
    private readonly scratch: string,
  ) {}

  static async load(policy: ValidPolicy): Promise<LoadedProgram> {
    await ensureBpffs();
    const [compiled] = compilePolicies([policy]);
    const built = await buildPolicy(compiled!);
    const root = path.join(PIN_ROOT, `test-${randomBytes(4).toString("hex")}`);
    const dir = path.join(root, policy.name);
    const scratch = await mkdtemp(path.join(tmpdir(), "intercept-packets-"));
    await loadProgram(built.objectPath, dir, built.contentHash, policy.rules.map((rule) => rule.enabled));
    return new LoadedProgram(dir, root, scratch);
  }

  async run(hook: Hook, frame: Buffer, repeat = 1): Promise<TestRun> {
    const input = path.join(this.scratch, "in.bin");
    const output = path.join(this.scratch, "out.bin");
    await writeFile(input, frame);
    const printed = await run("bpftool", ["prog", "run", "pinned", pins.program(this.dir, hook), "data_in", input, "data_out", output, "repeat", String(repeat)]);
    const returnValue = Number(/Return value: (\d+)/.exec(printed)?.[1]);
    const nanoseconds = Number(/duration \(average\): (\d+)ns/.exec(printed)?.[1]);
    return { returnValue: returnValue | 0, output: await readFile(output), nanoseconds };
  }

  async counters(rule: number): Promise<RuleCounters> {
    return (await readRuleCounters({ dir: this.dir, enabled: Array(rule + 1).fill(true) }))[rule]!;
  }

  async close(): Promise<void> {
    await rm(this.root, { recursive: true, force: true });
    await rm(this.scratch, { recursive: true, force: true });
  }
}

/** A ValidPolicy for tests, with the defaults validation would fill in. */
export function testPolicy(name: string, rules: readonly Partial<ValidPolicy["rules"][number]>[]): ValidPolicy {
  return {
    name,
    file: `${name}.yaml`,
    interfaces: { include: null, exclude: [] },
    rules: rules.map((rule, index) => ({
      index,
      originalPort: 0,
      port: 0,
      protocol: "tcp",
      family: "any",
      enabled: true,
      ...rule,
    })),
  };
}
