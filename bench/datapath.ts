/**
 * `npm run bench:datapath`: the generated program against the floor (an
 * empty tc program) and against the map-lookup approach of BPF samples,
 * side by side in one run with BPF_PROG_TEST_RUN, then how the generated
 * program scales with the number of rules, where the table strategy
 * overtakes the switch (the crossover), what a steer program costs
 * (steerCosts); then selectors (a `*`-with-exceptions rule, source lists of
 * 1, 100 and 10,000 CIDRs) and where an LPM trie overtakes constant compares
 * for a CIDR list. Prints tables and writes bench/results/datapath.json.
 *
 * Hits are measured with flip pairs (8000→9000 and 9000→8000): BPF_PROG_TEST_RUN
 * re-runs one skb, so after a one-way rewrite every later repeat would be a
 * miss. Validation rejects such chains; the benchmark builds its policies
 * directly, since every repeat must take the hit path.
 *
 *   BENCH_ONLY=composition: the composition rows alone; BENCH_ONLY=events: the
 *   flow records' per-SYN cost alone (eventsCost). Neither writes results.
 */
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { execa } from "execa";
import { compileBpf, contentHash } from "../src/toolchain/index.js";
import { compileComposition, compilePolicies, type CompiledPolicy } from "../src/compile/index.js";
import {
  matchStrategy,
  PREFIX_CONSTANT_LIMIT,
  SWITCH_LIMIT,
  TEMPLATE_DIR,
  type MatchStrategy,
} from "../src/compile/render.js";
import { loadVersion } from "../src/datapath/kernel.js";
import { flowReader } from "../src/flows/reader.js";
import { droppedRecords, writeSwitches } from "../src/flows/switch.js";
import { FLOW_EVENTS } from "../src/model/bpf-abi.js";
import { loadAndPin, updateMap } from "../src/kernel/bpftool.js";
import { run, runJson } from "../src/kernel/exec.js";
import { type NetworkNamespace } from "../src/model/namespace.js";
import { ensureBpffs, PIN_ROOT, PinLayout } from "../src/kernel/pins.js";
import type { Interceptor } from "../src/api.js";
import { addressText, type Family } from "../src/validate/addresses.js";
import { toRule, type Rule, type ValidPolicy } from "../src/validate/index.js";
import { testRun } from "../lab/bpf.js";
import { Lab } from "../lab/network.js";
import { buildPacket, type PacketSpec, type TcpFlag } from "../lab/packets.js";
import { table } from "./table.js";
import { median, shuffle, spread } from "./stats.js";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 21);
const REPEAT = Number(process.env.BENCH_REPEAT ?? 200_000);
const SCALING_SIZES = [2, SWITCH_LIMIT, 100, 1000, 10_000];
const CROSSOVER_SIZES = [4, 16, 32, 64, 128, 512];

type Variant = "empty" | "reference" | "generated";
interface Case {
  name: string;
  hit: boolean;
  frame: Buffer;
}

type BenchRule = Omit<Rule, "index">;

/** A rewrite rule of one port, built directly: the benchmark needs chains validation refuses. */
function rewriteRule(originalPort: number, port: number, protocol: Rule["protocol"] = "tcp"): BenchRule {
  return {
    originalPorts: [{ first: originalPort, last: originalPort }],
    exceptPorts: [],
    sources: [],
    exceptSources: [],
    destinations: [],
    port,
    protocol,
    family: "any",
    strategy: "rewrite",
    enabled: true,
  };
}

const FLIP_RULES: BenchRule[] = [
  rewriteRule(8000, 9000),
  rewriteRule(9000, 8000),
  rewriteRule(5000, 6000, "udp"),
  rewriteRule(6000, 5000, "udp"),
];

function policyOf(name: string, rules: BenchRule[]): ValidPolicy {
  return {
    name,
    file: `${name}.ts`,
    interfaces: { include: null, exclude: [] },
    rules: rules.map((rule, index) => ({ ...rule, index })),
  };
}

function cases(): Case[] {
  const all: Case[] = [];
  for (const family of ["ipv4", "ipv6"] as const) {
    for (const protocol of ["tcp", "udp"] as const) {
      const hitPort = protocol === "tcp" ? 8000 : 5000;
      const spec = (dport: number): PacketSpec => ({ family, protocol, sport: 40000, dport });
      all.push({ name: `${family} ${protocol} hit`, hit: true, frame: buildPacket(spec(hitPort)) });
      all.push({ name: `${family} ${protocol} miss`, hit: false, frame: buildPacket(spec(12345)) });
    }
  }
  return all;
}

class Bench {
  constructor(
    readonly root: string,
    readonly scratch: string,
  ) {}

  async object(source: string, name: string, includeDirs: string[] = []): Promise<string> {
    const output = path.join(this.scratch, `${name}.o`);
    await compileBpf(source, output, includeDirs);
    return output;
  }

