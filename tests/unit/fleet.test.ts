/**
 * The parts of the many-namespace agent that run without a kernel: globs
 * and a policy's `namespaces`, the namespace directory followed through
 * rescans (files that become namespaces without an event included), a
 * NamespaceAgent whose namespace vanishes in the middle of an apply (no
 * error line, its pins forgotten), concurrent clang builds of one program
 * (one clang run), the agent's command line, /healthz and the namespace
 * label of the metrics.
 */
import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { createLogger, namespaceLogger, type LogEvent } from "../../src/agent/log.js";
import { AgentMetrics, type Readiness } from "../../src/agent/metrics.js";
import { NamespaceAgent } from "../../src/agent/namespace-agent.js";
import { collectOrphans } from "../../src/agent/orphans.js";
import { FLEET_LOCK_HOLDER } from "../../src/model/lock-holder.js";
import { NamespaceDirectory } from "../../src/host/netns-directory.js";
import type { NamespaceFile } from "../../src/host/types.js";
import { buildPolicy, type ProgramBuilder } from "../../src/toolchain/index.js";
import { commandOptions, parseAgentArguments } from "../../src/cli.js";
import { compilePolicies } from "../../src/compile/index.js";
import type { LinkRef } from "../../src/datapath/types.js";
import type { Hook } from "../../src/model/hooks.js";
import type { VersionRef } from "../../src/model/version.js";
import { UsageError } from "../../src/errors.js";
import { globMatch, globsOverlap } from "../../src/glob.js";
import { makePlan } from "../../src/reconcile/index.js";
import { inspect } from "../../src/reconcile/inspect.js";
import { loadPolicies } from "../../src/load/index.js";
import { validatePolicies } from "../../src/validate/index.js";
import { appliesIn } from "../../src/validate/namespaces.js";
import { desired, desiredPolicy } from "../support/desired.js";
import { testPolicy } from "../support/bpf.js";
import { FakeDatapath } from "../support/fake-datapath.js";
import { FakeHost, OWN_KEY } from "../support/fake-host.js";

const scratch = await mkdtemp(path.join(tmpdir(), "intercept-fleet-unit-"));
after(() => rm(scratch, { recursive: true, force: true }));

const builder: ProgramBuilder = { identify: async () => "", object: async (_compiled, hash) => `${hash}.bpf.o` };
const demo = desiredPolicy("demo", [{ originalPort: 8000, port: 9000 }]);

/** A logger that keeps its lines, as JSON records. */
function recorder() {
  const lines: { event: LogEvent; message: string; namespace?: string }[] = [];
  const log = createLogger("json", (line) => lines.push(JSON.parse(line)));
  return { lines, log };
}

async function policiesFrom(files: Record<string, string>) {
  const dir = await mkdtemp(path.join(scratch, "policies-"));
  for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, name), text);
  const loaded = await loadPolicies([dir]);
  return validatePolicies(loaded.policies);
}

const until = async (condition: () => boolean, what: string) => {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    assert.ok(Date.now() < deadline, what);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
};

describe("globs", () => {
  test("* and ? match names; everything else is literal", () => {
    assert.ok(globMatch("cni-*", "cni-1234"));
    assert.ok(globMatch("cni-?", "cni-a"));
    assert.ok(!globMatch("cni-?", "cni-ab"));
    assert.ok(!globMatch("cni.*", "cnix1"), "a dot is a dot");
    assert.ok(globMatch("*", ""));
  });

  test("two globs overlap exactly when some name matches both", () => {
    for (const [a, b] of [
      ["cni-*", "cni-a*"],
      ["*", "x"],
      ["a?c", "?b?"],
      ["*-web", "prod-*"],
      ["a*b*c", "*bc"],
    ])
      assert.ok(globsOverlap(a!, b!), `${a} and ${b}`);
    for (const [a, b] of [
      ["cni-a*", "cni-b*"],
      ["a?", "a"],
      ["web-*", "db-*"],
      ["*x", "*y"],
      ["a*", "b"],
    ])
      assert.ok(!globsOverlap(a!, b!), `${a} and ${b}`);
  });
});

