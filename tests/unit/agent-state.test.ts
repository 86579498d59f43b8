/**
 * What the agent says about itself, over the fake datapath: each
 * namespace's last reconcile and whether its kernel matches the policies in
 * force, the metrics and /healthz JSON built from that, and a stop that
 * cuts an apply in flight short (rolled back) or a
 * start still waiting for a lock.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createLogger, namespaceLogger, type LogEvent } from "../../src/agent/log.js";
import { AgentMetrics, healthJson, upToDate, type PolicyHealth } from "../../src/agent/metrics.js";
import { NamespaceAgent } from "../../src/agent/namespace-agent.js";
import type { ProgramBuilder } from "../../src/toolchain/index.js";
import type { LinkRef } from "../../src/datapath/types.js";
import type { Hook } from "../../src/model/hooks.js";
import type { VersionRef } from "../../src/model/version.js";
import { parseAgentArguments } from "../../src/cli.js";
import { UsageError } from "../../src/errors.js";
import { desiredPolicy } from "../support/desired.js";
import { FakeDatapath } from "../support/fake-datapath.js";
import { FakeHost } from "../support/fake-host.js";

const builder: ProgramBuilder = { identify: async () => "", object: async (_compiled, hash) => `${hash}.bpf.o` };
const demo = desiredPolicy("demo", [{ originalPort: 8000, port: 9000 }]);

/** A fake whose filter attaches wait until released: an apply that stays in flight as long as the test wants. */
class HeldDatapath extends FakeDatapath {
  reached: Promise<void>;
  private reach!: () => void;
  private release: Promise<void> = Promise.resolve();
  private releasing: () => void = () => {};

  constructor(name: string) {
    super({ name });
    Object.defineProperty(this, "namespaceKey", { value: `ns${name.length}` });
    this.reached = new Promise((resolve) => (this.reach = resolve));
  }

  hold(): () => void {
    this.release = new Promise((resolve) => (this.releasing = resolve));
    return () => this.releasing();
  }

  override async attachFilters(link: LinkRef, program: VersionRef, hooks: Hook[]): Promise<void> {
    this.reach();
    await this.release;
    return super.attachFilters(link, program, hooks);
  }
}

function agentOn(datapath: FakeDatapath, version: () => string | undefined = () => "v1", host = new FakeHost()) {
  const lines: { event: LogEvent; message: string }[] = [];
  const waiters: (() => void)[] = [];
  const log = createLogger("json", (line) => {
    lines.push(JSON.parse(line));
    for (const wake of waiters.splice(0)) wake();
  });
  /** A barrier: resolves once a line of @event was logged. */
  const logged = async (event: LogEvent) => {
    while (!lines.some((line) => line.event === event)) await new Promise<void>((resolve) => waiters.push(resolve));
  };
  const metrics = new AgentMetrics(async () => []);
  const agent = new NamespaceAgent(
    datapath,
    () => [demo],
    {
      host,
      keep: false,
      lockTimeoutMs: 10_000,
      lockHolder: "intercept agent (unit test)",
      builder: () => builder,
      onGone: () => {},
      version,
    },
    namespaceLogger(log, datapath.netns.name),
    metrics.forNamespace(datapath.netns.name ?? ""),
  );
  return { agent, lines, logged };
}

describe("a namespace's last reconcile", () => {
  test("recorded with the policies' hash; a failure says why", async () => {
    const datapath = new HeldDatapath("cni-state");
    datapath.addLink("eth0");
    let version = "v1";
    const { agent } = agentOn(datapath, () => version);
    await agent.reconcile();
    assert.equal(agent.lastReconcile?.ok, true);
    assert.equal(agent.lastReconcile?.version, "v1");
    version = "v2";
    datapath.failAt(datapath.mutationCount + 1);
    await agent.reconcile(); // nothing to change: succeeds, now recorded as v2
    assert.deepEqual(
      { ok: agent.lastReconcile?.ok, version: agent.lastReconcile?.version },
      { ok: true, version: "v2" },
    );
    datapath.addLink("eth1"); // a new link: the next reconcile attaches, and the injected failure hits it
    await agent.reconcile();
    assert.equal(agent.lastReconcile?.ok, false);
    assert.match(agent.lastReconcile?.error ?? "", /injected failure/);
    datapath.restart();
    await agent.stop(true);
  });
});

describe("stopping", () => {
  test("an apply in flight is cut short: rolled back, without an error line", async () => {
    const datapath = new HeldDatapath("cni-stop");
    datapath.addLink("eth0");
    datapath.addLink("eth1");
    const release = datapath.hold();
    const { agent, lines } = agentOn(datapath);
    const reconciling = agent.reconcile();
    await datapath.reached; // the apply is attaching the first link
    const stopping = agent.stop();
    release();
    await reconciling;
    await stopping;
    assert.deepEqual(datapath.snapshot().versions, [], "nothing left");
    assert.deepEqual(
      lines.filter((line) => line.event === "error"),
      [],
    );
    assert.ok(
      lines.some((line) => line.event === "rolled back"),
      JSON.stringify(lines),
    );
    assert.ok(
      !lines.some((line) => line.event === "applied" && /policies applied/.test(line.message)),
      "the interrupted apply did not complete",
    );
  });

  test("a start waiting for the lock gives up at once, and never held anything", async () => {
    const datapath = new HeldDatapath("cni-waiting");
    const host = new FakeHost();
    const release = await host.holdLock(datapath.namespaceKey, "intercept apply");
    try {
      const { agent, logged } = agentOn(datapath, () => "v1", host);
      const starting = agent.start();
      await logged("waiting"); // a barrier: it waits for the lock
      const began = Date.now();
      assert.equal(await agent.stop(), false, "it held nothing");
      await assert.rejects(starting, /stopped while waiting for the lock/);
      assert.ok(Date.now() - began < 1_000, `stopped in ${Date.now() - began} ms`);
      assert.equal(datapath.mutationCount, 0);
    } finally {
      release();
    }
  });
});