  /**
   * Compiles and loads a policy's program (or @given, a composition's) with
   * all rules enabled; returns its ingress pin and timings.
   */
  async generated(policy: ValidPolicy, strategy?: MatchStrategy, prefixLimit?: number, given?: CompiledPolicy) {
    const compiled = given ?? compilePolicies([policy], strategy, prefixLimit)[0];
    const source = path.join(this.scratch, `${policy.name}.bpf.c`);
    await writeFile(source, compiled!.source);
    const startCompile = performance.now();
    const object = await this.object(source, policy.name);
    const compileMs = performance.now() - startCompile;
    const pins = new PinLayout("ns0", this.root);
    const hash = await contentHash(compiled!);
    const ref = { policy: policy.name, version: hash.slice(0, 16) };
    const startLoad = performance.now();
    await loadVersion(pins, {
      ref,
      contentHash: hash,
      objectPath: object,
      hooks: compiled!.hooks,
      enabled: policy.rules.map(() => true),
      prefixes: compiled!.prefixes,
    });
    const loadMs = performance.now() - startLoad;
    const pin = pins.program(ref, "ingress");
    const info = await runJson<{ bytes_xlated: number }>("bpftool", ["-j", "prog", "show", "pinned", pin]);
    const addresses =
      compiled!.prefixes.length > 0
        ? `LPM trie, ${compiled!.prefixes.length} entries`
        : /^ \* Addresses: constant/m.test(compiled!.source)
          ? "constants"
          : "none";
    return {
      pin,
      pins,
      ref,
      compileMs,
      loadMs,
      sourceBytes: compiled!.source.length,
      instructions: info.bytes_xlated / 8,
      addresses,
    };
  }

  async reference(rules: BenchRule[]): Promise<string> {
    const object = await this.object("bench/bpf/reference.bpf.c", "reference", [path.join(TEMPLATE_DIR, "lib")]);
    const dir = path.join(this.root, "reference");
    await mkdir(dir, { recursive: true });
    await loadAndPin(object, dir);
    for (const rule of rules) {
      const key = [...portBytes(rule.originalPorts[0]!.first), rule.protocol === "tcp" ? "06" : "11", "00"];
      await updateMap(path.join(dir, "maps", "ports"), key, portBytes(rule.port));
    }
    return path.join(dir, "progs", "bench_reference");
  }

  async empty(): Promise<string> {
    const object = await this.object("bench/bpf/empty.bpf.c", "empty");
    const dir = path.join(this.root, "empty");
    await mkdir(dir, { recursive: true });
    await loadAndPin(object, dir);
    return path.join(dir, "progs", "bench_empty");
  }

  /** Average ns per run of @pin on @frame, as the kernel measures it (socket lookups look in @netns). */
  async nanoseconds(pin: string, frame: Buffer, repeat = REPEAT, netns: NetworkNamespace = {}): Promise<number> {
    return (await testRun(pin, frame, repeat, netns)).nanoseconds;
  }
}

function portBytes(port: number): string[] {
  return [port >> 8, port & 0xff].map((b) => b.toString(16).padStart(2, "0")); // network byte order
}

/** Mean without the extremes: the kernel reports whole ns, so a mean keeps the sub-ns signal a median would lose. */
function trimmedMean(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const kept = sorted.length > 4 ? sorted.slice(1, -1) : sorted;
  return kept.reduce((sum, v) => sum + v, 0) / kept.length;
}

async function sideBySide(bench: Bench) {
  const pinsByVariant: Record<Variant, string> = {
    empty: await bench.empty(),
    reference: await bench.reference(FLIP_RULES),
    generated: (await bench.generated(policyOf("bench_side_by_side", FLIP_RULES))).pin,
  };
  const variants = Object.keys(pinsByVariant) as Variant[];
  const samples = new Map<string, number[]>();
  for (let round = 0; round < ROUNDS; round++) {
    for (const packet of cases()) {
      // Rotate the order every round so no variant always runs first.
      for (let i = 0; i < variants.length; i++) {
        const variant = variants[(i + round) % variants.length]!;
        const key = `${variant}|${packet.name}`;
        samples.set(key, [...(samples.get(key) ?? []), await bench.nanoseconds(pinsByVariant[variant], packet.frame)]);
      }
    }
  }
  return cases().map((packet) => {
    const ns = Object.fromEntries(variants.map((v) => [v, trimmedMean(samples.get(`${v}|${packet.name}`)!)])) as Record<
      Variant,
      number
    >;
    return {
      packet: packet.name,
      hit: packet.hit,
      ns,
      generatedVsEmpty: ns.generated / ns.empty,
      generatedVsReference: ns.generated / ns.reference,
    };
  });
}

/**
 * n rules: the flip pair 8000 → 9000 and 9000 → 8000, so every repeat of
 * the same skb takes the whole hit path (match, enabled flag, port write,
 * checksum update, counters), then n-2 ordinary rules spread over the port
 * space. (A rule may no longer name its own port, so the single rule
 * 8000 → 8000 that once did this is gone: the smallest policy here has 2.)
 */
function scalingRules(count: number): BenchRule[] {
  const rules: BenchRule[] = [rewriteRule(8000, 9000), rewriteRule(9000, 8000)];
  for (let i = 0; rules.length < count; i++) rules.push(rewriteRule(10_000 + i, 30_000 + i));
  return rules;
}

const SCALING_HIT = buildPacket({ family: "ipv4", protocol: "tcp", sport: 40000, dport: 8000 });
const SCALING_MISS = buildPacket({ family: "ipv4", protocol: "tcp", sport: 40000, dport: 7 });

async function scaling(bench: Bench, emptyPin: string) {
  const [hit, miss] = [SCALING_HIT, SCALING_MISS];
  const rows = [];
  for (const count of SCALING_SIZES) {
    const loaded = await bench.generated(policyOf(`bench_rules_${count}`, scalingRules(count)));
    const hits: number[] = [],
      misses: number[] = [],
      floor: number[] = [];
    for (let round = 0; round < 9; round++) {
      hits.push(await bench.nanoseconds(loaded.pin, hit));
      misses.push(await bench.nanoseconds(loaded.pin, miss));
      floor.push(await bench.nanoseconds(emptyPin, miss));
    }
    const [hitNs, missNs, emptyNs] = [trimmedMean(hits), trimmedMean(misses), trimmedMean(floor)];
    rows.push({
      rules: count,
      strategy: matchStrategy(count),
      sourceBytes: loaded.sourceBytes,
      instructions: loaded.instructions,
      compileMs: loaded.compileMs,
      loadMs: loaded.loadMs,
      compileAndLoadMs: loaded.compileMs + loaded.loadMs,
      emptyNs,
      missNs,
      hitNs,
      missVsEmpty: missNs / emptyNs,
      hitVsEmpty: hitNs / emptyNs,
    });
  }
  return rows;
}

