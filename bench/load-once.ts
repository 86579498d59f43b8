/**
 * `npm run bench:load-once` (as root): the measurements behind issue
 * 22's "load once, attach everywhere", taken before building it, side by
 * side in one run:
 * 1. The kernel work a new namespace costs: loading its own copy of a
 *    program (`bpftool prog loadall`, the verifier each time, as the agent
 *    does today) against pinning the node's already-loaded program and maps
 *    by id into the namespace's folder (`bpftool batch` of `prog pin id` and
 *    `map pin id`: same layout, same kernel objects), per namespace: wall
 *    time and the CPU of the bpftool processes.
 * 2. Node's fork floor: what starting one process costs the agent's own CPU,
 *    at this process's size and grown to about the agent's (~120 MiB RSS).
 * 3. Counting per namespace in a shared program, on the hit path
 *    (bench/load-once/counters.bpf.c, BPF_PROG_TEST_RUN): today's per-CPU
 *    array against a per-CPU hash keyed by the packet's netns cookie, and a
 *    cookie → namespace slot lookup before a per-CPU array; and a check
 *    that the cookie the program sees in a namespace of ours is the one
 *    user space reads there (SO_NETNS_COOKIE), i.e. that counters keyed so
 *    stay attributable to their namespace.
 * Pins go to a unique folder below /sys/fs/bpf, the namespace gets a unique
 * name; both are removed, on failure too. Writes bench/results/load-once.json.
 *   BENCH_LOAD_ONCE_NAMESPACES (20): namespaces in part 1.
 */
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { execa } from "execa";
import { NamespaceSet } from "../lab/namespaces.js";
import { compileBpf } from "../src/toolchain/clang.js";
import { table } from "./table.js";
import { median } from "./stats.js";

const NAMESPACES = Number(process.env.BENCH_LOAD_ONCE_NAMESPACES ?? 20);
const SPAWNS = 50;
const REPEAT = 1_000_000;
const ROUNDS = 5;
const COUNTING = ["nothing", "cookie_only", "private_count", "slot_count", "cookie_count"] as const;
/** The namespace slot slot_count finds for the host's cookie (any value below NAMESPACE_SLOTS). */
const HOST_SLOT = 3;
/** SOL_SOCKET's SO_NETNS_COOKIE (Linux 5.14), which Node cannot ask for itself. */
const COOKIE_SCRIPT =
  "import socket, struct; s = socket.socket(); print(struct.unpack('<Q', s.getsockopt(socket.SOL_SOCKET, 71, 8))[0])";

const round = (value: number, digits = 1) => Number(value.toFixed(digits));

/** CPU of this process's waited-for children so far, in ms (cutime + cstime of /proc/self/stat, 10 ms ticks). */
async function childrenCpuMs(): Promise<number> {
  const stat = await readFile("/proc/self/stat", "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[13]) + Number(fields[14])) * 10;
}

async function rssMiB(): Promise<number> {
  const status = await readFile("/proc/self/status", "utf8");
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)![1]) / 1024;
}

async function idOf(kind: "prog" | "map", pin: string): Promise<number> {
  const { stdout } = await execa("bpftool", ["-j", kind, "show", "pinned", pin]);
  return (JSON.parse(stdout) as { id: number }).id;
}

/** Runs @step for each of @count namespaces: wall time per namespace (median, max) and children's CPU per namespace. */
async function perNamespace(count: number, step: (index: number) => Promise<unknown>) {
  const walls: number[] = [];
  const cpuBefore = await childrenCpuMs();
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    await step(i);
    walls.push(performance.now() - start);
  }
  const cpu = (await childrenCpuMs()) - cpuBefore;
  return { wallMs: { p50: round(median(walls)), max: round(Math.max(...walls)) }, cpuMs: round(cpu / count) };
}

