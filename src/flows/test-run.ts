/**
 * What the program attached to a link does with a connection's first
 * packet, asked of the kernel with BPF_PROG_TEST_RUN and without touching
 * live state: a side copy of the attached version's object is loaded,
 * reading the live version's read-only maps (rule switches, prefix tries,
 * content hash) and writing to its own fresh counters, TIME_WAIT tries,
 * record switches and ring buffer. Its counters then say which rule slot
 * matched and on which path. The side copy is pinned outside intercept's
 * pin tree (plan and status never see it) and removed in every case.
 *
 * Under test run the skb is not at tc ingress, so bpf_sk_assign refuses:
 * a steered SYN always takes the proxy-down path here, and whether a
 * listener would take it is the caller's to find out (`ss`).
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { formattedEntries, hostBytes, loadAndPin, type MapEntry } from "../kernel/bpftool.js";
import { runWithInput } from "../kernel/exec.js";
import { type NetworkNamespace } from "../model/namespace.js";
import { BPFFS, removePins, type PinLayout } from "../kernel/pins.js";
import { MAPS, TC_PROGRAMS } from "../model/bpf-abi.js";
import { COUNTER_SLOTS, counterKey, type CounterSlot } from "../model/counters.js";
import type { VersionRef } from "../model/version.js";

/** The live maps a side copy reads: only ever read by the programs. */
const SHARED_READ_ONLY = [MAPS.rule_state.name, MAPS.policy_meta.name, MAPS.prefixes_v4.name, MAPS.prefixes_v6.name];

/** Side copies are pinned as /sys/fs/bpf/intercept-explain-<pid>-<random>. */
const SIDE_COPY_PREFIX = "intercept-explain-";

export interface TestRunResult {
  /** The program's return value, signed: -1 TC_ACT_UNSPEC (handed on), 2 TC_ACT_SHOT (dropped). */
  returnValue: number;
  /** The slot whose counter moved, and which counter; undefined: no rule acted. */
  matched: { slot: number; counter: CounterSlot } | undefined;
  /** Whether the packet left as it came (a rewrite rule changes its port). */
  unchanged: boolean;
}

/**
 * A side copy of @version's programs, loaded from @objectPath, for as long
 * as @use runs; removed in every case.
 */
export async function withSideCopy<T>(
  pins: PinLayout,
  version: VersionRef,
  objectPath: string,
  use: (copy: SideCopy) => Promise<T>,
): Promise<T> {
  await removeOrphanedCopies();
  const side = path.join(BPFFS, `${SIDE_COPY_PREFIX}${process.pid}-${randomBytes(4).toString("hex")}`);
  const files = await mkdtemp(path.join(tmpdir(), "intercept-explain-"));
  try {
    const reuse = Object.fromEntries(
      SHARED_READ_ONLY.map((name) => [name, pins.map(version, name)] as const).filter(([, pin]) => existsSync(pin)),
    );
    await loadAndPin(objectPath, side, reuse);
    return await use(new SideCopy(side, files));
  } finally {
    await removePins(side);
    await rm(files, { recursive: true, force: true });
  }
}

/** Removes the side copies of explain processes that are gone (killed before they could remove theirs). */
async function removeOrphanedCopies(): Promise<void> {
  for (const name of await readdir(BPFFS)) {
    const pid = Number(/^intercept-explain-(\d+)-[0-9a-f]{8}$/.exec(name)?.[1]);
    if (Number.isInteger(pid) && pid > 0 && !existsSync(`/proc/${pid}`)) await removePins(path.join(BPFFS, name));
  }
}

export class SideCopy {
  /** Each counter's total so far: a run's result is what it added. */
  private seen = new Map<number, number>();

  constructor(
    private readonly dir: string,
    private readonly files: string,
  ) {}

  /**
   * Runs each of @frames through the copy's ingress program, in @netns
   * (whose sockets its lookups see), each followed by a read of the copy's
   * counters of @slots rules: one bpftool batch, in one process, for them
   * all. A test run has no filter, so it counts in the loader's namespace
   * slot: only that block is looked up, key by key, not the whole map (a
   * block for every namespace slot).
   */
  async runMany(netns: NetworkNamespace, frames: Buffer[], slots: number): Promise<TestRunResult[]> {
    const program = path.join(this.dir, "progs", TC_PROGRAMS.ingress.name);
    const counters = path.join(this.dir, "maps", MAPS.rule_counters.name);
    const keys = Array.from({ length: slots * COUNTER_SLOTS.length }, (_, key) => key);
    const lookups = keys.map((key) => `map lookup pinned ${counters} key hex ${hostBytes(key, 4).join(" ")}`);
    const lines: string[] = [];
    for (const [index, frame] of frames.entries()) {
      const [input, output] = [path.join(this.files, `in${index}.bin`), path.join(this.files, `out${index}.bin`)];
      await writeFile(input, frame);
      lines.push(`prog run pinned ${program} data_in ${input} data_out ${output} repeat 1`, ...lookups);
    }
    const printed = await runWithInput("bpftool", ["-j", "batch", "file", "-"], `${lines.join("\n")}\n`, netns);
    const outputs = (JSON.parse(printed) as { output: unknown }[]).map((entry) => entry.output);
    const results: TestRunResult[] = [];
    const stride = 1 + lookups.length;
    for (const [index, frame] of frames.entries()) {
      const ran = outputs[stride * index] as { retval: number };
      const entries = outputs.slice(stride * index + 1, stride * (index + 1));
      results.push({
        returnValue: ran.retval | 0,
        matched: this.moved(formattedEntries<{ packets: number }>(entries), slots),
        unchanged: (await readFile(path.join(this.files, `out${index}.bin`))).equals(frame),
      });
    }
    return results;
  }

  /** The first slot and counter of @entries (the copy's rule_counters) that moved since the last run. */
  private moved(entries: MapEntry<{ packets: number }>[], slots: number): TestRunResult["matched"] {
    const totals = new Map(
      entries.map((entry) => [entry.key, (entry.values ?? []).reduce((sum, { value }) => sum + value.packets, 0)]),
    );
    let moved: TestRunResult["matched"];
    for (let slot = 0; slot < slots && !moved; slot++)
      for (const counter of COUNTER_SLOTS) {
        const key = counterKey(slot, counter);
        if ((totals.get(key) ?? 0) > (this.seen.get(key) ?? 0)) {
          moved = { slot, counter };
          break;
        }
      }
    this.seen = totals;
    return moved;
  }
}