/**
 * The same policies built both ways, measured interleaved: where tables
 * (one load from .rodata) overtake the switch (a compare tree) tells where
 * SWITCH_LIMIT belongs. Hits take the flip pair's case, at the low end of
 * the port range; misses go to a port below every rule.
 */
async function crossover(bench: Bench) {
  const rows = [];
  for (const count of CROSSOVER_SIZES) {
    const built = {
      switch: await bench.generated(policyOf(`bench_switch_${count}`, scalingRules(count)), "switch"),
      table: await bench.generated(policyOf(`bench_table_${count}`, scalingRules(count)), "table"),
    };
    const samples = {
      switchHit: [] as number[],
      switchMiss: [] as number[],
      tableHit: [] as number[],
      tableMiss: [] as number[],
    };
    for (let round = 0; round < 9; round++) {
      const order: MatchStrategy[] = round % 2 === 0 ? ["switch", "table"] : ["table", "switch"];
      for (const strategy of order) {
        samples[`${strategy}Hit`].push(await bench.nanoseconds(built[strategy].pin, SCALING_HIT));
        samples[`${strategy}Miss`].push(await bench.nanoseconds(built[strategy].pin, SCALING_MISS));
      }
    }
    const ns = Object.fromEntries(Object.entries(samples).map(([key, values]) => [key, trimmedMean(values)])) as Record<
      keyof typeof samples,
      number
    >;
    rows.push({
      rules: count,
      ...ns,
      switchInstructions: built.switch.instructions,
      tableInstructions: built.table.instructions,
      switchCompileAndLoadMs: built.switch.compileMs + built.switch.loadMs,
      tableCompileAndLoadMs: built.table.compileMs + built.table.loadMs,
      tableVsSwitchHit: ns.tableHit / ns.switchHit,
      tableVsSwitchMiss: ns.tableMiss / ns.switchMiss,
    });
  }
  return rows;
}

const TC_ACT_UNSPEC = -1;
const TC_ACT_SHOT = 2;
const STEER_PROXY_PORT = 9000;

interface SteerCase {
  name: string;
  family: "ipv4" | "ipv6";
  frame: Buffer;
  /** Where the steer program's socket lookups look: nothing listens, or the proxy does. */
  netns: "empty" | "proxy";
}

function steerCases(): SteerCase[] {
  const frame = (family: "ipv4" | "ipv6", dport: number, tcpFlags?: TcpFlag[]) =>
    buildPacket({ family, protocol: "tcp", sport: 40000, dport, ...(tcpFlags && { tcpFlags }) });
  return (["ipv4", "ipv6"] as const).flatMap((family): SteerCase[] => [
    { name: `${family} data to a steer port`, family, frame: frame(family, 8000), netns: "empty" },
    { name: `${family} data to another port`, family, frame: frame(family, 12345), netns: "empty" },
    { name: `${family} SYN, nothing listening`, family, frame: frame(family, 8000, ["syn"]), netns: "empty" },
    { name: `${family} SYN, proxy listening`, family, frame: frame(family, 8000, ["syn"]), netns: "proxy" },
  ]);
}

/**
 * A steer program (8000 → 9000, fails closed) against the floor and
 * against the miss path of the rewrite program of the same rule. A non-SYN segment to a
 * steer port takes the match and the flag test and leaves; a miss leaves
 * after the compares. BPF_PROG_TEST_RUN cannot complete a SYN: its skb is
 * not at tc ingress, so bpf_sk_assign refuses even a listener it was
 * given, and the SYN ends in proxy-down (TC_ACT_SHOT, counted) either way.
 * Both socket lookups (the SYN's own tuple, then the listener) still run:
 * in a namespace where nothing listens both miss; where the proxy listens
 * (the lab's server namespace, an echo server on 9000) the second one
 * finds it and bpf_sk_assign is called, as on a real SYN.
 */