/** Part 1: a namespace's own load against pins of the node's objects. */
async function kernelWork(pins: string, object: string) {
  const node = path.join(pins, "node");
  await mkdir(node);
  await execa("bpftool", ["prog", "loadall", object, `${node}/progs`, "type", "tc", "pinmaps", `${node}/maps`]);
  const programs = (await execa("ls", [`${node}/progs`])).stdout.split("\n").filter(Boolean);
  const maps = (await execa("ls", [`${node}/maps`])).stdout.split("\n").filter(Boolean);
  const programIds = await Promise.all(programs.map((name) => idOf("prog", `${node}/progs/${name}`)));
  const mapIds = await Promise.all(maps.map((name) => idOf("map", `${node}/maps/${name}`)));

  const load = await perNamespace(NAMESPACES, async (i) => {
    await mkdir(`${pins}/load${i}`);
    await execa("bpftool", [
      "prog",
      "loadall",
      object,
      `${pins}/load${i}/progs`,
      "type",
      "tc",
      "pinmaps",
      `${pins}/load${i}/maps`,
    ]);
  });
  const pin = await perNamespace(NAMESPACES, async (i) => {
    const folder = `${pins}/pin${i}`;
    await mkdir(`${folder}/progs`, { recursive: true });
    await mkdir(`${folder}/maps`);
    const commands = [
      ...programs.map((name, p) => `prog pin id ${programIds[p]} ${folder}/progs/${name}`),
      ...maps.map((name, m) => `map pin id ${mapIds[m]} ${folder}/maps/${name}`),
    ];
    await execa("bpftool", ["batch", "file", "-"], { input: `${commands.join("\n")}\n` });
  });
  const shared = await idOf("prog", `${pins}/pin${NAMESPACES - 1}/progs/${programs[0]}`);
  if (shared !== programIds[0])
    throw new Error(`pinned by id, yet program ${shared} is not the node's ${programIds[0]}`);
  const own = await idOf("prog", `${pins}/load${NAMESPACES - 1}/progs/${programs[0]}`);
  if (own === programIds[0]) throw new Error("a namespace's own load has the node's program id");
  return { programs: programs.length, maps: maps.length, load, pinById: pin };
}

/** Part 2: one process started by Node, its parent's CPU and the wall time, at this process's size. */
async function forkCost() {
  await execa("true");
  const rss = await rssMiB();
  const cpu = process.cpuUsage();
  const start = performance.now();
  for (let i = 0; i < SPAWNS; i++) await execa("true");
  const wall = (performance.now() - start) / SPAWNS;
  const used = process.cpuUsage(cpu);
  return {
    rssMiB: round(rss),
    parentCpuMs: round((used.user + used.system) / 1000 / SPAWNS, 2),
    wallMs: round(wall, 2),
  };
}

/** Grows this process to about @target MiB of RSS, with memory that stays reachable. */
async function growTo(target: number, keep: unknown[]): Promise<void> {
  while ((await rssMiB()) < target) keep.push(Array.from({ length: 100_000 }, (_, i) => ({ i, s: `x${i}` })));
}

/** A 54-byte TCP SYN over IPv4 to port 8000, for the test runs. */
function synFrame(): Buffer {
  const frame = Buffer.alloc(54);
  frame.writeUInt16BE(0x0800, 12);
  Buffer.from([0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]).copy(frame, 14);
  frame.writeUInt16BE(40000, 34);
  frame.writeUInt16BE(8000, 36);
  frame[46] = 0x50;
  frame[47] = 0x02;
  return frame;
}

async function testRun(pin: string, frame: string, repeat: number, netns?: string): Promise<number> {
  const args = ["bpftool", "prog", "run", "pinned", pin, "data_in", frame, "repeat", String(repeat)];
  const { stdout, stderr } = netns
    ? await execa("nsenter", [`--net=/var/run/netns/${netns}`, ...args])
    : await execa(args[0]!, args.slice(1));
  const match = /duration \(average\): (\d+)ns/.exec(`${stdout}\n${stderr}`);
  if (!match) throw new Error(`no duration in: ${stdout} ${stderr}`);
  return Number(match[1]);
}

async function cookieIn(netns?: string): Promise<bigint> {
  const args = ["/usr/bin/python3", "-c", COOKIE_SCRIPT];
  const { stdout } = netns
    ? await execa("nsenter", [`--net=/var/run/netns/${netns}`, ...args])
    : await execa(args[0]!, args.slice(1));
  return BigInt(stdout.trim());
}

const bytesOf = (value: bigint, size: number) => {
  const buffer = Buffer.alloc(size);
  if (size === 8) buffer.writeBigUInt64LE(value);
  else buffer.writeUInt32LE(Number(value));
  return [...buffer].map(String);
};