describe("a policy's namespaces", () => {
  test("applies in the named namespaces that match, never in the unnamed own namespace; absent: everywhere", () => {
    assert.ok(appliesIn({}, "anything"));
    assert.ok(appliesIn({}, undefined));
    assert.ok(appliesIn({ namespaces: ["cni-*"] }, "cni-1"));
    assert.ok(!appliesIn({ namespaces: ["cni-*"] }, "web"));
    assert.ok(!appliesIn({ namespaces: ["*"] }, undefined));
  });

  test("validated: globs of namespace names, at least one; kept on the valid policy", async () => {
    const good = await policiesFrom({
      "web.yaml": "namespaces: [cni-*, web-?]\ninterceptors: [{ originalPort: 8000, port: 9000 }]\n",
    });
    assert.deepEqual(good.diagnostics, []);
    assert.deepEqual(good.policies[0]!.namespaces, ["cni-*", "web-?"]);
    const bad = await policiesFrom({
      "web.yaml": "namespaces: []\ninterceptors: [{ originalPort: 8000, port: 9000 }]\n",
      "db.yaml": "namespaces: [a/b]\ninterceptors: [{ originalPort: 5432, port: 6432 }]\n",
    });
    assert.equal(bad.diagnostics.length, 2, JSON.stringify(bad.diagnostics.map((d) => d.message)));
    assert.ok(
      bad.diagnostics.every((d) => d.code.startsWith("schema/")),
      JSON.stringify(bad.diagnostics.map((d) => d.code)),
    );
  });

  test("policies selecting every interface conflict only where their namespaces may meet", async () => {
    const rule = "interceptors: [{ originalPort: 8000, port: 9000 }]\n";
    const apart = await policiesFrom({
      "a.yaml": `namespaces: [cni-a*]\n${rule}`,
      "b.yaml": `namespaces: [cni-b*]\n${rule}`,
    });
    assert.deepEqual(apart.diagnostics, []);
    const meeting = await policiesFrom({
      "a.yaml": `namespaces: [cni-*]\n${rule}`,
      "b.yaml": `namespaces: [cni-b*]\n${rule}`,
    });
    assert.deepEqual(
      meeting.diagnostics.map((d) => d.code),
      ["rule/duplicate-original-port"],
    );
    const everywhere = await policiesFrom({ "a.yaml": rule, "b.yaml": `namespaces: [cni-b*]\n${rule}` });
    assert.equal(everywhere.diagnostics.length, 1);
  });

  test("a plan in a namespace uses only the policies that apply there", async () => {
    const only = desired({ ...testPolicy("only", [{ originalPort: 7000, port: 7100 }]), namespaces: ["web-*"] });
    const web = new FakeDatapath({ name: "web-1" });
    web.addLink("eth0");
    const db = new FakeDatapath({ name: "db-1" });
    db.addLink("eth0");
    assert.deepEqual(
      makePlan([only], await web.observe()).changes.map((c) => c.address),
      ["program.only", "attachment.eth0"],
    );
    assert.deepEqual(makePlan([only], await db.observe()).changes, []);
  });
});

