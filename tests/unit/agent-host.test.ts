/**
 * The whole agent (runAgent, as `intercept agent` runs it) on the fake
 * Host, without root: the fleet following namespaces and links as they come
 * and go, a datapath that fails mid-apply, a failure injected at every step
 * the agent takes from the host, lock contention (an agent refused naming
 * the holder, an apply waited for), the lifecycle (SIGTERM, SIGHUP, --keep,
 * an uncaught error, the served namespace disappearing), the link watcher
 * restarting, and cgroups followed. Every wait is on a log line or the
 * agent's exit, never on a guessed time.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { type AgentOptions, runAgent } from "../../src/agent/index.js";
import { createLogger } from "../../src/agent/log.js";
import { InterceptError } from "../../src/errors.js";
import { AGENT_LOCK_HOLDER, FLEET_LOCK_HOLDER } from "../../src/model/lock-holder.js";
import { FakeHost, type HostStep } from "../support/fake-host.js";

const scratch = await mkdtemp(path.join(tmpdir(), "intercept-agent-host-"));
after(() => rm(scratch, { recursive: true, force: true }));

const DEMO = "interceptors:\n  - { originalPort: 8000, port: 9000 }\n";
const OUTBOUND = `outbound:
  cgroups: ["app.slice/app"]
  exempt: { uids: [1337] }
  rules: [{ originalPort: 5432, port: 15001 }]
`;

async function policies(text = DEMO): Promise<string> {
  const dir = await mkdtemp(path.join(scratch, "policies-"));
  await writeFile(path.join(dir, "demo.yaml"), text);
  return dir;
}

type Line = Record<string, unknown> & { event: string; message: string; namespace?: string };

/** An agent running on @host, whose log lines a test waits for. */
class Run {
  readonly lines: Line[] = [];
  readonly exit: Promise<number>;
  private waiters: (() => void)[] = [];
  private exited = false;

