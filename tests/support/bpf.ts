/**
 * Loads a policy's program for packet-level tests and runs it on crafted
 * frames with BPF_PROG_TEST_RUN (lab/bpf.ts). Pins go under a
 * unique directory that close() removes; nothing is attached anywhere.
 */
import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import path from "node:path";
import { buildPolicy } from "../../src/toolchain/index.js";
import { compilePolicies } from "../../src/compile/index.js";
import { loadVersion, readVersionCounters, writeRule } from "../../src/datapath/kernel.js";
import type { RuleCounters } from "../../src/datapath/types.js";
import type { Hook } from "../../src/model/hooks.js";
import type { VersionRef } from "../../src/model/version.js";
import { ensureBpffs, PIN_ROOT, PinLayout } from "../../src/kernel/pins.js";
import type { Interceptor } from "../../src/api.js";
import { toRule, type ValidPolicy } from "../../src/validate/index.js";
import { testRun, type TestRun } from "../../lab/bpf.js";

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
    try {
      await loadVersion(pins, {
        ref,
        contentHash: built.contentHash,
        objectPath: built.objectPath,
        hooks: compiled!.hooks,
        enabled: policy.rules.map((rule) => rule.enabled),
        prefixes: compiled!.prefixes,
      });
    } catch (error) {
      await rm(root, { recursive: true, force: true }); // a program the verifier refused leaves no directory behind
      throw error;
    }
    return new LoadedProgram(pins, ref, root);
  }

  run(hook: Hook, frame: Buffer, repeat = 1): Promise<TestRun> {
    return testRun(this.programPin(hook), frame, repeat);
  }

  programPin(hook: Hook): string {
    return this.pins.program(this.ref, hook);
  }

  /** The counters of rules 0 to @rules - 1, in one map read. */
  allCounters(rules: number): Promise<RuleCounters[]> {
    return readVersionCounters(this.pins, this.ref, rules);
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

/** A ValidPolicy for tests: @interceptors read as validation reads them (toRule), unchecked across rules. */
export function testPolicy(name: string, interceptors: readonly Interceptor[]): ValidPolicy {
  return {
    name,
    file: `${name}.yaml`,
    interfaces: { include: null, exclude: [] },
    rules: interceptors.map((interceptor, index) => toRule(interceptor, index)),
  };
}