describe("the namespace directory", () => {
  /** Files in a folder of the test's own, whose identity the test decides (as a bind mount would, without an event). */
  async function directory(matches = (name: string) => name.startsWith("cni-")) {
    const dir = await mkdtemp(path.join(scratch, "netns-"));
    const identities = new Map<string, NamespaceFile>();
    const seen: Map<string, string>[] = [];
    /** Each name's identify calls, as a barrier: a test waits until a file was looked at. */
    const looked = new Map<string, { left: number; resolve: () => void }>();
    const lookedAt = (name: string, times: number) =>
      new Promise<void>((resolve) => looked.set(name, { left: times, resolve }));
    const identify = async (file: string): Promise<NamespaceFile> => {
      const waiter = looked.get(path.basename(file));
      if (waiter && --waiter.left === 0) waiter.resolve();
      const exists = await readFile(file).then(
        () => true,
        () => false,
      );
      if (!exists) return { kind: "gone" };
      return identities.get(path.basename(file)) ?? { kind: "pending" };
    };
    const watcher = new NamespaceDirectory(
      { dir, matches, identify },
      { changed: (found) => seen.push(new Map(found)), failed: (error) => assert.fail(String(error)) },
    );
    return { dir, identities, seen, watcher, lookedAt, last: () => seen.at(-1) ?? new Map<string, string>() };
  }

  test("a namespace appears when its file is bound (no event), goes when its file goes; other names are ignored", async () => {
    const { dir, identities, watcher, last, lookedAt } = await directory();
    identities.set("cni-old", { kind: "namespace", key: "ns1" });
    await writeFile(path.join(dir, "cni-old"), "");
    await writeFile(path.join(dir, "other"), "");
    identities.set("other", { kind: "namespace", key: "ns9" });
    assert.deepEqual([...(await watcher.start())], [["cni-old", "ns1"]]);
    try {
      // A barrier: looked at twice, so the scan that found a plain file has ended (it scheduled the second look).
      const looked = lookedAt("cni-new", 2);
      await writeFile(path.join(dir, "cni-new"), ""); // created: an event, but not a namespace yet
      await looked;
      assert.deepEqual([...last()], [["cni-old", "ns1"]]);
      identities.set("cni-new", { kind: "namespace", key: "ns2" }); // bound: no event at all
      await until(() => last().get("cni-new") === "ns2", "the bound file is found by the pending rescan");
      await rm(path.join(dir, "cni-old"));
      await until(() => !last().has("cni-old"), "a removed namespace is gone");
      assert.deepEqual([...last()], [["cni-new", "ns2"]]);
    } finally {
      watcher.stop();
    }
  });

  test("a name reused for another namespace is reported with its new key; a burst of fifty is all seen", async () => {
    const { dir, identities, watcher, last } = await directory();
    await watcher.start();
    try {
      for (let i = 0; i < 50; i++) {
        identities.set(`cni-${i}`, { kind: "namespace", key: `ns${100 + i}` });
        await writeFile(path.join(dir, `cni-${i}`), "");
      }
      await until(() => last().size === 50, "all fifty");
      await rm(path.join(dir, "cni-7"));
      identities.set("cni-7", { kind: "namespace", key: "ns999" });
      await writeFile(path.join(dir, "cni-7"), "");
      await until(() => last().get("cni-7") === "ns999", "the new namespace behind the old name");
    } finally {
      watcher.stop();
    }
  });

  test("a directory made after the start is followed", async () => {
    const parent = await mkdtemp(path.join(scratch, "run-"));
    const dir = path.join(parent, "netns");
    const seen: Map<string, string>[] = [];
    const watcher = new NamespaceDirectory(
      { dir, matches: () => true, identify: async () => ({ kind: "namespace", key: "ns5" }) },
      { changed: (found) => seen.push(new Map(found)), failed: (error) => assert.fail(String(error)) },
    );
    assert.equal((await watcher.start()).size, 0);
    try {
      await mkdir(dir);
      await writeFile(path.join(dir, "cni-late"), "");
      await until(() => seen.at(-1)?.get("cni-late") === "ns5", "the namespace in the new directory");
    } finally {
      watcher.stop();
    }
  });
});

describe("a NamespaceAgent whose namespace vanishes", () => {
  /** A fake whose namespace is deleted (as `ip netns del`) right when the @at-th filter is attached. */
  class VanishingDatapath extends FakeDatapath {
    private attaches = 0;
    constructor(private readonly at: number) {
      super({ name: "cni-doomed" });
    }

    override async attachFilters(link: LinkRef, program: VersionRef, hooks: Hook[]): Promise<void> {
      if (++this.attaches === this.at) {
        this.deleteNamespace();
        throw new Error(`nsenter: cannot open /var/run/netns/${this.netns.name}: No such file or directory`);
      }
      return super.attachFilters(link, program, hooks);
    }
  }

  function agentOn(datapath: FakeDatapath, metrics = new AgentMetrics(async () => [])) {
    const { lines, log } = recorder();
    let gone = 0;
    const agent = new NamespaceAgent(
      datapath,
      () => [demo],
      {
        host: new FakeHost(),
        keep: false,
        lockTimeoutMs: 0,
        lockHolder: "intercept agent",
        builder: () => builder,
        onGone: () => gone++,
      },
      namespaceLogger(log, datapath.netns.name),
      metrics.forNamespace(datapath.netns.name ?? ""),
    );
    return { agent, lines, gone: () => gone, metrics };
  }

  test("mid-apply: no error line, onGone once, not ready, and stopping forgets its pins", async () => {
    const datapath = new VanishingDatapath(2);
    datapath.addLink("eth0");
    datapath.addLink("eth1");
    const { agent, lines, gone, metrics } = agentOn(datapath);
    await agent.reconcile();
    assert.deepEqual(
      lines.filter((l) => l.event === "error" || l.event === "rolled back"),
      [],
    );
    assert.equal(gone(), 1);
    assert.equal(agent.ready, false);
    await agent.reconcile(); // a late event: nothing more happens
    await agent.stop();
    assert.equal(gone(), 1);
    assert.deepEqual(datapath.snapshot().versions, [], "its pins are removed");
    assert.match(
      await metrics.registry.metrics(),
      /^intercept_apply_failures_total\{namespace="cni-doomed"\} 0$/m,
      "not counted as a failure",
    );
  });

  test("a failure in a namespace that is still there: the failed step, the rollback and the error, in that order", async () => {
    const datapath = new FakeDatapath({ name: "cni-alive" });
    datapath.addLink("eth0");
    datapath.failAt(3);
    const { agent, lines, gone, metrics } = agentOn(datapath);
    await agent.reconcile();
    const failure = lines.filter((l) => l.event === "error" || l.event === "rolled back").map((l) => l.event);
    assert.deepEqual(failure, ["error", "rolled back", "error"]);
    assert.ok(
      lines.every((l) => l.namespace === "cni-alive"),
      "every line names its namespace",
    );
    assert.equal(gone(), 0);
    assert.equal(agent.ready, false);
    assert.match(await metrics.registry.metrics(), /^intercept_apply_failures_total\{namespace="cni-alive"\} 1$/m);
    datapath.restart();
    await agent.reconcile();
    assert.equal(agent.ready, true, "ready once a reconcile succeeded");
    await agent.stop(true);
  });
});