  constructor(
    readonly host: FakeHost,
    paths: string[],
    options: Partial<AgentOptions>,
  ) {
    const log = createLogger("json", (line) => {
      this.lines.push(JSON.parse(line));
      for (const wake of this.waiters.splice(0)) wake();
    });
    this.exit = runAgent(
      paths,
      {
        namespaces: { kind: "matching", globs: ["cni-*"] },
        keep: false,
        logFormat: "json",
        lockTimeoutMs: 5_000,
        resyncMs: 0,
        ...options,
      },
      host,
      log,
    ).finally(() => {
      this.exited = true;
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  /** A barrier: the first line from @from on that @matches, once it is logged; fails if the agent exits first. */
  async seen(matches: (line: Line) => boolean, from = 0): Promise<Line> {
    const deadline = Date.now() + 15_000; // not a timing guess: a bound that turns a hang into a failure saying why
    for (;;) {
      const found = this.lines.slice(from).find(matches);
      if (found) return found;
      if (this.exited) throw new Error(`the agent exited first; it said:\n${this.said()}`);
      if (Date.now() > deadline) throw new Error(`no such line within 15 s; the agent said:\n${this.said()}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 1_000).unref();
      });
    }
  }

  /** The next `policies applied` in @namespace after line @from. */
  applied(namespace: string | undefined, from = 0): Promise<Line> {
    return this.seen(
      (l) => l.event === "applied" && /policies applied/.test(l.message) && l.namespace === namespace,
      from,
    );
  }

  said(): string {
    return this.lines.map((l) => `${l.event} [${l.namespace ?? ""}] ${l.message}`).join("\n");
  }

  /** Stops it (if it still runs) with SIGTERM and returns its exit code. */
  async stop(): Promise<number> {
    if (this.host.listening) this.host.signal("SIGTERM");
    return this.exit;
  }
}

/** The agent's filters on @link of @name's namespace, by hook. */
function filters(host: FakeHost, name: string, link: string) {
  return (
    host
      .datapath(name)
      .snapshot()
      .links.find((l) => l.name === link)?.filters ?? {}
  );
}

describe("the fleet on the fake host", { timeout: 30_000 }, () => {
  test("namespaces that appear are served, new links get filters, namespaces that go are forgotten", async () => {
    const host = new FakeHost();
    host.addNamespace("cni-a");
    const run = new Run(host, [await policies()], {});
    try {
      await run.applied("cni-a");
      assert.ok(filters(host, "cni-a", "eth0").ingress, "eth0 is attached");
      assert.equal(host.lockHolder(host.datapath("cni-a").namespaceKey)?.holder, FLEET_LOCK_HOLDER);
      assert.ok(host.datapath("cni-a").batches.length > 0, "the apply went through performAll, as on the kernel");

      let from = run.lines.length;
      host.addNamespace("other");
      host.addNamespace("cni-b", ["eth0", "eth1"]);
      await run.applied("cni-b", from);
      assert.ok(filters(host, "cni-b", "eth1").ingress);

      from = run.lines.length;
      host.addLink("cni-a", "eth1");
      await run.seen((l) => l.event === "link seen" && l.link === "eth1" && l.namespace === "cni-a", from);
      await run.applied("cni-a", from);
      assert.ok(filters(host, "cni-a", "eth1").ingress, "the new link is attached");

      const gone = host.datapath("cni-b");
      from = run.lines.length;
      host.removeNamespace("cni-b");
      await run.seen((l) => l.event === "namespace gone" && l.namespace === "cni-b", from);
      assert.equal(gone.pinned, false, "its pins are removed");
      assert.equal(host.lockHolder(gone.namespaceKey), undefined, "its lock is let go");

      const a = host.datapath("cni-a");
      assert.equal(await run.stop(), 0);
      assert.deepEqual(a.snapshot().versions, [], "SIGTERM removed the datapath");
      assert.equal(a.pinned, false);
      assert.equal(host.lockHolder(a.namespaceKey), undefined);
      assert.deepEqual(host.openWatches, { links: 0, namespaces: 0, cgroups: 0 }, "nothing is followed any more");
      assert.equal(host.closed, 1, "the host's shared watcher is stopped");
      assert.equal(host.listening, false, "the signal handlers are let go");
      assert.ok(!run.lines.some((l) => l.namespace === "other"), "a namespace that does not match is not served");
      assert.deepEqual(
        run.lines.filter((l) => l.event === "error"),
        [],
      );
    } finally {
      await run.stop();
    }
  });

  test("a datapath that fails mid-apply is rolled back to exactly what it was, and tried again", async () => {
    const host = new FakeHost();
    const datapath = host.addNamespace("cni-a", ["eth0", "eth1"]);
    const before = datapath.snapshot();
    datapath.failAt(3); // the first qdisc of the tc batch, after the version was loaded
    const run = new Run(host, [await policies()], {});
    try {
      await run.seen((l) => l.event === "rolled back" && l.namespace === "cni-a");
      const failed = await run.seen((l) => l.event === "error" && /trying again|injected failure/.test(l.message));
      assert.match(failed.message, /injected failure at operation 3/);
      const rolledBack = datapath.history.at(-1)!.after;
      assert.deepEqual(rolledBack.links, before.links, "every link as it was");
      assert.deepEqual(rolledBack.versions, before.versions, "no version left");
      await run.applied("cni-a"); // the retry, 1 s later
      assert.ok(filters(host, "cni-a", "eth1").ingress);
    } finally {
      assert.equal(await run.stop(), 0);
    }
  });

  test("a namespace deleted in the middle of its apply is forgotten without an error line", async () => {
    const host = new FakeHost();
    const datapath = host.addNamespace("cni-a", ["eth0", "eth1"]);
    datapath.beforeMutation = (operation) => {
      if (operation.op !== "attachFilters") return;
      datapath.beforeMutation = undefined;
      host.removeNamespace("cni-a");
      throw new Error("nsenter: cannot open /var/run/netns/cni-a: No such file or directory");
    };
    const run = new Run(host, [await policies()], {});
    try {
      await run.seen((l) => l.event === "namespace gone" && l.namespace === "cni-a");
      assert.equal(datapath.pinned, false);
      assert.deepEqual(
        run.lines.filter((l) => l.event === "error"),
        [],
      );
    } finally {
      assert.equal(await run.stop(), 0);
    }
  });

  for (const step of ["openDatapath", "lockNamespace", "watchLinks"] as const satisfies HostStep[]) {
    test(`${step} failing for a namespace: said, tried again, then served; nothing held meanwhile`, async () => {
      const host = new FakeHost();
      host.addNamespace("cni-a");
      host.failNext(step, new InterceptError("command-failed", `${step} broke`));
      const run = new Run(host, [await policies()], {});
      try {
        const said = await run.seen((l) => l.event === "error" && l.namespace === "cni-a");
        assert.match(said.message, new RegExp(`${step} broke; trying again in 1 s`));
        assert.equal(host.lockHolder(host.datapath("cni-a").namespaceKey), undefined, "no lock kept by a failed start");
        assert.equal(host.openWatches.links, 0, "no link watch kept by a failed start");
        await run.applied("cni-a");
      } finally {
        assert.equal(await run.stop(), 0);
      }
    });
  }

  for (const step of [
    "requireKernelAccess",
    "listNamespaces",
    "pinnedNamespaces",
    "watchNamespaces",
  ] as const satisfies HostStep[]) {
    test(`${step} failing at start: the agent fails to start, touching no namespace`, async () => {
      const host = new FakeHost();
      const datapath = host.addNamespace("cni-a");
      host.failNext(step, new InterceptError("command-failed", `${step} broke`));
      const run = new Run(host, [await policies()], {});
      await assert.rejects(run.exit, new RegExp(`${step} broke`));
      assert.equal(datapath.mutationCount, 0);
      assert.equal(host.lockHolder(datapath.namespaceKey), undefined);
      assert.equal(host.listening, false, "the signal handlers are let go");
      assert.deepEqual(host.openWatches, { links: 0, namespaces: 0, cgroups: 0 });
    });
  }

  test("without privileges the agent says which and touches nothing", async () => {
    const host = new FakeHost();
    host.privileged = false;
    const datapath = host.addNamespace("cni-a");
    const run = new Run(host, [await policies()], {});
    await assert.rejects(run.exit, /needs root, or CAP_NET_ADMIN and CAP_SYS_ADMIN/);
    assert.equal(datapath.mutationCount, 0);
    assert.ok(!host.calls.includes("openDatapath"));
  });

  test("orphaned pins are collected at start", async () => {
    const host = new FakeHost();
    host.leavePins("ns9001", FLEET_LOCK_HOLDER);
    const run = new Run(host, [await policies()], {});
    try {
      await run.seen((l) => l.event === "namespace gone" && /ns9001/.test(l.message));
      assert.deepEqual(await host.pinnedNamespaces(), []);
    } finally {
      assert.equal(await run.stop(), 0);
    }
  });
});

describe("lock contention on the fake host", { timeout: 30_000 }, () => {
  test("another agent holding a namespace: an agent for it is refused at once, naming it", async () => {
    const host = new FakeHost();
    const datapath = host.addNamespace("cni-a");
    const release = await host.holdLock(datapath.namespaceKey, AGENT_LOCK_HOLDER, 777);
    try {
      const run = new Run(host, [await policies()], { namespaces: { kind: "one", netns: { name: "cni-a" } } });
      await assert.rejects(run.exit, /another agent \(pid 777\) already manages network namespace "cni-a"/);
      assert.equal(datapath.mutationCount, 0);
      assert.ok(!run.lines.some((l) => l.event === "agent started"), "a refused agent never says it started");
    } finally {
      release();
    }
  });

  test("an apply holding it: the agent waits, saying for whom, and serves once it is let go", async () => {
    const host = new FakeHost();
    const datapath = host.addNamespace("cni-a");
    const release = await host.holdLock(datapath.namespaceKey, "intercept apply", 4321);
    const run = new Run(host, [await policies()], { namespaces: { kind: "one", netns: { name: "cni-a" } } });
    try {
      const waiting = await run.seen((l) => l.event === "waiting");
      assert.match(waiting.message, /held by pid 4321 \(intercept apply\)/);
      assert.equal(datapath.mutationCount, 0, "nothing done while it waits");
      release();
      await run.applied("cni-a");
      assert.equal(host.lockHolder(datapath.namespaceKey)?.holder, AGENT_LOCK_HOLDER);
    } finally {
      release();
      assert.equal(await run.stop(), 0);
    }
  });

  test("a wait that runs out fails the start, naming the holder", async () => {
    const host = new FakeHost();
    const datapath = host.addNamespace("cni-a");
    const release = await host.holdLock(datapath.namespaceKey, "intercept destroy", 99);
    try {
      const run = new Run(host, [await policies()], {
        namespaces: { kind: "one", netns: { name: "cni-a" } },
        lockTimeoutMs: 20,
      });
      await assert.rejects(
        run.exit,
        /gave up after 0 s waiting for the lock held by pid 99 \(intercept destroy\) \(--lock-timeout\)/,
      );
      assert.equal(datapath.mutationCount, 0);
    } finally {
      release();
    }
  });

  test("SIGTERM while waiting for the lock: exit 0 at once, nothing held or removed", async () => {
    const host = new FakeHost();
    const datapath = host.addNamespace("cni-a");
    const release = await host.holdLock(datapath.namespaceKey, "intercept apply");
    try {
      const run = new Run(host, [await policies()], { namespaces: { kind: "one", netns: { name: "cni-a" } } });
      await run.seen((l) => l.event === "waiting");
      assert.equal(await run.stop(), 0);
      assert.equal(host.lockHolder(datapath.namespaceKey)?.holder, "intercept apply", "the other holder keeps it");
      assert.equal(datapath.mutationCount, 0);
    } finally {
      release();
    }
  });
});

describe("the agent's lifecycle on the fake host", { timeout: 60_000 }, () => {
  const one = { namespaces: { kind: "one", netns: { name: "cni-x" } } } as const;

  test("SIGHUP reads the policies again; SIGTERM removes the datapath and exits 0", async () => {
    const host = new FakeHost();
    const datapath = host.addNamespace("cni-x");
    const run = new Run(host, [await policies()], one);
    await run.seen((l) => l.event === "agent started");
    host.signal("SIGHUP");
    await run.seen((l) => l.event === "reload");
    assert.equal(await run.stop(), 0);
    assert.deepEqual(datapath.snapshot().versions, []);
    const stopped = await run.seen((l) => l.event === "agent stopped");
    assert.equal(stopped.message, "datapath removed");
  });

  test("--keep leaves the datapath and the lock's record for the next agent", async () => {
    const host = new FakeHost();
    const datapath = host.addNamespace("cni-x");
    const run = new Run(host, [await policies()], { ...one, keep: true });
    await run.seen((l) => l.event === "agent started");
    const versions = datapath.snapshot().versions;
    assert.equal(await run.stop(), 0);
    assert.deepEqual(datapath.snapshot().versions, versions);
    assert.equal(host.lockHolder(datapath.namespaceKey), undefined, "the lock is let go");
    assert.equal(await host.lastLockHolder(datapath.namespaceKey), AGENT_LOCK_HOLDER, "its record stays");
    assert.equal((await run.seen((l) => l.event === "agent stopped")).message, "datapath left in place (--keep)");
  });

  test("an error nobody caught: the datapath is removed, exit 1, the error said", async () => {
    const host = new FakeHost();
    const datapath = host.addNamespace("cni-x");
    const run = new Run(host, [await policies()], one);
    await run.applied("cni-x");
    host.uncaught(new Error("a bug"));
    assert.equal(await run.exit, 1);
    assert.deepEqual(datapath.snapshot().versions, []);
    assert.ok(
      run.lines.some((l) => l.event === "error" && l.message === "fatal: a bug"),
      run.said(),
    );
  });

  test("the served namespace disappearing is fatal: exit 1, its pins removed", async () => {
    const host = new FakeHost();
    const datapath = host.addNamespace("cni-x");
    const run = new Run(host, [await policies()], one);
    await run.applied("cni-x");
    host.removeNamespace("cni-x");
    assert.equal(await run.exit, 1);
    assert.equal(datapath.pinned, false);
    assert.ok(
      run.lines.some((l) => l.event === "error" && /cni-x" no longer exists/.test(l.message)),
      run.said(),
    );
  });

  test("a link watcher that dies is restarted, said, and its namespace looked at again", async () => {
    const host = new FakeHost();
    const datapath = host.addNamespace("cni-x");
    const run = new Run(host, [await policies()], one);
    try {
      await run.applied("cni-x");
      datapath.addLink("eth1"); // while nobody listened
      const from = run.lines.length;
      host.breakLinkWatcher("cni-x");
      await run.seen(
        (l) => l.event === "error" && /link watcher exited \(1\); restarting it in 100 ms/.test(l.message),
      );
      await run.seen((l) => l.event === "link watcher" && /restarted/.test(l.message), from);
      await run.applied("cni-x", from);
      assert.ok(filters(host, "cni-x", "eth1").ingress);
    } finally {
      assert.equal(await run.stop(), 0);
    }
  });

  test("SIGTERM during the start: the start is cut short, what it made removed, exit 0", async () => {
    const host = new FakeHost();
    const datapath = host.addNamespace("cni-x");
    const run = new Run(host, [await policies()], one);
    await run.applied("cni-x"); // the first apply is done; "agent started" is not said yet
    host.signal("SIGTERM");
    assert.equal(await run.exit, 0);
    assert.deepEqual(datapath.snapshot().versions, []);
    assert.equal(host.lockHolder(datapath.namespaceKey), undefined);
  });

  test("the agent's own namespace: served without a name, its link events followed", async () => {
    const host = new FakeHost();
    host.own.addLink("eth0");
    const run = new Run(host, [await policies()], { namespaces: { kind: "one", netns: {} } });
    try {
      await run.applied(undefined);
      const from = run.lines.length;
      host.addLink(undefined, "eth1");
      await run.applied(undefined, from);
      assert.ok(host.own.snapshot().links.find((l) => l.name === "eth1")?.filters.ingress);
    } finally {
      assert.equal(await run.stop(), 0);
    }
  });
});

describe("cgroups followed on the fake host", { timeout: 30_000 }, () => {
  test("a captured cgroup removed and made again gets its programs back on its event", async () => {
    const host = new FakeHost();
    const datapath = host.addNamespace("cni-x", []);
    datapath.addCgroup("app.slice/app");
    const run = new Run(host, [await policies(OUTBOUND)], { namespaces: { kind: "one", netns: { name: "cni-x" } } });
    try {
      await run.applied("cni-x");
      const attached = () => datapath.snapshot().cgroups.find((c) => c.path === "app.slice/app")?.attached ?? [];
      assert.equal(attached().length, 4, "all four programs on the captured cgroup");
      assert.equal(host.openWatches.cgroups, 1);
      datapath.removeCgroup("app.slice/app");
      const again = datapath.addCgroup("app.slice/app");
      const from = run.lines.length;
      host.cgroupChanged("app.slice/app");
      await run.applied("cni-x", from);
      assert.equal(attached().length, 4, "back on the cgroup made again");
      assert.equal(datapath.snapshot().cgroups.find((c) => c.path === "app.slice/app")?.id, again.id);
    } finally {
      assert.equal(await run.stop(), 0);
    }
    assert.equal(host.openWatches.cgroups, 0);
  });

  test("a cgroup watch that cannot start is said, and the agent serves on", async () => {
    const host = new FakeHost();
    const datapath = host.addNamespace("cni-x", []);
    datapath.addCgroup("app.slice/app");
    host.failNext("watchCgroups", new Error("inotify broke"));
    const run = new Run(host, [await policies(OUTBOUND)], { namespaces: { kind: "one", netns: { name: "cni-x" } } });
    try {
      await run.seen((l) => l.event === "error" && /cannot follow the cgroups: inotify broke/.test(l.message));
      await run.applied("cni-x");
    } finally {
      assert.equal(await run.stop(), 0);
    }
  });
});
