/**
 * The Host port's contract, checked on both hosts where it can be without
 * root: the namespace lock (KernelHost's flock(2) in a folder of the
 * test's own, and the fake's in memory) refuses, waits, times out, stops
 * waiting when aborted and keeps a record alike, in the same words, so
 * the agent's tests over the fake say what the kernel would. KernelHost's
 * pins, lock records and namespace directory in folders of the test's own.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, open, readdir, rm, rmdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { InterceptError } from "../../src/errors.js";
import { execa } from "execa";
import { CgroupWatch } from "../../src/host/cgroup-watch.js";
import { KernelHost } from "../../src/host/kernel.js";
import { LinkMonitor } from "../../src/host/link-monitor.js";
import type { Host, LockHolder } from "../../src/host/types.js";
import type { DatapathOperation } from "../../src/datapath/types.js";
import { FakeDatapath } from "../support/fake-datapath.js";
import { FakeHost } from "../support/fake-host.js";

const scratch = await mkdtemp(path.join(tmpdir(), "intercept-host-unit-"));
after(() => rm(scratch, { recursive: true, force: true }));

async function kernelHost(): Promise<KernelHost> {
  const root = await mkdtemp(path.join(scratch, "machine-"));
  return new KernelHost({
    pinRoot: path.join(root, "bpf"),
    lockDir: path.join(root, "locks"),
    netnsDir: path.join(root, "netns"),
  });
}

const hosts: [string, () => Promise<Host>][] = [
  ["kernel", kernelHost],
  ["fake", async () => new FakeHost()],
];

for (const [label, make] of hosts) {
  describe(`the namespace lock (${label} host)`, () => {
    const holder = `pid ${process.pid} (intercept apply)`;

    test("a second taker with no wait is refused at once, told who holds it", async () => {
      const host = await make();
      const first = await host.lockNamespace("ns10", { holder: "intercept apply", timeoutMs: 0 });
      const told: LockHolder[] = [];
      await assert.rejects(
        host.lockNamespace("ns10", { holder: "intercept agent", timeoutMs: 0, onWait: (by) => told.push(by) }),
        (error) =>
          error instanceof InterceptError &&
          error.code === "lock-held" &&
          error.message === `the network namespace is locked by ${holder}`,
      );
      assert.deepEqual(told, [{ pid: process.pid, holder: "intercept apply", agent: false, description: holder }]);
      await first.release();
      await (await host.lockNamespace("ns10", { holder: "intercept agent", timeoutMs: 0 })).release();
    });

    test("a second taker waits, told once who holds it, and has it once it is let go", async () => {
      const host = await make();
      const first = await host.lockNamespace("ns11", { holder: "intercept apply", timeoutMs: 0 });
      let told!: (by: LockHolder) => void;
      const waiting = new Promise<LockHolder>((resolve) => (told = resolve));
      const second = host.lockNamespace("ns11", { holder: "intercept destroy", timeoutMs: 10_000, onWait: told });
      assert.equal((await waiting).description, holder); // a barrier: it waits
      await first.release();
      const held = await second;
      await assert.rejects(host.lockNamespace("ns11", { holder: "x", timeoutMs: 0 }), {
        message: `the network namespace is locked by pid ${process.pid} (intercept destroy)`,
      });
      await held.release();
    });

    test("a wait that runs out says for whom it waited", async () => {
      const host = await make();
      const first = await host.lockNamespace("ns12", { holder: "intercept apply", timeoutMs: 0 });
      await assert.rejects(host.lockNamespace("ns12", { holder: "intercept destroy", timeoutMs: 50 }), {
        code: "lock-timeout",
        message: `gave up after 0.1 s waiting for the lock held by ${holder} (--lock-timeout)`,
      });
      await first.release();
    });

    test("a wait ends at once when its signal is aborted, with the signal's reason", async () => {
      const host = await make();
      const first = await host.lockNamespace("ns13", { holder: "intercept apply", timeoutMs: 0 });
      const stop = new AbortController();
      const reason = new Error("the agent is stopping");
      const second = host.lockNamespace("ns13", {
        holder: "intercept agent",
        timeoutMs: 60_000,
        signal: stop.signal,
        onWait: () => stop.abort(reason),
      });
      await assert.rejects(second, (error) => error === reason);
      await first.release();
    });

    test("a release that keeps its record leaves the last holder readable; one that does not, nothing", async () => {
      const host = await make();
      await (await host.lockNamespace("ns14", { holder: "intercept agent --netns-match", timeoutMs: 0 })).release({
        keepRecord: true,
      });
      assert.equal(await host.lastLockHolder("ns14"), "intercept agent --netns-match");
      await (await host.lockNamespace("ns14", { holder: "intercept apply", timeoutMs: 0 })).release();
      assert.equal(await host.lastLockHolder("ns14"), undefined);
    });
  });
}

describe("KernelHost, in folders of the test's own", () => {
  test("pins: only namespace keys are ours; removing one removes the root once it is empty", async () => {
    const root = await mkdtemp(path.join(scratch, "pins-"));
    const pinRoot = path.join(root, "bpf");
    const host = new KernelHost({ pinRoot, lockDir: path.join(root, "locks"), netnsDir: path.join(root, "netns") });
    assert.deepEqual(await host.pinnedNamespaces(), [], "no pin root yet: nothing pinned");
    for (const key of ["ns5", "ns6", "not-a-key"]) await mkdir(path.join(pinRoot, key, "demo"), { recursive: true });
    assert.deepEqual(await host.pinnedNamespaces(), ["ns5", "ns6"]);
    await host.removeNamespacePins("ns5");
    assert.deepEqual((await readdir(pinRoot)).sort(), ["not-a-key", "ns6"]);
    await rm(path.join(pinRoot, "not-a-key"), { recursive: true });
    await host.removeNamespacePins("ns6");
    assert.deepEqual(await readdir(root), [], "the pin root went with its last namespace");
  });

  test("the namespace directory: a plain file is not a namespace yet, a missing one is gone", async () => {
    const root = await mkdtemp(path.join(scratch, "netns-"));
    const netnsDir = path.join(root, "netns");
    const host = new KernelHost({ pinRoot: path.join(root, "bpf"), lockDir: path.join(root, "locks"), netnsDir });
    assert.deepEqual([...(await host.listNamespaces())], [], "no directory yet: no namespaces");
    await mkdir(netnsDir);
    await writeFile(path.join(netnsDir, "cni-1"), "");
    assert.deepEqual(await host.identifyNamespace("cni-1"), { kind: "pending" });
    assert.deepEqual(await host.identifyNamespace("cni-2"), { kind: "gone" });
    assert.deepEqual([...(await host.listNamespaces())], []);
  });

  test("nothing to follow in the cgroup tree: a watch that holds nothing", async () => {
    const host = await kernelHost();
    const watch = await host.watchCgroups([], { changed: () => assert.fail("no event"), failed: assert.fail });
    watch.stop();
  });
});

describe("the cgroup watch (inotify, here on a folder of the test's own)", () => {
  /** A watch of @paths under a fresh root, and a barrier per "made" event. */
  async function watching(paths: string[]) {
    const root = await mkdtemp(path.join(scratch, "cgroup2-"));
    let made = 0;
    let wake: (() => void) | undefined;
    const watch = new CgroupWatch(root, paths, {
      changed: () => {
        made++;
        wake?.();
      },
      failed: (error) => assert.fail(String(error)),
    });
    /** Resolves once @count "made" events were told in all (a bound turns a lost event into a failure). */
    const told = async (count: number) => {
      const deadline = Date.now() + 10_000;
      while (made < count) {
        assert.ok(Date.now() < deadline, `event ${count} was not told`);
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, 500).unref();
        });
      }
    };
    return { root, watch, told, made: () => made };
  }

  test("a cgroup made below parents that did not exist yet, made again, and made again with its parent", async () => {
    const { root, watch, told } = await watching(["app.slice/app"]);
    try {
      await mkdir(path.join(root, "app.slice"));
      await mkdir(path.join(root, "app.slice", "app"));
      await told(1);
      await rmdir(path.join(root, "app.slice", "app"));
      await mkdir(path.join(root, "app.slice", "app"));
      await told(2);
      await rm(path.join(root, "app.slice"), { recursive: true });
      await mkdir(path.join(root, "app.slice", "app"), { recursive: true });
      await told(3);
    } finally {
      watch.stop();
    }
  });

  test("other cgroups beside a followed one are not told", async () => {
    const { root, watch, told, made } = await watching(["a", "b"]);
    try {
      await mkdir(path.join(root, "other"));
      await mkdir(path.join(root, "b"));
      await told(1); // a barrier: "b" was told; "other", made before it, was not
      assert.equal(made(), 1);
    } finally {
      watch.stop();
    }
  });
});

