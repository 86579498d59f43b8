/**
 * `node dist/bench/link-watchers.js`: the two ways of following the links
 * of many namespaces, side by side in one run, in namespaces of its own:
 *   per namespace  one `nsenter --net=… ip -o monitor link` each (what the agent did);
 *   all-nsid       one `ip -o monitor link all-nsid` in the agent's namespace, after
 *                  `ip netns set NAME auto` gives each namespace an id (what it does now).
 * For each: the time to be listening in every namespace, the processes and
 * their memory (RSS, and PSS: shared pages divided among their sharers),
 * the latency from `ip link add` in a namespace to the watcher's line, and
 * the watchers' CPU over those events. Prints a table.
 *   BENCH_WATCHER_NAMESPACES (50,110): how many namespaces, one round per count.
 */
import { readFile } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { execa, type ResultPromise } from "execa";
import { NamespaceSet } from "../lab/namespaces.js";
import { table } from "./table.js";

const COUNTS = (process.env.BENCH_WATCHER_NAMESPACES ?? "50,110").split(",").map(Number);
/** Links made, one at a time, in namespaces taken in turn, for the latency. */
const SAMPLES = 40;

interface Watchers {
  children: ResultPromise[];
  /** Resolves when the next line naming @link arrives. */
  next(link: string): Promise<number>;
}

function follow(children: ResultPromise[]): Watchers {
  const waiting = new Map<string, (at: number) => void>();
  for (const child of children) {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const at = performance.now();
      for (const [link, resolve] of waiting)
        if (line.includes(` ${link}@`) || line.includes(`: ${link}@`)) {
          waiting.delete(link);
          resolve(at);
        }
    });
  }
  return {
    children,
    next: (link) => new Promise((resolve) => waiting.set(link, resolve)),
  };
}

/** Whether process @pid holds a netlink socket subscribed to the link group. */
async function subscribed(pid: number): Promise<boolean> {
  try {
    const rows = (await readFile(`/proc/${pid}/net/netlink`, "utf8")).split("\n").slice(1);
    const fds = await execa("ls", ["-l", `/proc/${pid}/fd`], { reject: false });
    const sockets = new Set([...String(fds.stdout).matchAll(/socket:\[(\d+)\]/g)].map((m) => m[1]));
    return rows.some((row) => {
      const f = row.trim().split(/\s+/);
      return f[1] === "0" && (Number.parseInt(f[3] ?? "0", 16) & 1) !== 0 && sockets.has(f[9]);
    });
  } catch {
    return false; // not there yet
  }
}

async function listening(children: ResultPromise[]): Promise<void> {
  for (const child of children) while (!(await subscribed(child.pid!))) await new Promise((r) => setTimeout(r, 2));
}

async function memory(pids: number[]): Promise<{ rss: number; pss: number }> {
  let [rss, pss] = [0, 0];
  for (const pid of pids) {
    rss += Number(/^VmRSS:\s+(\d+)/m.exec(await readFile(`/proc/${pid}/status`, "utf8"))![1]) / 1024;
    pss += Number(/^Pss:\s+(\d+)/m.exec(await readFile(`/proc/${pid}/smaps_rollup`, "utf8"))![1]) / 1024;
  }
  return { rss, pss };
}

async function cpuSeconds(pids: number[]): Promise<number> {
  let total = 0;
  for (const pid of pids) {
    const fields = (await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1]!.split(" ").map(Number);
    total += (fields[11]! + fields[12]!) / 100;
  }
  return total;
}

async function measure(
  label: string,
  names: string[],
  start: () => Promise<ResultPromise[]>,
): Promise<Record<string, string>> {
  const began = performance.now();
  const children = await start();
  await listening(children);
  const ready = performance.now() - began;
  const watchers = follow(children);
  const pids = children.map((child) => child.pid!);
  const { rss, pss } = await memory(pids);
  const cpuBefore = await cpuSeconds(pids);
  const latencies: number[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    const name = names[(i * 7) % names.length]!;
    const link = `${label.slice(0, 3)}${i}`;
    const seen = watchers.next(link);
    const at = performance.now();
    await execa("ip", ["-n", name, "link", "add", link, "type", "veth", "peer", "name", `${link}p`]);
    latencies.push((await seen) - at);
  }
  const cpu = (await cpuSeconds(pids)) - cpuBefore;
  for (const child of children) child.kill();
  await Promise.allSettled(children);
  latencies.sort((a, b) => a - b);
  return {
    watcher: label,
    namespaces: String(names.length),
    "listening in all": `${ready.toFixed(0)} ms`,
    processes: String(children.length),
    memory: `${rss.toFixed(1)} MiB RSS, ${pss.toFixed(1)} MiB PSS`,
    "link added → event": `p50 ${latencies[SAMPLES >> 1]!.toFixed(1)} ms, max ${latencies.at(-1)!.toFixed(1)} ms`,
    [`watcher CPU, ${SAMPLES} links`]: `${(cpu * 1000).toFixed(0)} ms`,
  };
}

const rows: Record<string, string>[] = [];
for (const count of COUNTS) {
  const namespaces = NamespaceSet.unique("bw");
  const names = Array.from({ length: count }, (_, i) => namespaces.name(i));
  try {
    await execa("ip", ["-batch", "-"], { input: names.map((name) => `netns add ${name}\n`).join("") });
    for (const name of names) namespaces.made.add(name);
    rows.push(
      await measure("per namespace", names, async () =>
        names.map((name) =>
          execa("nsenter", [`--net=/var/run/netns/${name}`, "ip", "-o", "monitor", "link"], {
            buffer: false,
            reject: false,
          }),
        ),
      ),
    );
    rows.push(
      await measure("all-nsid", names, async () => {
        await execa("ip", ["-force", "-batch", "-"], {
          input: names.map((name) => `netns set ${name} auto\n`).join(""),
          reject: false,
        });
        return [
          execa("setpriv", ["--pdeathsig", "KILL", "--", "ip", "-o", "monitor", "link", "all-nsid"], {
            buffer: false,
            reject: false,
          }),
        ];
      }),
    );
  } finally {
    await namespaces.remove();
  }
}
const columns = Object.keys(rows[0]!);
process.stdout.write(
  `${table(
    columns,
    rows.map((row) => columns.map((column) => row[column]!)),
  )}\n`,
);
