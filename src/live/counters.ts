import { counterKey } from "../compile/counters.js";
import { dumpMap } from "../kernel/bpftool.js";
import { pins } from "../kernel/pins.js";
import type { LiveProgram } from "./index.js";

export interface Counter {
  packets: number;
  bytes: number;
}

export interface RuleCounters {
  ingress: Counter;
  egress: Counter;
}

/** Each rule's packets and bytes per direction, summed over CPUs (rule_counters is per-CPU). */
export async function readRuleCounters(program: Pick<LiveProgram, "dir" | "enabled">): Promise<RuleCounters[]> {
  const entries = await dumpMap<Counter>(pins.map(program.dir, "rule_counters")).catch(() => []);
  const total = (key: number): Counter =>
    (entries.find((entry) => entry.key === key)?.values ?? []).reduce(
      (sum, { value }) => ({ packets: sum.packets + value.packets, bytes: sum.bytes + value.bytes }),
      { packets: 0, bytes: 0 },
    );
  return program.enabled.map((_, index) => ({ ingress: total(counterKey(index, "rewrittenIngress")), egress: total(counterKey(index, "rewrittenEgress")) }));
}