describe("the fake datapath's performAll, as KernelDatapath's", () => {
  function run() {
    const datapath = new FakeDatapath({ name: "batch" });
    const link = datapath.addLink("eth0");
    const ref = { policy: "demo", version: "v1" };
    const operations: DatapathOperation[] = [
      {
        op: "loadProgram",
        load: { ref, contentHash: "h", objectPath: "o", hooks: ["ingress"], enabled: [true], prefixes: [] },
      },
      { op: "addQdisc", link },
      { op: "attachFilters", link, program: ref, hooks: ["ingress"] },
      { op: "setRule", program: ref, index: 0, enabled: false },
    ];
    return { datapath, operations };
  }

  test("the loads together, then the qdiscs and filters together, then one at a time", async () => {
    const { datapath, operations } = run();
    assert.deepEqual(await datapath.performAll(operations), { done: 4 });
    assert.deepEqual(datapath.batches, [["loadProgram"], ["addQdisc", "attachFilters"]]);
  });

  test("a failure inside a batch stops there: those before it done, none after", async () => {
    const { datapath, operations } = run();
    datapath.failAt(3); // the load is two mutations; the third is the qdisc
    const result = await datapath.performAll(operations);
    assert.equal(result.done, 1);
    assert.match(String(result.error), /injected failure at operation 3 \(addQdisc\)/);
    assert.equal(datapath.snapshot().links[0]!.clsact, false);
  });

  test("the interrupt is looked at between the batches, not inside one", async () => {
    const { datapath, operations } = run();
    const stop = new AbortController();
    datapath.beforeMutation = () => stop.abort(new Error("stopping")); // during the load
    const result = await datapath.performAll(operations, stop.signal);
    assert.equal(result.done, 1, "the load batch finished; the tc batch never started");
    assert.equal(String(result.error), "Error: stopping");
    assert.equal(datapath.snapshot().versions[0]!.contentHash, "h");
  });
});

