/**
 * Loads a policy's program for packet-level tests and runs it on crafted
 * frames with BPF_PROG_TEST_RUN (`bpftool prog run`). Pins go under a
 * unique directory that close() removes.
 */
import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import path from "node:path";
import { loadProgram } from "../../src/apply/steps.js";
import { buildPolicy } from "../../src/build/index.js";
import { compilePolicies } from "../../src/compile/index.js";
import { readRuleCounters, type RuleCounters } from "../../src/live/counters.js";
import { testRun, type TestRun } from "../../src/kernel/bpftool.js";
import { ensureBpffs, pins, PIN_ROOT } from "../../src/kernel/pins.js";
import type { Hook } from "../../src/kernel/tc.js";
import type { ValidPolicy } from "../../src/validate/index.js";

export class LoadedProgram {
  private constructor(
    readonly dir: string,
    private readonly root: string,
  ) {}

  static async load(policy: ValidPolicy): Promise<LoadedProgram> {
    await ensureBpffs();
    const [compiled] = compilePolicies([policy]);
    const built = await buildPolicy(compiled!);
    const root = path.join(PIN_ROOT, `test-${randomBytes(4).toString("hex")}`);
    const dir = path.join(root, policy.name);
    await loadProgram(built.objectPath, dir, built.contentHash, policy.rules.map((rule) => rule.enabled));
    return new LoadedProgram(dir, root);
  }

  run(hook: Hook, frame: Buffer, repeat = 1): Promise<TestRun> {
    return testRun(pins.program(this.dir, hook), frame, repeat);
  }

  async counters(rule: number): Promise<RuleCounters> {
    return (await readRuleCounters({ dir: this.dir, enabled: Array(rule + 1).fill(true) }))[rule]!;
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