async function steerCosts(bench: Bench, emptyPin: string) {
  const rewrite = rewriteRule(8000, STEER_PROXY_PORT);
  const steerRule: BenchRule = { ...rewrite, strategy: "steer", onProxyDown: "drop" };
  // The same rule, loaded twice: records off (as by default), and on with a reader draining them.
  const withEvents = await bench.generated(policyOf("bench_steer_events", [steerRule]));
  await writeSwitches(withEvents.pins, withEvents.ref, true);
  const pins = {
    steer: (await bench.generated(policyOf("bench_steer", [steerRule]))).pin,
    rewrite: (await bench.generated(policyOf("bench_rewrite", [rewrite]))).pin,
    empty: emptyPin,
    steerEvents: withEvents.pin,
  };
  const reader = await drainRecords(withEvents.pins.map(withEvents.ref, FLOW_EVENTS.name));
  const lab = await Lab.create();
  try {
    await lab.startInServer(["node", "dist/lab/echo.js", "serve", "--tag", "proxy", String(STEER_PROXY_PORT)], /ready/);
    // Nothing listens in the lab's client namespace.
    const namespaces: Record<SteerCase["netns"], NetworkNamespace> = {
      empty: { name: lab.clientNs },
      proxy: { name: lab.serverNs },
    };
    const verdicts = new Map<string, number>();
    for (const packet of steerCases()) {
      verdicts.set(packet.name, (await testRun(pins.steer, packet.frame, 1, namespaces[packet.netns])).returnValue);
    }
    // The rewrite program is measured on its miss path only: a one-way rewrite would make every repeat after the first a miss anyway.
    const missFrames = new Map(
      steerCases()
        .filter((c) => c.name.endsWith("another port"))
        .map((c) => [c.family, c.frame]),
    );
    const measurements = (packet: SteerCase) => ({
      empty: () => bench.nanoseconds(pins.empty, packet.frame, REPEAT, namespaces[packet.netns]),
      steer: () => bench.nanoseconds(pins.steer, packet.frame, REPEAT, namespaces[packet.netns]),
      rewriteMiss: () =>
        bench.nanoseconds(pins.rewrite, missFrames.get(packet.family)!, REPEAT, namespaces[packet.netns]),
      steerEvents: () => bench.nanoseconds(pins.steerEvents, packet.frame, REPEAT, namespaces[packet.netns]),
    });
    const samples = new Map<string, number[]>();
    for (let round = 0; round < ROUNDS; round++) {
      for (const packet of steerCases()) {
        const runs = Object.entries(measurements(packet));
        for (let i = 0; i < runs.length; i++) {
          const [variant, measure] = runs[(i + round) % runs.length]!;
          const key = `${variant}|${packet.name}`;
          samples.set(key, [...(samples.get(key) ?? []), await measure()]);
        }
      }
    }
    return steerCases().map((packet) => {
      const ns = Object.fromEntries(
        Object.keys(measurements(packet)).map((v) => [v, trimmedMean(samples.get(`${v}|${packet.name}`)!)]),
      ) as Record<keyof ReturnType<typeof measurements>, number>;
      const verdict = verdicts.get(packet.name)!;
      return {
        packet: packet.name,
        steerVerdict: verdict === TC_ACT_UNSPEC ? "unspec" : verdict === TC_ACT_SHOT ? "shot" : String(verdict),
        ns,
        steerVsEmpty: ns.steer / ns.empty,
        steerVsRewriteMiss: ns.steer / ns.rewriteMiss,
        eventsVsSteer: ns.steerEvents / ns.steer,
      };
    });
  } finally {
    const drained = await reader.stop();
    eventsRead.records = drained;
    eventsRead.dropped = await droppedRecords(withEvents.pins, [withEvents.ref]);
    await lab.destroy();
  }
}

/** What the events-on variant's reader saw: records read, and those the full buffer dropped. */
const eventsRead = { records: 0, dropped: 0 };

/**
 * The flow reader on @pin, its output counted and thrown away in C (no
 * Node on the path), so records flow as they would with a consumer.
 */
async function drainRecords(pin: string): Promise<{ stop(): Promise<number> }> {
  const child = execa(await flowReader(), [pin], { reject: false, stdin: "ignore", stdout: "pipe" });
  let lines = 0;
  child.stdout!.on("data", (chunk: Buffer) => {
    for (const byte of chunk) if (byte === 10) lines++;
  });
  return {
    async stop() {
      child.kill("SIGTERM");
      await child;
      return Math.max(0, lines - 1); // the "ready" line
    },
  };
}

/*
 * Selectors. Their rules steer, and they are measured with data segments
 * (ACK): a selected one is matched (ports, then addresses) and handed on
 * untouched, so every repeat of the same skb takes the same path, the one
 * all the traffic of an established connection takes.
 */

const SELECTOR_PORT = 8000;

function selectorPolicy(name: string, interceptors: Interceptor[]): ValidPolicy {
  return {
    name,
    file: `${name}.ts`,
    interfaces: { include: null, exclude: [] },
    rules: interceptors.map((interceptor, index) => toRule(interceptor, index)),
  };
}

/** Prefix lengths the benchmark's lists cycle through, as real lists mix them (cloud ranges, pod and node networks). */
const LIST_PREFIX_LENGTHS: Record<Family, number[]> = {
  ipv4: [32, 31, 30, 29, 28],
  ipv6: [128, 120, 112, 104, 96, 80, 64],
};

/**
 * @count networks of @family in the benchmark's range (198.18.0.0/15,
 * fd00::/8), of mixed prefix lengths, each followed by a gap of its own
 * size so that no two merge; with, for the middle one, its first address
 * (a hit) and the first of the gap after it (a miss inside the list's
 * common network, past which constant compares must all run).
 */
function spacedNetworks(family: Family, count: number): { cidrs: string[]; hit: string; miss: string } {
  const bits = family === "ipv4" ? 32n : 128n;
  const base = family === "ipv4" ? (198n << 24n) | (18n << 16n) : 0xfdn << 120n;
  const cidrs: string[] = [];
  let next = 0n;
  let hit = "";
  let miss = "";
  for (let i = 0; i < count; i++) {
    const length = LIST_PREFIX_LENGTHS[family][i % LIST_PREFIX_LENGTHS[family].length]!;
    const size = 1n << (bits - BigInt(length));
    const start = ((next + size - 1n) / size) * size;
    cidrs.push(`${addressText(family, base + start)}/${length}`);
    if (i === Math.floor(count / 2))
      [hit, miss] = [addressText(family, base + start), addressText(family, base + start + size)];
    next = start + 2n * size;
  }
  return { cidrs, hit, miss };
}

function segment(family: Family, dport: number, source?: string): Buffer {
  return buildPacket({ family, protocol: "tcp", sport: 40000, dport, tcpFlags: ["ack"], ...(source && { source }) });
}

interface SelectorCase {
  name: string;
  interceptors: Interceptor[];
  hit: Buffer;
  miss: Buffer;
  prefixLimit?: number;
}