describe("metrics and /healthz say whether the kernel matches the files", () => {
  const at = Date.UTC(2026, 11, 6, 12);
  const health = (changes: Partial<PolicyHealth> = {}): PolicyHealth => ({
    lastReadAt: at,
    readFingerprint: "a".repeat(64),
    readOutcome: "valid",
    inForceFingerprint: "a".repeat(64),
    namespaces: [
      {
        namespace: "cni-1",
        ready: true,
        kernelMatches: true,
        lastReconcile: { ok: true, at, version: "a".repeat(64) },
      },
    ],
    ...changes,
  });

  test("up to date: the files read are in force and every kernel matches them", () => {
    assert.equal(upToDate(health()), true);
    assert.equal(upToDate(health({ readFingerprint: "b".repeat(64), readOutcome: "invalid" })), false);
    assert.equal(
      upToDate(
        health({ namespaces: [{ namespace: "cni-1", ready: true, kernelMatches: false, lastReconcile: undefined }] }),
      ),
      false,
    );
  });

  test("the series", async () => {
    let now = health();
    const metrics = new AgentMetrics(
      async () => [],
      () => now,
    );
    let text = await metrics.registry.metrics();
    for (const line of [
      "intercept_policies_invalid 0",
      "intercept_policies_behind 0",
      `intercept_policies_last_read_timestamp_seconds ${at / 1000}`,
      `intercept_policies_read_info{hash="${"a".repeat(16)}"} 1`,
      `intercept_policies_in_force_info{hash="${"a".repeat(16)}"} 1`,
      'intercept_kernel_matches{namespace="cni-1"} 1',
      'intercept_last_reconcile_success{namespace="cni-1"} 1',
      `intercept_last_reconcile_timestamp_seconds{namespace="cni-1"} ${at / 1000}`,
    ])
      assert.ok(text.split("\n").includes(line), `${line} in:\n${text}`);
    now = health({
      readFingerprint: "b".repeat(64),
      readOutcome: "invalid",
      namespaces: [
        {
          namespace: "cni-1",
          ready: true,
          kernelMatches: false,
          lastReconcile: { ok: false, at, version: "a".repeat(64), error: "boom" },
        },
      ],
    });
    text = await metrics.registry.metrics();
    for (const line of [
      "intercept_policies_invalid 1",
      "intercept_policies_behind 1",
      `intercept_policies_read_info{hash="${"b".repeat(16)}"} 1`,
      'intercept_kernel_matches{namespace="cni-1"} 0',
      'intercept_last_reconcile_success{namespace="cni-1"} 0',
    ]) {
      assert.ok(text.split("\n").includes(line), `${line} in:\n${text}`);
    }
    assert.ok(!text.includes(`intercept_policies_read_info{hash="${"a".repeat(16)}"}`), "the old read hash is gone");
  });

  test("/healthz: text by default, JSON when asked", async () => {
    const now = health({ readFingerprint: "b".repeat(64), readOutcome: "settling" });
    const metrics = new AgentMetrics(
      async () => [],
      () => now,
    );
    const readiness = { ready: true, summary: "ready: 1 network namespace reconciled" };
    const { server, address } = await metrics.serve(
      { host: "127.0.0.1", port: 0 },
      () => readiness,
      () => now,
    );
    try {
      assert.equal(await (await fetch(`http://${address}/healthz`)).text(), "ready: 1 network namespace reconciled\n");
      const byQuery = await fetch(`http://${address}/healthz?format=json`);
      const byHeader = await fetch(`http://${address}/healthz`, { headers: { Accept: "application/json" } });
      assert.equal(byQuery.status, 200);
      const body = await byQuery.json();
      assert.deepEqual(await byHeader.json(), body);
      assert.deepEqual(body, healthJson(readiness, now));
      assert.deepEqual(body, {
        ready: true,
        summary: "ready: 1 network namespace reconciled",
        policies: {
          lastReadAt: at / 1000,
          readHash: "b".repeat(16),
          readOutcome: "settling",
          inForceHash: "a".repeat(16),
          invalid: false,
          behind: true,
        },
        namespaces: [
          {
            namespace: "cni-1",
            ready: true,
            kernelMatches: true,
            lastReconcile: { result: "ok", at: at / 1000, policiesHash: "a".repeat(16) },
          },
        ],
      });
    } finally {
      server.close();
    }
  });
});

test("--resync-interval: 30 s by default, a duration, 0 for never, at least a second", () => {
  assert.equal(parseAgentArguments(["p"]).options.resyncMs, 30_000);
  assert.equal(parseAgentArguments(["p", "--resync-interval", "2m"]).options.resyncMs, 120_000);
  assert.equal(parseAgentArguments(["p", "--resync-interval", "0"]).options.resyncMs, 0);
  assert.throws(
    () => parseAgentArguments(["p", "--resync-interval", "10ms"]),
    (error) => error instanceof UsageError && /too short/.test(error.message),
  );
  assert.throws(() => parseAgentArguments(["p", "--resync-interval", "soon"]), UsageError);
});