describe("orphaned pins (namespaces deleted while no agent ran)", () => {
  /** A host with one orphan among pins that are not orphans, each for its own reason. */
  async function machine() {
    const host = new FakeHost();
    const alive = host.addNamespace("other-name");
    host.leavePins("ns7001", FLEET_LOCK_HOLDER); // served by a fleet, namespace gone: an orphan
    host.leavePins(alive.namespaceKey, FLEET_LOCK_HOLDER); // its namespace is still there (under another name)
    host.leavePins("ns7003", "intercept apply"); // not known to be a named namespace's
    host.leavePins("ns7004", FLEET_LOCK_HOLDER);
    const busy = await host.holdLock("ns7004", FLEET_LOCK_HOLDER); // someone is working there
    host.leavePins(OWN_KEY, FLEET_LOCK_HOLDER); // the agent's own namespace
    return { host, busy, all: ["ns7001", alive.namespaceKey, "ns7003", "ns7004", OWN_KEY].sort() };
  }

  test("are removed, under their lock; nothing else is", async () => {
    const { host, busy, all } = await machine();
    const { lines, log } = recorder();
    assert.deepEqual(await collectOrphans(host, log), ["ns7001"]);
    busy();
    assert.deepEqual(
      await host.pinnedNamespaces(),
      all.filter((key) => key !== "ns7001"),
    );
    assert.equal(host.lockHolder("ns7001"), undefined, "its lock was let go");
    assert.deepEqual(
      lines.map((l) => l.event),
      ["namespace gone"],
    );
  });

  for (const step of [
    "listNamespaces",
    "ownNamespaceKey",
    "pinnedNamespaces",
    "lastLockHolder",
    "lockNamespace",
    "removeNamespacePins",
  ] as const) {
    test(`a failure of ${step} fails the collection, removes nothing, and holds no lock`, async () => {
      const { host, busy, all } = await machine();
      const { lines, log } = recorder();
      const injected = new Error(`${step} broke`);
      host.failNext(step, injected);
      await assert.rejects(collectOrphans(host, log), (error) => error === injected);
      busy();
      assert.deepEqual(await host.pinnedNamespaces(), all);
      assert.equal(host.lockHolder("ns7001"), undefined);
      assert.deepEqual(lines, []);
    });
  }
});

test("concurrent builds of one program run clang once", async () => {
  // A clang that counts its compilations, in front of the real one; a cache of this test's own.
  const bin = path.join(scratch, "bin");
  const calls = path.join(scratch, "clang-calls");
  await mkdir(bin);
  const real = (process.env.PATH ?? "")
    .split(path.delimiter)
    .map((dir) => path.join(dir, "clang"))
    .find((file) => file !== path.join(bin, "clang"));
  await writeFile(
    path.join(bin, "clang"),
    `#!/bin/sh\ncase " $* " in *" -c "*) echo compile >> ${calls} ;; esac\nPATH="${process.env.PATH}" exec clang "$@"\n`,
  );
  await chmod(path.join(bin, "clang"), 0o755);
  const saved = { PATH: process.env.PATH, INTERCEPT_CACHE_DIR: process.env.INTERCEPT_CACHE_DIR };
  process.env.PATH = `${bin}${path.delimiter}${process.env.PATH}`;
  process.env.INTERCEPT_CACHE_DIR = path.join(scratch, "cache");
  try {
    assert.ok(real);
    const port = 20_000 + Math.floor(Math.random() * 10_000); // a program no cache holds
    const [compiled] = compilePolicies([testPolicy("memo", [{ originalPort: port, port: port + 1 }])]);
    const built = await Promise.all(Array.from({ length: 8 }, () => buildPolicy(compiled!)));
    assert.equal(new Set(built.map((b) => b.objectPath)).size, 1);
    assert.equal((await readFile(calls, "utf8")).split("\n").filter(Boolean).length, 1, "clang compiled it once");
  } finally {
    Object.assign(process.env, saved);
  }
});