/** The `*`-with-exceptions rule, and source lists of 1, 100 and 10,000 CIDRs (spacedNetworks: the miss runs every compare). */
function selectorCases(): SelectorCase[] {
  const istio: Interceptor = { originalPorts: "*", exceptPorts: [22, 15020, 15021], port: 15006 };
  const cases: SelectorCase[] = [
    { name: "* except 22,15020-15021", interceptors: [istio], hit: segment("ipv4", 8080), miss: segment("ipv4", 22) },
  ];
  for (const count of [1, 100, 10_000]) {
    const list = spacedNetworks("ipv4", count);
    cases.push({
      name: `${count.toLocaleString("en")} source CIDR${count === 1 ? "" : "s"}`,
      interceptors: [{ originalPort: SELECTOR_PORT, port: 15001, sources: list.cidrs }],
      hit: segment("ipv4", SELECTOR_PORT, list.hit),
      miss: segment("ipv4", SELECTOR_PORT, list.miss),
    });
  }
  return cases;
}

async function selectorRows(bench: Bench, emptyPin: string) {
  const rows = [];
  for (const [index, selector] of selectorCases().entries()) {
    const loaded = await bench.generated(selectorPolicy(`bench_selector_${index}`, selector.interceptors));
    const hits: number[] = [],
      misses: number[] = [],
      floor: number[] = [];
    for (let round = 0; round < 9; round++) {
      hits.push(await bench.nanoseconds(loaded.pin, selector.hit));
      misses.push(await bench.nanoseconds(loaded.pin, selector.miss));
      floor.push(await bench.nanoseconds(emptyPin, selector.miss));
    }
    const [hitNs, missNs, emptyNs] = [trimmedMean(hits), trimmedMean(misses), trimmedMean(floor)];
    rows.push({
      selector: selector.name,
      structure: loaded.addresses,
      instructions: loaded.instructions,
      compileAndLoadMs: loaded.compileMs + loaded.loadMs,
      emptyNs,
      missNs,
      hitNs,
      missVsEmpty: missNs / emptyNs,
      hitVsEmpty: hitNs / emptyNs,
    });
  }
  return rows;
}

const PREFIX_CROSSOVER_SIZES = [1, 4, 16, 64, 128, 256, 1024];

/**
 * The same source lists built as constant compares and as an LPM trie,
 * measured interleaved, and built: where the trie overtakes the constants,
 * per packet or in what a build costs, tells where PREFIX_CONSTANT_LIMIT
 * belongs. The miss is the worst case for constants (spacedNetworks).
 */
async function prefixCrossover(bench: Bench) {
  const rows = [];
  for (const family of ["ipv4", "ipv6"] as const) {
    for (const count of PREFIX_CROSSOVER_SIZES) {
      const list = spacedNetworks(family, count);
      const policy = (name: string) =>
        selectorPolicy(name, [{ originalPort: SELECTOR_PORT, port: 15001, sources: list.cidrs }]);
      const built = {
        constants: await bench.generated(
          policy(`bench_constants_${family}_${count}`),
          undefined,
          Number.POSITIVE_INFINITY,
        ),
        trie: await bench.generated(policy(`bench_trie_${family}_${count}`), undefined, 0),
      };
      const [hit, miss] = [segment(family, SELECTOR_PORT, list.hit), segment(family, SELECTOR_PORT, list.miss)];
      const samples = {
        constantsHit: [] as number[],
        constantsMiss: [] as number[],
        trieHit: [] as number[],
        trieMiss: [] as number[],
      };
      for (let round = 0; round < 9; round++) {
        const order = round % 2 === 0 ? (["constants", "trie"] as const) : (["trie", "constants"] as const);
        for (const structure of order) {
          samples[`${structure}Hit`].push(await bench.nanoseconds(built[structure].pin, hit));
          samples[`${structure}Miss`].push(await bench.nanoseconds(built[structure].pin, miss));
        }
      }
      const ns = Object.fromEntries(
        Object.entries(samples).map(([key, values]) => [key, trimmedMean(values)]),
      ) as Record<keyof typeof samples, number>;
      rows.push({
        family,
        cidrs: count,
        ...ns,
        constantsInstructions: built.constants.instructions,
        trieInstructions: built.trie.instructions,
        constantsCompileAndLoadMs: built.constants.compileMs + built.constants.loadMs,
        trieCompileAndLoadMs: built.trie.compileMs + built.trie.loadMs,
        trieVsConstantsHit: ns.trieHit / ns.constantsHit,
        trieVsConstantsMiss: ns.trieMiss / ns.constantsMiss,
      });
    }
  }
  return rows;
}

const f = (value: number, digits = 1) => value.toFixed(digits);

const COMPOSED_POLICIES = 10;
const COMPOSED_RULES = 10;

/**
 * Ten policies of ten rules each, by name in composition order; the first
 * and the last hold a flip pair (so a hit repeats on one skb), the others
 * ordinary rules spread over the port space.
 */
function composedPolicies(): ValidPolicy[] {
  return Array.from({ length: COMPOSED_POLICIES }, (_, p) => {
    const rules: BenchRule[] = [];
    if (p === 0) rules.push(rewriteRule(8000, 9000), rewriteRule(9000, 8000));
    if (p === COMPOSED_POLICIES - 1) rules.push(rewriteRule(7000, 7100), rewriteRule(7100, 7000));
    for (let i = 0; rules.length < COMPOSED_RULES; i++)
      rules.push(rewriteRule(10_000 + p * 100 + i, 30_000 + p * 100 + i));
    return policyOf(`bench_part_${String(p).padStart(2, "0")}`, rules);
  });
}