/** Part 3: the hit path's price of a per-namespace counter, and the cookie's attribution. */
async function counting(pins: string, scratch: string, namespaces: NamespaceSet) {
  const object = path.join(scratch, "counters.bpf.o");
  await compileBpf("bench/load-once/counters.bpf.c", object);
  await mkdir(`${pins}/c`);
  await execa("bpftool", ["prog", "loadall", object, `${pins}/c/progs`, "type", "tc", "pinmaps", `${pins}/c/maps`]);
  const host = await cookieIn();
  await execa("bpftool", [
    ...["map", "update", "pinned", `${pins}/c/maps/netns_slots`],
    ...["key", ...bytesOf(host, 8), "value", ...bytesOf(BigInt(HOST_SLOT), 4)],
  ]);
  const frame = path.join(scratch, "syn.bin");
  await writeFile(frame, synFrame());
  const samples = new Map<string, number[]>(COUNTING.map((name) => [name, []]));
  for (let round = 0; round < ROUNDS; round++)
    for (const name of COUNTING) samples.get(name)!.push(await testRun(`${pins}/c/progs/${name}`, frame, REPEAT));
  const ns = Object.fromEntries(COUNTING.map((name) => [name, median(samples.get(name)!)]));

  const pod = namespaces.name(0);
  await namespaces.create(pod);
  const cookie = await cookieIn(pod);
  const PACKETS = 5;
  await testRun(`${pins}/c/progs/cookie_count`, frame, PACKETS, pod);
  const { stdout } = await execa("bpftool", ["-j", "map", "dump", "pinned", `${pins}/c/maps/netns_counters`]);
  const entries = JSON.parse(stdout) as {
    formatted: { key: { cookie: number }; values: { value: { packets: number } }[] };
  }[];
  const counted = entries
    .filter((entry) => BigInt(entry.formatted.key.cookie) === cookie)
    .reduce((sum, entry) => sum + entry.formatted.values.reduce((s, v) => s + v.value.packets, 0), 0);
  return {
    medianNs: ns,
    spreadNs: Object.fromEntries(
      COUNTING.map((name) => [name, [Math.min(...samples.get(name)!), Math.max(...samples.get(name)!)]]),
    ),
    attribution: { hostCookie: String(host), namespaceCookie: String(cookie), packetsRun: PACKETS, counted },
  };
}

const load = (await readFile("/proc/loadavg", "utf8")).split(" ").slice(0, 3).join(" ");
const scratch = await mkdtemp(path.join(tmpdir(), "intercept-load-once-"));
const pins = `/sys/fs/bpf/intercept-bench-${randomBytes(4).toString("hex")}`;
const namespaces = NamespaceSet.unique("lo");
try {
  await mkdir(pins);
  const object = path.join(scratch, "demo.bpf.o");
  await compileBpf("generated/demo.bpf.c", object);
  const kernel = await kernelWork(pins, object);
  const small = await forkCost();
  const keep: unknown[] = [];
  await growTo(120, keep);
  const large = await forkCost();
  keep.length = 0;
  const counters = await counting(pins, scratch, namespaces);
  const loadAfter = (await readFile("/proc/loadavg", "utf8")).split(" ").slice(0, 3).join(" ");
  const results = {
    measuredAt: new Date().toISOString(),
    loadAverage: { before: load, after: loadAfter },
    namespaces: NAMESPACES,
    kernelWork: kernel,
    fork: { small, large },
    counting: counters,
  };
  const n = counters.medianNs;
  process.stdout.write(
    `${table(
      ["per namespace (demo policy)", "wall p50 / max", "bpftool CPU"],
      [
        [
          "its own load (verifier)",
          `${kernel.load.wallMs.p50} / ${kernel.load.wallMs.max} ms`,
          `${kernel.load.cpuMs} ms`,
        ],
        [
          `pin the node's ${kernel.programs} program(s) and ${kernel.maps} maps by id`,
          `${kernel.pinById.wallMs.p50} / ${kernel.pinById.wallMs.max} ms`,
          `${kernel.pinById.cpuMs} ms`,
        ],
      ],
    )}\n\n${table(
      ["Node starting one process", "agent CPU", "wall"],
      [
        [`at ${small.rssMiB} MiB RSS`, `${small.parentCpuMs} ms`, `${small.wallMs} ms`],
        [`at ${large.rssMiB} MiB RSS`, `${large.parentCpuMs} ms`, `${large.wallMs} ms`],
      ],
    )}\n\n${table(
      ["counting one packet", "median ns (test run)", "over today's"],
      COUNTING.map((name) => [
        name,
        `${n[name]} (${counters.spreadNs[name]!.join("–")})`,
        name === "nothing" || name === "cookie_only" ? "" : `${n[name]! - n.private_count!} ns`,
      ]),
    )}\n\nnetns cookie: the program counted ${counters.attribution.counted} of ${counters.attribution.packetsRun} packets under namespace cookie ${counters.attribution.namespaceCookie} (host: ${counters.attribution.hostCookie}); load average ${load} → ${loadAfter}\n`,
  );
  await mkdir("bench/results", { recursive: true });
  await writeFile("bench/results/load-once.json", `${JSON.stringify(results, null, 2)}\n`);
} finally {
  await rm(pins, { recursive: true, force: true });
  await namespaces.remove(); // no intercept pins were made for it: ours are all under `pins`
  await rm(scratch, { recursive: true, force: true });
}