describe("the link monitor's routing, with a stand-in for setpriv on PATH and for the numbering", () => {
  /**
   * A `setpriv` that subscribes a netlink socket to the link group (as `ip
   * monitor` does, so the monitor sees it listening) and then prints what
   * the test writes into a FIFO, until the test closes it; a numbering (the
   * kernel's is rtnetlink in the agent's process) that answers every call
   * with the ids the test set, counting calls.
   */
  async function standIns() {
    const dir = await mkdtemp(path.join(scratch, "monitor-"));
    const fifo = path.join(dir, "events");
    await execa("mkfifo", [fifo]);
    await writeFile(
      path.join(dir, "setpriv"),
      `#!/usr/bin/python3
import socket, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
s.bind((0, 1))
with open(${JSON.stringify(fifo)}) as events:
    for line in events:
        sys.stdout.write(line)
        sys.stdout.flush()
`,
      { mode: 0o755 },
    );
    let [ids, calls] = [[] as { name: string; id: number }[], 0];
    const numbering = async () => {
      calls++;
      return new Map(ids.map(({ name, id }) => [name, id]));
    };
    const setIds = async (list: { name: string; id: number }[]) => void (ids = list);
    const ipCalls = async () => calls;
    return { dir, fifo, setIds, ipCalls, numbering };
  }

  /** Events that count, with a barrier per kind. */
  function follower() {
    const counts = { changed: 0, failed: 0, restarted: 0 };
    const waiters: (() => void)[] = [];
    const bump = (kind: keyof typeof counts) => () => {
      counts[kind]++;
      for (const wake of waiters.splice(0)) wake();
    };
    const reached = async (kind: keyof typeof counts, count: number) => {
      const deadline = Date.now() + 10_000; // a bound that turns a lost event into a failure
      while (counts[kind] < count) {
        assert.ok(Date.now() < deadline, `${kind} ${count} was not told`);
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 500).unref();
        });
      }
    };
    return {
      events: { changed: bump("changed"), failed: bump("failed"), restarted: bump("restarted") },
      counts,
      reached,
    };
  }

  test("events go to the namespace their id names (any of its names), the own namespace's to it; an unknown id is learnt; a restart tells everyone", async () => {
    const { dir, fifo, setIds, ipCalls, numbering } = await standIns();
    const path0 = process.env.PATH;
    process.env.PATH = `${dir}:${path0}`;
    const monitor = new LinkMonitor(numbering);
    try {
      await setIds([
        { name: "cni-a", id: 3 },
        { name: "cni-a2", id: 3 },
        { name: "cni-b", id: 4 },
      ]);
      const [a, b, own] = [follower(), follower(), follower()];
      await monitor.watch({ name: "cni-a2" }, a.events); // served by its second name
      await monitor.watch({ name: "cni-b" }, b.events);
      await monitor.watch({}, own.events);
      assert.equal(await ipCalls(), 2, "one numbering per namespace that joined on its own");
      let writer = await open(fifo, "w");
      await writer.write("[nsid 3]5: v0@if4: <BROADCAST> mtu 1500\n");
      await a.reached("changed", 1);
      await writer.write("[nsid current]7: eth9: <BROADCAST> mtu 1500\n");
      await own.reached("changed", 1);
      await setIds([
        { name: "cni-a2", id: 3 },
        { name: "cni-b", id: 9 }, // given another id meanwhile
      ]);
      await writer.write("[nsid 9]2: w0@if3: <BROADCAST> mtu 1500\n");
      await b.reached("changed", 1);
      const learnt = await ipCalls();
      assert.equal(learnt, 3, "an unknown id: the ids are learnt again");
      await writer.write("[nsid 3]5: v0@if4: <BROADCAST>\n");
      await a.reached("changed", 2);
      assert.deepEqual([b.counts.changed, own.counts.changed], [1, 1], "nobody else was told");

      await writer.close(); // the monitor dies: restarted, everyone told
      for (const f of [a, b, own]) {
        await f.reached("failed", 1);
        await f.reached("restarted", 1);
      }
      writer = await open(fifo, "w");
      await writer.write("[nsid 3]5: v0@if4: <BROADCAST>\n");
      await a.reached("changed", 4); // one with the restart, one for the line
      await writer.close();
    } finally {
      monitor.close();
      process.env.PATH = path0;
    }
  });
});