const COMPOSED_CASES = [
  { name: "hit, first policy's rule (tcp 8000)", hit: true, frame: SCALING_HIT },
  {
    name: "hit, last policy's rule (tcp 7000)",
    hit: true,
    frame: buildPacket({ family: "ipv4", protocol: "tcp", sport: 40000, dport: 7000 }),
  },
  { name: "miss (tcp 7)", hit: false, frame: SCALING_MISS },
];

/**
 * Issue 20: ten policies of ten rules composed on one link, against one
 * policy holding the same hundred rules, per packet, side by side: each
 * round runs every (variant, packet) pair in a shuffled order, the ratio
 * is taken per round, and the median of the rounds' ratios is reported
 * with their spread (min–max).
 */
async function composition(bench: Bench) {
  const parts = composedPolicies();
  const composed = compileComposition(parts);
  const single = policyOf(
    "bench_one_policy",
    parts.flatMap((policy) => policy.rules),
  );
  const pins = {
    composed: (await bench.generated(composed.policy, undefined, undefined, composed)).pin,
    single: (await bench.generated(single)).pin,
  };
  const ratios = new Map<string, number[]>(COMPOSED_CASES.map((c) => [c.name, []]));
  const ns = new Map<string, number[]>();
  for (let round = 0; round < ROUNDS; round++) {
    const runs = shuffle(
      COMPOSED_CASES.flatMap((packet) => (["composed", "single"] as const).map((variant) => ({ packet, variant }))),
    );
    const measured = new Map<string, number>();
    for (const { packet, variant } of runs) {
      const value = await bench.nanoseconds(pins[variant], packet.frame);
      measured.set(`${variant}|${packet.name}`, value);
      ns.set(`${variant}|${packet.name}`, [...(ns.get(`${variant}|${packet.name}`) ?? []), value]);
    }
    for (const packet of COMPOSED_CASES)
      ratios.get(packet.name)!.push(measured.get(`composed|${packet.name}`)! / measured.get(`single|${packet.name}`)!);
  }
  return COMPOSED_CASES.map((packet) => {
    const perRound = ratios.get(packet.name)!;
    return {
      packet: packet.name,
      hit: packet.hit,
      composedNs: median(ns.get(`composed|${packet.name}`)!),
      singleNs: median(ns.get(`single|${packet.name}`)!),
      ratio: median(perRound),
      spread: spread(perRound),
    };
  });
}

async function printComposition(bench: Bench) {
  const rows = await composition(bench);
  console.log(
    `
${COMPOSED_POLICIES} policies × ${COMPOSED_RULES} rules composed on one link vs one policy of the same ${COMPOSED_POLICIES * COMPOSED_RULES} rules (median of ${ROUNDS} per-round ratios, shuffled order):`,
  );
  console.log(
    table(
      ["packet (ingress)", "composed ns", "one policy ns", "composed/one", "spread (min–max)"],
      rows.map((r) => [
        r.packet,
        f(r.composedNs),
        f(r.singleNs),
        f(r.ratio, 3),
        `${f(r.spread.min, 3)}–${f(r.spread.max, 3)}`,
      ]),
    ),
  );
  const worst = Math.max(...rows.map((r) => r.ratio));
  console.log(`composed/one, worst packet: ${f(worst, 3)} (target ≤ 1.02)`);
  return rows;
}

/**
 * Issue 24: the per-SYN cost of flow records, side by side. One steer rule
 * loaded twice, records off and on (a reader draining the ring buffer in
 * C); each round runs every (variant, packet) pair in a shuffled order, the
 * ratio on/off is taken per round, and the median of the rounds' ratios
 * is reported with its spread. A SYN writes one record (proxy-down here:
 * BPF_PROG_TEST_RUN cannot complete a steer, see steerCosts); a data
 * segment writes none, so its ratio is the noise floor. Most of the
 * records of a run of REPEAT SYNs find the buffer full: they take the
 * drop path (a failed reserve, a per-CPU counter), which the table counts.
 */
async function eventsCost(bench: Bench) {
  const rewrite = rewriteRule(8000, STEER_PROXY_PORT);
  const steerRule: BenchRule = { ...rewrite, strategy: "steer", onProxyDown: "drop" };
  const withEvents = await bench.generated(policyOf("bench_events_on", [steerRule]));
  await writeSwitches(withEvents.pins, withEvents.ref, true);
  const pins = { off: (await bench.generated(policyOf("bench_events_off", [steerRule]))).pin, on: withEvents.pin };
  const reader = await drainRecords(withEvents.pins.map(withEvents.ref, FLOW_EVENTS.name));
  const lab = await Lab.create();
  const cases = steerCases().filter((packet) => packet.name.includes("SYN") || packet.name.includes("steer port"));
  const ratios = new Map<string, number[]>(cases.map((packet) => [packet.name, []]));
  const ns = new Map<string, number[]>();
  try {
    await lab.startInServer(["node", "dist/lab/echo.js", "serve", "--tag", "proxy", String(STEER_PROXY_PORT)], /ready/);
    const namespaces: Record<SteerCase["netns"], NetworkNamespace> = {
      empty: { name: lab.clientNs },
      proxy: { name: lab.serverNs },
    };
    for (let round = 0; round < ROUNDS; round++) {
      const runs = shuffle(cases.flatMap((packet) => (["off", "on"] as const).map((variant) => ({ packet, variant }))));
      const measured = new Map<string, number>();
      for (const { packet, variant } of runs) {
        const value = await bench.nanoseconds(pins[variant], packet.frame, REPEAT, namespaces[packet.netns]);
        const key = `${variant}|${packet.name}`;
        measured.set(key, value);
        ns.set(key, [...(ns.get(key) ?? []), value]);
      }
      for (const packet of cases)
        ratios.get(packet.name)!.push(measured.get(`on|${packet.name}`)! / measured.get(`off|${packet.name}`)!);
    }
  } finally {
    eventsRead.records = await reader.stop();
    eventsRead.dropped = await droppedRecords(withEvents.pins, [withEvents.ref]);
    await lab.destroy();
  }
  return cases.map((packet) => {
    const perRound = ratios.get(packet.name)!;
    const off = median(ns.get(`off|${packet.name}`)!);
    const on = median(ns.get(`on|${packet.name}`)!);
    return {
      packet: packet.name,
      offNs: off,
      onNs: on,
      ratio: median(perRound),
      spread: { min: Math.min(...perRound), max: Math.max(...perRound) },
    };
  });
}

