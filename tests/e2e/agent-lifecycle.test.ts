/**
 * The agent as a daemon, against the real kernel in namespaces this test
 * creates: arguments and listeners are checked before the kernel is
 * touched, SIGHUP reloads, SIGTERM always ends it (within 2 s, while it
 * waits for a lock too), one agent per namespace (a refused one never says
 * it started or removed anything),
 * a policy folder that is removed and recreated is followed again, and a
 * namespace that disappears ends the agent with a non-zero exit.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { compileBpf } from "../../src/toolchain/index.js";
import { loadAndPin } from "../../src/kernel/bpftool.js";
import { lockNamespace } from "../../src/host/lock.js";
import { AgentProcess } from "../../lab/agent-process.js";
import { intercept, Lab } from "../../lab/network.js";

let lab: Lab;
let scratch: string;
let folder: string;
let foreignPins: string;
const agents: AgentProcess[] = [];

const POLICY = (port: number) => `interceptors:\n  - { port: ${port}, originalPort: 8000 }\n`;

before(async () => {
  lab = await Lab.create();
  scratch = await mkdtemp(path.join(tmpdir(), "intercept-lifecycle-"));
  folder = path.join(scratch, "policies");
  foreignPins = `/sys/fs/bpf/${lab.id}-foreign`;
  await mkdir(folder);
  await writeFile(path.join(folder, "demo.yaml"), POLICY(9000));
  await lab.startInServer(["node", "dist/demo/test-server.js"], /ready/);
});

after(async () => {
  for (const agent of agents) agent.kill();
  await lab?.destroy();
  await rm(scratch, { recursive: true, force: true });
});

function startAgent(...args: string[]): AgentProcess {
  const agent = new AgentProcess(args);
  agents.push(agent);
  return agent;
}

const attached = async () =>
  String((await lab.runInServer(["tc", "filter", "show", "dev", lab.serverLink, "ingress"])).stdout).includes(
    "intercept_ingre",
  );

describe("agent lifecycle", { concurrency: false }, () => {
  test("a --metrics value that is not HOST:PORT: usage error, exit 1, before it starts, nothing attached", async () => {
    const agent = startAgent(folder, "--netns", lab.serverNs, "--metrics", "nonsense:xx");
    const { exitCode, stderr } = await agent.exited();
    assert.equal(exitCode, 1);
    assert.equal(
      stderr,
      'intercept: --metrics: "nonsense:xx" is not HOST:PORT (e.g. 127.0.0.1:9464)\nRun `intercept agent --help` for usage.\n',
    );
    assert.deepEqual(agent.lines, [], "refused before it logged anything: it never started");
    assert.equal(await attached(), false);
  });

  test("a busy --metrics address: one line, exit 1, before it reads a policy, nothing attached", async () => {
    const busy: Server = createServer();
    await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve));
    const port = (busy.address() as { port: number }).port;
    try {
      const agent = startAgent(folder, "--netns", lab.serverNs, "--metrics", `127.0.0.1:${port}`);
      const { exitCode, stderr } = await agent.exited();
      assert.equal(exitCode, 1);
      assert.equal(stderr, `intercept: --metrics: cannot listen on 127.0.0.1:${port}: EADDRINUSE\n`);
      assert.deepEqual(agent.lines, [], "refused before it logged anything: no policy was read");
      assert.equal(await attached(), false);
    } finally {
      busy.close();
    }
  });

  test("every other bad flag value: one line, no stack trace, exit 1", async () => {
    for (const args of [
      ["--log-format", "xml"],
      ["--lock-timeout", "soon"],
      ["--netns", "../etc"],
      ["--objects", ""],
      ["--frobnicate"],
    ]) {
      const result = await intercept("agent", folder, ...args);
      assert.equal(result.exitCode, 1, `${args.join(" ")}: ${result.stderr}`);
      assert.equal(result.stderr.trim().split("\n").length, 2, `${args.join(" ")}: ${result.stderr}`);
      assert.doesNotMatch(result.stderr, /\n\s+at /, "no stack trace");
    }
  });

  test("a second agent for the namespace is refused at once; SIGHUP reloads; SIGTERM after a failure still ends it cleanly", async () => {
    const agent = startAgent(folder, "--netns", lab.serverNs);
    await agent.waitFor((l) => l.event === "applied" && /policies applied/.test(String(l.message)));
    assert.ok(await attached());

    const second = startAgent(folder, "--netns", lab.serverNs, "--metrics", "127.0.0.1:0");
    const refused = await second.exited();
    assert.equal(refused.exitCode, 1);
    assert.equal(
      refused.stderr,
      `intercept: another agent (pid ${agent.pid}) already manages network namespace "${lab.serverNs}"\n`,
    );
    assert.deepEqual(
      second.lines.map((l) => l.event),
      [],
      "a refused agent never says it started, nor that it removed anything",
    );

    // One that serves namespaces by --netns-match runs on, refused this one; on SIGTERM it says it removed nothing.
    const matching = startAgent(folder, "--netns-match", lab.serverNs);
    await matching.waitFor(
      (l) =>
        l.event === "error" &&
        l.message ===
          `another agent (pid ${agent.pid}) already manages network namespace "${lab.serverNs}"; trying again in 1 s`,
    );
    const stopping = Date.now();
    assert.equal(await matching.stop("SIGTERM"), 0);
    assert.ok(Date.now() - stopping < 2_000, `SIGTERM ended it in ${Date.now() - stopping} ms`);
    const last = matching.lines.at(-1)!;
    assert.deepEqual([last.event, last.message], ["agent stopped", "no network namespace was held: nothing to remove"]);
    assert.ok(await attached(), "the first agent's datapath is untouched");

    let from = agent.lines.length;
    process.kill(agent.pid, "SIGHUP");
    await agent.waitFor((l) => l.event === "reload", from);
    await agent.waitFor((l) => l.event === "policy change", from);

    // A failure: a foreign filter takes intercept's slot, so every reconcile fails (SIGHUP asks for one).
    const foreign = path.join(scratch, "foreign.o");
    await compileBpf("tests/support/foreign.bpf.c", foreign);
    await loadAndPin(foreign, foreignPins);
    const slot = ["dev", lab.serverLink, "ingress", "pref", "18755", "handle", "1", "bpf"];
    assert.equal((await lab.runInServer(["tc", "filter", "del", ...slot])).exitCode, 0);
    assert.equal(
      (
        await lab.runInServer([
          "tc",
          "filter",
          "add",
          ...slot,
          "direct-action",
          "object-pinned",
          `${foreignPins}/progs/foreign_counter`,
        ])
      ).exitCode,
      0,
    );
    try {
      from = agent.lines.length;
      process.kill(agent.pid, "SIGHUP");
      await agent.waitFor(
        (l) => l.event === "error" && /held by a filter intercept did not create/.test(String(l.message)),
        from,
      );
      assert.equal(await agent.stop("SIGTERM"), 0);
      assert.equal(await attached(), false, "nothing of intercept's is attached");
      // The clsact qdisc intercept made still holds the foreign filter, so it (and its record) stays.
      assert.deepEqual(
        JSON.parse((await intercept("status", "--netns", lab.serverNs, "--json")).stdout).programs,
        [],
        "SIGTERM unpinned the programs",
      );
    } finally {
      await lab.runInServer(["tc", "filter", "del", ...slot]);
      await rm(foreignPins, { recursive: true, force: true });
    }
  });

  test("SIGTERM while waiting for the lock `apply` holds: gone within 2 s, never started, nothing touched", async () => {
    const lock = await lockNamespace(lab.pinKey, { holder: "intercept apply", timeoutMs: 0 });
    try {
      const agent = startAgent(folder, "--netns", lab.serverNs, "--lock-timeout", "60s");
      await agent.waitFor((l) => l.event === "waiting");
      const stopping = Date.now();
      assert.equal(await agent.stop("SIGTERM"), 0);
      assert.ok(Date.now() - stopping < 2_000, `SIGTERM ended it in ${Date.now() - stopping} ms`);
      assert.deepEqual(
        agent.lines.map((l) => l.event),
        ["waiting"],
      );
      assert.equal(await attached(), false);
    } finally {
      await lock.release();
    }
  });

  test("--resync-interval: a filter removed behind the agent's back is put back at the next resync", async () => {
    const agent = startAgent(folder, "--netns", lab.serverNs, "--resync-interval", "1s");
    await agent.waitFor((l) => l.event === "applied" && /policies applied/.test(String(l.message)));
    const from = agent.lines.length;
    assert.equal(
      (
        await lab.runInServer([
          "tc",
          "filter",
          "del",
          "dev",
          lab.serverLink,
          "ingress",
          "pref",
          "18755",
          "handle",
          "1",
          "bpf",
        ])
      ).exitCode,
      0,
    );
    assert.equal(await attached(), false);
    await agent.waitFor((l) => l.event === "applied" && /policies applied/.test(String(l.message)), from, 10_000);
    assert.ok(await attached(), "the resync planned, found the filter missing, and attached it again");
    assert.equal(await agent.stop(), 0);
  });

  test("the policy folder removed and created again: the last good policies stay, then an edit is applied", async () => {
    const agent = startAgent(folder, "--netns", lab.serverNs);
    await agent.waitFor((l) => l.event === "applied" && /policies applied/.test(String(l.message)));
    let from = agent.lines.length;
    await rm(folder, { recursive: true });
    await agent.waitFor((l) => l.event === "error" && /keeping the last good policies/.test(String(l.message)), from);
    assert.ok(await attached(), "the datapath stays while the folder is gone");
    from = agent.lines.length;
    await mkdir(folder);
    await writeFile(path.join(folder, "demo.yaml"), POLICY(9000));
    await agent.waitFor((l) => l.event === "policy change", from);
    from = agent.lines.length;
    await writeFile(path.join(folder, "demo.yaml"), POLICY(9100));
    await agent.waitFor((l) => l.event === "applied" && l.message === "program.demo: replaced", from);
    assert.equal(await agent.stop(), 0);
    await writeFile(path.join(folder, "demo.yaml"), POLICY(9000));
  });

  test("the namespace disappears: the agent removes its pins and exits 1, as a supervisor needs", async () => {
    const doomed = await Lab.create();
    try {
      const agent = startAgent(folder, "--netns", doomed.serverNs);
      await agent.waitFor((l) => l.event === "applied" && /policies applied/.test(String(l.message)));
      assert.ok(existsSync(`/sys/fs/bpf/intercept/${doomed.pinKey}`));
      await doomed.deleteNamespaces();
      const { exitCode } = await agent.exited();
      assert.equal(exitCode, 1);
      assert.ok(
        agent.lines.some(
          (l) => l.event === "error" && l.message === `fatal: network namespace "${doomed.serverNs}" no longer exists`,
        ),
        JSON.stringify(agent.lines.slice(-3)),
      );
      assert.equal(existsSync(`/sys/fs/bpf/intercept/${doomed.pinKey}`), false, "its pins are removed");
    } finally {
      await doomed.destroy();
    }
  });
});