describe("the agent's command line", () => {
  test("--netns-match is repeatable, takes globs of namespace names, and excludes --netns", () => {
    assert.deepEqual(
      parseAgentArguments(["p", "--netns-match", "cni-*", "--netns-match", "web-?"]).options.namespaces,
      { kind: "matching", globs: ["cni-*", "web-?"] },
    );
    assert.deepEqual(parseAgentArguments(["p", "--netns", "edge"]).options.namespaces, {
      kind: "one",
      netns: { name: "edge" },
    });
    assert.deepEqual(parseAgentArguments(["p"]).options.namespaces, { kind: "one", netns: {} });
    assert.throws(
      () => parseAgentArguments(["--netns", "a", "--netns-match", "b*"]),
      (error) => error instanceof UsageError && /cannot be used together/.test(error.message),
    );
    assert.throws(() => parseAgentArguments(["--netns-match", "../x"]), UsageError);
    assert.throws(() => parseAgentArguments(["--netns-match", ""]), UsageError);
    assert.deepEqual(commandOptions("agent")["netns-match"], { type: "string", multiple: true });
  });
});

describe("health and metrics", () => {
  test("/healthz: 503 naming the namespaces not reconciled yet, then 200", async () => {
    let readiness: Readiness = {
      ready: false,
      summary: "not ready: 1 of 2 network namespaces not reconciled yet: cni-b",
    };
    const metrics = new AgentMetrics(async () => []);
    const { server, address } = await metrics.serve({ host: "127.0.0.1", port: 0 }, () => readiness);
    try {
      const before = await fetch(`http://${address}/healthz`);
      assert.equal(before.status, 503);
      assert.equal(await before.text(), `${readiness.summary}\n`);
      readiness = { ready: true, summary: "ready: 2 network namespaces reconciled" };
      const now = await fetch(`http://${address}/healthz`);
      assert.equal(now.status, 200);
    } finally {
      server.close();
    }
  });

  test("every per-rule and per-namespace metric carries the namespace; a forgotten one leaves no series", async () => {
    const fakes = ["cni-a", "cni-b"].map((name) => {
      const fake = new FakeDatapath({ name });
      fake.addLink("eth0");
      return fake;
    });
    for (const fake of fakes) {
      const plan = makePlan([demo], await fake.observe());
      const { executePlan } = await import("../../src/reconcile/index.js");
      await executePlan(plan, fake, { objectFor: (hash) => ({ objectPath: `${hash}.bpf.o`, prefixes: [] }) });
    }
    let served = fakes;
    const metrics = new AgentMetrics(async () =>
      Promise.all(served.map(async (fake) => ({ namespace: fake.netns.name!, report: await inspect(fake, [demo]) }))),
    );
    const [a, b] = ["cni-a", "cni-b"].map((name) => metrics.forNamespace(name));
    a!.applied();
    b!.failed();
    const text = await metrics.registry.metrics();
    for (const name of [
      "intercept_attached_links",
      "intercept_drift",
      "intercept_counters_unreadable",
      "intercept_applies_total",
      "intercept_apply_failures_total",
      "intercept_rule_connections_steered_total",
    ]) {
      const series = text.split("\n").filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `));
      assert.ok(series.length >= 2, `${name}: ${series.join(" | ")}`);
      assert.ok(
        series.every((line) => /namespace="cni-[ab]"/.test(line)),
        `${name} carries the namespace: ${series.join(" | ")}`,
      );
    }
    served = [fakes[0]!];
    metrics.forget("cni-b");
    assert.doesNotMatch(await metrics.registry.metrics(), /namespace="cni-b"/);
  });

  test("text log lines name the namespace they are about", () => {
    const lines: string[] = [];
    namespaceLogger(
      createLogger("text", (line) => lines.push(line)),
      "cni-1",
    )("applied", "program.demo: created");
    assert.match(lines[0]!, /^\S+ applied \[cni-1\]: program\.demo: created\n$/);
  });
});