async function printEventsCost(bench: Bench) {
  const before = loadavg();
  const rows = await eventsCost(bench);
  const after = loadavg();
  console.log(
    `flow records on vs off, one steer rule (median of ${ROUNDS} per-round ratios, shuffled order, ${REPEAT} runs per measurement):`,
  );
  console.log(
    table(
      ["packet (ingress)", "records off ns", "records on ns", "on − off ns", "on/off", "spread (min–max)"],
      rows.map((r) => [
        r.packet,
        f(r.offNs),
        f(r.onNs),
        f(r.onNs - r.offNs),
        f(r.ratio, 3),
        `${f(r.spread.min, 3)}–${f(r.spread.max, 3)}`,
      ]),
    ),
  );
  console.log(
    `records read ${eventsRead.records}, dropped on a full buffer ${eventsRead.dropped}; load average ${before.map((n) => f(n, 2)).join(" ")} before, ${after.map((n) => f(n, 2)).join(" ")} after (a shared machine: compare ratios, not ns)`,
  );
  return rows;
}

async function main() {
  await ensureBpffs();
  const bench = new Bench(
    path.join(PIN_ROOT, `bench-${randomBytes(4).toString("hex")}`),
    await mkdtemp(path.join(tmpdir(), "intercept-bench-")),
  );
  try {
    const kernel = (await run("uname", ["-r"])).trim();
    console.log(
      `datapath benchmark: ${ROUNDS} interleaved rounds × ${REPEAT} runs per measurement, kernel ${kernel}\n`,
    );
    if (process.env.BENCH_ONLY === "events") {
      // `BENCH_ONLY=events npm run bench:datapath`: the flow records' per-SYN cost alone, results not written.
      await printEventsCost(bench);
      return;
    }
    if (process.env.BENCH_ONLY === "composition") {
      // `BENCH_ONLY=composition npm run bench:datapath`: the composition rows alone, results not written.
      await printComposition(bench);
      return;
    }
    const rows = await sideBySide(bench);
    console.log(
      table(
        ["packet (ingress)", "empty ns", "reference ns", "generated ns", "generated/empty", "generated/reference"],
        rows.map((r) => [
          r.packet,
          f(r.ns.empty),
          f(r.ns.reference),
          f(r.ns.generated),
          f(r.generatedVsEmpty, 3),
          f(r.generatedVsReference, 3),
        ]),
      ),
    );
    const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
    const summary = {
      missVsEmpty: mean(rows.filter((r) => !r.hit).map((r) => r.generatedVsEmpty)),
      hitVsEmpty: mean(rows.filter((r) => r.hit).map((r) => r.generatedVsEmpty)),
      hitVsReference: mean(rows.filter((r) => r.hit).map((r) => r.generatedVsReference)),
      missVsReference: mean(rows.filter((r) => !r.hit).map((r) => r.generatedVsReference)),
    };
    console.log(
      `\nmiss: generated/empty ${f(summary.missVsEmpty, 3)} (target ≤ 1.05)   generated/reference ${f(summary.missVsReference, 3)}`,
    );
    console.log(
      `hit:  generated/empty ${f(summary.hitVsEmpty, 3)} (target ≤ 1.15)   generated/reference ${f(summary.hitVsReference, 3)} (target ≤ 0.85)\n`,
    );

    const scaled = await scaling(bench, path.join(bench.root, "empty", "progs", "bench_empty"));
    console.log(
      table(
        [
          "rules",
          "strategy",
          "C bytes",
          "insns (ingress, xlated)",
          "compile ms",
          "load ms",
          "miss ns",
          "hit ns",
          "miss/empty",
          "hit/empty",
        ],
        scaled.map((r) => [
          r.rules,
          r.strategy,
          r.sourceBytes,
          r.instructions,
          f(r.compileMs, 0),
          f(r.loadMs, 0),
          f(r.missNs),
          f(r.hitNs),
          f(r.missVsEmpty, 3),
          f(r.hitVsEmpty, 3),
        ]),
      ),
    );
    const largest = scaled[scaled.length - 1]!;
    console.log(
      `\n${largest.rules} rules: hit/empty ${f(largest.hitVsEmpty, 3)} (target ≤ 1.3), compile+load ${f(largest.compileAndLoadMs / 1000, 2)} s (target ≤ 5 s)`,
    );

    const crossed = await crossover(bench);
    console.log(`\nswitch vs tables, same policies (the compiler switches to tables above ${SWITCH_LIMIT} rules):`);
    console.log(
      table(
        [
          "rules",
          "switch insns",
          "table insns",
          "switch hit ns",
          "table hit ns",
          "switch miss ns",
          "table miss ns",
          "table/switch hit",
          "table/switch miss",
          "switch build ms",
          "table build ms",
        ],
        crossed.map((r) => [
          r.rules,
          r.switchInstructions,
          r.tableInstructions,
          f(r.switchHit),
          f(r.tableHit),
          f(r.switchMiss),
          f(r.tableMiss),
          f(r.tableVsSwitchHit, 3),
          f(r.tableVsSwitchMiss, 3),
          f(r.switchCompileAndLoadMs, 0),
          f(r.tableCompileAndLoadMs, 0),
        ]),
      ),
    );

    const steered = await steerCosts(bench, path.join(bench.root, "empty", "progs", "bench_empty"));
    console.log(
      "\nsteer program (8000 → 9000, onProxyDown drop) against the floor and the rewrite program of the same rule:",
    );
    console.log(
      table(
        [
          "packet (ingress)",
          "steer verdict",
          "empty ns",
          "steer ns",
          "rewrite miss ns",
          "steer/empty",
          "steer/rewrite miss",
          "records on/off",
        ],
        steered.map((r) => [
          r.packet,
          r.steerVerdict,
          f(r.ns.empty),
          f(r.ns.steer),
          f(r.ns.rewriteMiss),
          f(r.steerVsEmpty, 3),
          f(r.steerVsRewriteMiss, 3),
          f(r.eventsVsSteer, 3),
        ]),
      ),
    );
    const nonSyn = steered.filter((r) => r.packet.includes("data to a steer port"));
    const steerSummary = {
      nonSynVsEmpty: mean(nonSyn.map((r) => r.steerVsEmpty)),
      nonSynVsRewriteMiss: mean(nonSyn.map((r) => r.steerVsRewriteMiss)),
    };
    console.log(
      `\nnon-SYN to a steer port: steer/empty ${f(steerSummary.nonSynVsEmpty, 3)} (target ≤ 1.10)   steer/rewrite miss path ${f(steerSummary.nonSynVsRewriteMiss, 3)}`,
    );
    console.log(
      "SYN rows: BPF_PROG_TEST_RUN cannot complete a steer (its skb is not at tc ingress, so bpf_sk_assign refuses), so every SYN ends in",
    );
    console.log(
      "proxy-down (dropped, counted), after both socket lookups (the SYN's own tuple, then the listener on 9000): with nothing listening both",
    );
    console.log(
      "miss; with the proxy listening the listener is found and bpf_sk_assign is called. A real SYN costs about the latter.",
    );
    const syns = steered.filter((r) => r.packet.includes("SYN"));
    const eventsSummary = {
      synEventsVsSteer: mean(syns.map((r) => r.eventsVsSteer)),
      synEventsNs: mean(syns.map((r) => r.ns.steerEvents - r.ns.steer)),
      nonSynEventsVsSteer: mean(nonSyn.map((r) => r.eventsVsSteer)),
      ...eventsRead,
    };
    console.log(
      `records on (the reader draining them): SYN ${f(eventsSummary.synEventsVsSteer, 3)}× records off (+${f(eventsSummary.synEventsNs)} ns a SYN); non-SYN ${f(eventsSummary.nonSynEventsVsSteer, 3)}×; ${eventsRead.records} records read, ${eventsRead.dropped} dropped on a full buffer`,
    );

    const selectors = await selectorRows(bench, path.join(bench.root, "empty", "progs", "bench_empty"));
    console.log("\nselectors (steer rules; data segments, matched and handed on):");
    console.log(
      table(
        [
          "selector",
          "addresses",
          "insns (ingress, xlated)",
          "compile+load ms",
          "miss ns",
          "hit ns",
          "miss/empty",
          "hit/empty",
        ],
        selectors.map((r) => [
          r.selector,
          r.structure,
          r.instructions,
          f(r.compileAndLoadMs, 0),
          f(r.missNs),
          f(r.hitNs),
          f(r.missVsEmpty, 3),
          f(r.hitVsEmpty, 3),
        ]),
      ),
    );

    const composed = await printComposition(bench);

    const prefixes = await prefixCrossover(bench);
    console.log(
      `\nconstant compares vs LPM trie, same source lists (the compiler takes the trie above ${PREFIX_CONSTANT_LIMIT} CIDRs a list):`,
    );
    console.log(
      table(
        [
          "family",
          "CIDRs",
          "constants insns",
          "trie insns",
          "constants hit ns",
          "trie hit ns",
          "constants miss ns",
          "trie miss ns",
          "trie/constants hit",
          "trie/constants miss",
          "constants build ms",
          "trie build ms",
        ],
        prefixes.map((r) => [
          r.family,
          r.cidrs,
          r.constantsInstructions,
          r.trieInstructions,
          f(r.constantsHit),
          f(r.trieHit),
          f(r.constantsMiss),
          f(r.trieMiss),
          f(r.trieVsConstantsHit, 3),
          f(r.trieVsConstantsMiss, 3),
          f(r.constantsCompileAndLoadMs, 0),
          f(r.trieCompileAndLoadMs, 0),
        ]),
      ),
    );

    await mkdir("bench/results", { recursive: true });
    const result = {
      measuredAt: new Date().toISOString(),
      kernel,
      rounds: ROUNDS,
      repeat: REPEAT,
      sideBySide: rows,
      summary,
      scaling: scaled,
      crossover: crossed,
      steer: { rows: steered, summary: steerSummary, events: eventsSummary },
      selectors,
      prefixCrossover: prefixes,
      composition: composed,
    };
    await writeFile("bench/results/datapath.json", `${JSON.stringify(result, null, 2)}\n`);
    console.log("\nwritten: bench/results/datapath.json");
  } finally {
    await rm(bench.root, { recursive: true, force: true });
    await rm(bench.scratch, { recursive: true, force: true });
  }
}

await main();
