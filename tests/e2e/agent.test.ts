/**
 * The agent against the real kernel, in namespaces this test creates: it
 * follows new links, file edits (live edits keep the program), survives an
 * invalid edit, serves metrics, restarts with --keep without dropping a
 * request, and leaves nothing behind on SIGTERM.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, open, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { after, before, describe, test } from "node:test";
import { execa } from "execa";
import { intercept, Lab, SERVER_ADDRESS, waitForAnswers } from "../../lab/network.js";
import { AgentProcess } from "../../lab/agent-process.js";

let lab: Lab;
let scratch: string;
let policy: string;
let agent: AgentProcess;
const agents: AgentProcess[] = [];

const POLICY = (enabled: boolean) =>
  `interceptors:\n  - { port: 9000, originalPort: 8000, enabled: ${enabled} }\n  - { port: 9443, originalPort: 8443 }\n`;
const intercepted = async () => /\r\nServer: intercept\r\n/i.test((await lab.curl(8000)).response);

async function programIds() {
  return JSON.parse((await intercept("status", "--netns", lab.serverNs, "--json")).stdout).programs.map(
    (p: { programIds: object }) => p.programIds,
  );
}

async function ourFilterOn(link: string): Promise<boolean> {
  const shown = await lab.runInServer(["tc", "filter", "show", "dev", link, "ingress"]);
  return String(shown.stdout).includes("intercept_ingre");
}

/** Polls tc until our filter is on @link; returns how long that took from @since. */
async function filterAttached(link: string, since = performance.now()): Promise<number> {
  while (!(await ourFilterOn(link))) {
    assert.ok(performance.now() - since < 10_000, `filters on ${link} within 10 s`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return performance.now() - since;
}

/** The agent's /metrics text (it was started with --metrics). */
async function scrapeMetrics(): Promise<string> {
  const started = agent.lines.find((l) => l.metrics)!;
  return (await fetch(`http://${started.metrics}/metrics`)).text();
}

function startAgent(...extra: string[]): AgentProcess {
  const started = new AgentProcess([policy, "--netns", lab.serverNs, ...extra]);
  agents.push(started);
  return started;
}

before(async () => {
  lab = await Lab.create();
  scratch = await mkdtemp(path.join(tmpdir(), "intercept-agent-"));
  policy = path.join(scratch, "demo.yaml");
  await writeFile(policy, POLICY(true));
  await lab.startInServer(["node", "dist/demo/test-server.js"], /ready/);
});

after(async () => {
  for (const started of agents) started.kill();
  await lab?.destroy();
  await rm(scratch, { recursive: true, force: true });
});

describe("agent", { concurrency: false }, () => {
  test("on start it validates, plans and applies", async () => {
    agent = startAgent("--keep", "--metrics", "127.0.0.1:0");
    await agent.waitFor((l) => l.event === "applied" && /policies applied/.test(String(l.message)));
    assert.ok(await intercepted());
  });

  test("a link created later gets the filters", async (t) => {
    const [link, peer] = [`${lab.id}n`, `${lab.id}m`];
    const created = performance.now();
    await lab.runInServer(["ip", "link", "add", link, "type", "veth", "peer", "name", peer]);
    t.diagnostic(`link → filters attached in ${(await filterAttached(link, created)).toFixed(0)} ms (polled with tc)`);
    await agent.waitFor((l) => l.event === "link seen" && l.link === link);

    // Renamed, then set down and up: the filters stay with the link, and the agent knows its new name.
    const renamed = `${lab.id}r`;
    await lab.runInServer(["ip", "link", "set", link, "name", renamed]);
    await agent.waitFor((l) => l.event === "link seen" && l.link === renamed);
    for (const state of ["down", "up"]) await lab.runInServer(["ip", "link", "set", renamed, state]);
    const settled = agent.lines.length;
    assert.equal(
      (await intercept("plan", policy, "--netns", lab.serverNs, "--detailed-exitcode")).exitCode,
      0,
      "nothing left to do",
    );
    assert.ok(await ourFilterOn(renamed));
    assert.ok(!agent.lines.slice(settled).some((l) => l.event === "error"));

    await lab.runInServer(["ip", "link", "del", renamed]);
    await agent.waitFor((l) => l.event === "link gone" && l.link === renamed);
  });

  test("a link watcher that dies is restarted, and links are followed again", async () => {
    const from = agent.lines.length;
    const watcher = await execa("pgrep", ["-P", String(agent.pid), "-f", "monitor link"]);
    process.kill(Number(watcher.stdout.trim()), "SIGKILL");
    await agent.waitFor(
      (l) => l.event === "error" && /link watcher exited \(SIGKILL\); restarting it in 100 ms/.test(String(l.message)),
      from,
    );
    await agent.waitFor((l) => l.event === "link watcher", from);
    const link = `${lab.id}w`;
    await lab.runInServer(["ip", "link", "add", link, "type", "veth", "peer", "name", `${lab.id}v`]);
    await filterAttached(link);
    await lab.runInServer(["ip", "link", "del", link]);
    await agent.waitFor((l) => l.event === "link gone" && l.link === link, from);
  });

  test("disabling a rule in the file stops interception, with the same program", async () => {
    const ids = await programIds();
    const from = agent.lines.length;
    await writeFile(policy, POLICY(false));
    await agent.waitFor((l) => l.event === "applied" && l.message === "rule.demo[0]: disabled", from);
    assert.equal(await intercepted(), false);
    assert.deepEqual(await programIds(), ids);
    await writeFile(policy, POLICY(true));
    await agent.waitFor((l) => l.event === "applied" && l.message === "rule.demo[0]: enabled", from);
    assert.equal(await intercepted(), true);
    assert.deepEqual(await programIds(), ids);
  });

  test("saves in quick succession: every one is applied, the last one wins", async () => {
    // chokidar dropped a change within 50 ms of the previous one; this is the regression test.
    for (let i = 0; i < 6; i++) {
      const from = agent.lines.length;
      const enabled = i % 2 === 1;
      await writeFile(policy, POLICY(enabled));
      await agent.waitFor((l) => l.message === `rule.demo[0]: ${enabled ? "enabled" : "disabled"}`, from, 5_000);
    }
    assert.equal(await intercepted(), true);
  });

  test("a save caught half-way (truncated, written 100 ms later) is no error: the final content is applied", async () => {
    // Writers that truncate in place (shell redirects, writeFile, some editors) leave an empty file for a moment.
    const from = agent.lines.length;
    const file = await open(policy, "w");
    await new Promise((resolve) => setTimeout(resolve, 100));
    await file.writeFile(POLICY(false));
    await file.close();
    await agent.waitFor((l) => l.message === "rule.demo[0]: disabled", from);
    await writeFile(policy, POLICY(true));
    await agent.waitFor((l) => l.message === "rule.demo[0]: enabled", from);
    assert.deepEqual(
      agent.lines.slice(from).filter((l) => l.event === "error"),
      [],
    );
  });

  test("an invalid edit is logged with its location and the old behaviour continues", async () => {
    const from = agent.lines.length;
    await writeFile(policy, "interceptors:\n  - { port: 0, originalPort: 8000 }\n");
    const error = await agent.waitFor((l) => l.event === "error" && l.line === 2, from);
    assert.match(
      String(error.message),
      /demo\.yaml:2:13: error\[schema\/range\]: interceptors\[0\]\.port must be between 1 and 65535, got 0/,
    );
    await agent.waitFor((l) => l.event === "error" && /keeping the last good policies/.test(String(l.message)), from);
    assert.equal(await intercepted(), true);
    assert.match(await scrapeMetrics(), /^intercept_policies_invalid 1$/m);
    await writeFile(policy, POLICY(true)); // a later valid edit is applied again (nothing to change)
    await agent.waitFor((l) => l.event === "policy change", from);
    assert.match(await scrapeMetrics(), /^intercept_policies_invalid 0$/m);
  });

  test("metrics count the connections steered", async () => {
    const scrape = async () => {
      const text = await scrapeMetrics();
      const line = text
        .split("\n")
        .find((l) => l.startsWith("intercept_rule_connections_steered_total{") && l.includes('rule="0"'));
      assert.ok(line, text);
      // Per-namespace metrics carry the namespace they are about.
      assert.match(text, new RegExp(`^intercept_attached_links\\{namespace="${lab.serverNs}"\\} 1$`, "m"));
      assert.match(text, new RegExp(`^intercept_applies_total\\{namespace="${lab.serverNs}"\\} \\d+$`, "m"));
      assert.ok(line.includes(`namespace="${lab.serverNs}"`), line);
      return Number(line.split(" ").pop());
    };
    const before = await scrape();
    for (let i = 0; i < 3; i++) assert.ok(await intercepted());
    assert.equal(await scrape(), before + 3, "one connection per request");
  });

  test("a restart with --keep drops no request, and SIGTERM then leaves nothing", async () => {
    const loop = lab.runInClient([
      "node",
      "dist/lab/request-loop.js",
      `http://${SERVER_ADDRESS}:8000/`,
      "60000",
      "Server",
      await lab.addClientAddress(),
    ]);
    await waitForAnswers(loop);
    assert.equal(await agent.stop(), 0);
    assert.ok(await ourFilterOn(lab.serverLink), "--keep left the datapath in place");
    const ids = await programIds();
    const restarted = startAgent();
    await restarted.waitFor((l) => l.event === "link seen");
    loop.kill("SIGTERM"); // the loop spanned the stop and the restart
    const result = JSON.parse(String((await loop).stdout));
    assert.ok(result.requests > 20, JSON.stringify(result));
    assert.deepEqual(
      { failures: result.failures, withoutHeader: result.withoutHeader },
      { failures: 0, withoutHeader: 0 },
      JSON.stringify(result),
    );
    assert.deepEqual(await programIds(), ids, "the restarted agent adopted the live programs");
    assert.ok(!restarted.lines.some((l) => l.event === "applied"), "and changed nothing");

    assert.equal(await restarted.stop("SIGTERM"), 0);
    assert.equal(await ourFilterOn(lab.serverLink), false);
    assert.deepEqual(await programIds(), []);
    assert.equal(existsSync(`/sys/fs/bpf/intercept/${lab.pinKey}`), false);
    assert.equal(await intercepted(), false);
  });
});
