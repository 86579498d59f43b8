/**
 * What only the kernel can show of the agent's watchers, in namespaces and
 * a cgroup this test creates with names of its own: one link watcher
 * process (`ip -o monitor link all-nsid`) serves every namespace, a link
 * made later in any of them is attached, and a `kill -9` of the agent
 * leaves no watcher behind; a captured cgroup removed and made again gets
 * its programs back from the cgroup's own event (no resync, no link
 * event), and a pod's cgroup under a captured one has them as it is made.
 * Namespace ids, given by the agent's own rtnetlink requests, are the ones
 * `ip netns list` shows.
 * Everything is removed in `after`, on failure too.
 */
import "../support/temporary-cache.js";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, readlink, rm, rmdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { execa } from "execa";
import { AgentProcess } from "../../lab/agent-process.js";
import { LabCgroup } from "../../lab/cgroup.js";
import { LINKS, NamespaceSet } from "../../lab/namespaces.js";
import { numberNamespaces } from "../../src/kernel/links.js";
import { surveyLinks } from "../../src/kernel/survey.js";
import { InterceptError } from "../../src/errors.js";

const namespaces = NamespaceSet.unique("wa");
const p = namespaces.prefix;
const keys = new Set<string>();
let scratch: string;
let cgroup: LabCgroup;
const agents: AgentProcess[] = [];

before(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), "intercept-watcher-"));
  cgroup = await LabCgroup.create(["app"]);
});

after(async () => {
  for (const agent of agents) agent.kill();
  await Promise.all(agents.map((agent) => agent.exited()));
  await namespaces.remove(keys);
  await cgroup?.destroy();
  await rm(scratch, { recursive: true, force: true });
});

async function policyDir(name: string, text: string): Promise<string> {
  const dir = path.join(scratch, name);
  await mkdir(dir);
  await writeFile(path.join(dir, `${name}.yaml`), text);
  return dir;
}

const applied = (name: string) => (l: Record<string, unknown>) =>
  l.event === "applied" && l.namespace === name && /^policies applied/.test(String(l.message));

/** The processes @pid runs (its children), with their command lines. */
async function children(pid: number): Promise<{ pid: number; command: string }[]> {
  const listed = await execa("pgrep", ["-P", String(pid)], { reject: false });
  const pids = String(listed.stdout).split("\n").filter(Boolean).map(Number);
  const found = await Promise.all(
    pids.map(async (child) => {
      const command = await readFile(`/proc/${child}/cmdline`, "utf8").catch(() => undefined); // exited since
      return command === undefined ? [] : [{ pid: child, command: command.split("\0").filter(Boolean).join(" ") }];
    }),
  );
  return found.flat();
}

/** Resolves once process @pid is gone; fails after @ms (a bound on an event, not a guess at its timing). */
async function gone(pid: number, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (existsSync(`/proc/${pid}`)) {
    assert.ok(Date.now() < deadline, `process ${pid} is still there`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Our cgroup programs on the cgroup at @dir (bpftool's names: out_*), attached there or @effective (inherited). */
async function ourPrograms(dir: string, effective = false): Promise<string[]> {
  const shown = await execa("bpftool", ["-j", "cgroup", "show", dir, ...(effective ? ["effective"] : [])]);
  const programs = JSON.parse(shown.stdout || "[]") as { name?: string }[];
  return programs.map((program) => program.name ?? "").filter((name) => name.startsWith("out_"));
}

describe("one link watcher for every namespace", { concurrency: false }, () => {
  let agent: AgentProcess;

  test("three namespaces, one watcher process; a link made later in one of them is attached", async () => {
    const names = [0, 1, 2].map((index) => namespaces.name(index));
    for (const name of names) {
      await namespaces.create(name);
      keys.add(await namespaces.key(name));
    }
    const policies = await policyDir("demo", "interceptors:\n  - { originalPort: 8000, port: 9000 }\n");
    agent = new AgentProcess([policies, "--netns-match", `${p}*`, "--resync-interval", "0"]);
    agents.push(agent);
    for (const name of names) await agent.waitFor(applied(name));
    const helpers = await children(agent.pid);
    assert.deepEqual(
      helpers.map((helper) => helper.command),
      ["ip -o monitor link all-nsid"],
      "one watcher, however many namespaces",
    );
    const from = agent.lines.length;
    await execa("ip", ["-n", names[1]!, "link", "add", "c", "type", "veth", "peer", "name", "d"]);
    await agent.waitFor((l) => l.event === "link seen" && l.link === "c" && l.namespace === names[1], from);
    await agent.waitFor(applied(names[1]!), from);
    assert.ok(await namespaces.attached(names[1]!, "c"), "the new link has our filter");
    assert.ok(
      !agent.lines.slice(from).some((l) => l.event === "applied" && l.namespace !== names[1]),
      "only its namespace was reconciled",
    );
  });

  test("kill -9 of the agent leaves no watcher behind", async () => {
    const [watcher] = await children(agent.pid);
    assert.ok(watcher, "the watcher runs");
    agent.kill();
    await agent.exited();
    await gone(watcher.pid); // the kernel's parent-death signal
  });
});

describe("namespace ids given in the agent's own process (rtnetlink, no `ip`)", { concurrency: false }, () => {
  test("an id as `ip netns list` shows it; asked again, the same; a namespace deleted is absent", async () => {
    const name = `${p}id`;
    await namespaces.create(name);
    const first = await numberNamespaces([name]);
    const id = first.get(name);
    assert.ok(id !== undefined && id >= 0, "it was given an id");
    const listed = JSON.parse((await execa("ip", ["-j", "netns", "list"])).stdout) as { name: string; id?: number }[];
    assert.equal(listed.find((entry) => entry.name === name)?.id, id, "the id ip sees");
    for (const entry of listed) if (entry.id !== undefined) assert.equal(first.get(entry.name), entry.id, entry.name);
    assert.equal((await numberNamespaces([name])).get(name), id, "already numbered: no failure, the same id");
    await namespaces.delete(name);
    const later = await numberNamespaces([name]);
    assert.equal(later.has(name), false, "gone: absent, not an error");
  });
});

describe("a namespace's links and qdiscs read in the agent's own process (rtnetlink, no `ip` or `tc`)", () => {
  test("the links `ip -j link` shows, and those with clsact or ingress; the process stays in its namespace", async () => {
    const name = `${p}sv`;
    await namespaces.create(name); // lo and a veth pair: three links, more than one datagram of the dump
    const inName = (command: string[]) => execa("nsenter", [`--net=/var/run/netns/${name}`, ...command]);
    await inName(["tc", "qdisc", "add", "dev", LINKS[0], "clsact"]);
    await inName(["tc", "qdisc", "add", "dev", LINKS[1], "root", "pfifo"]);
    const own = await readlink("/proc/thread-self/ns/net");
    const survey = await surveyLinks({ name });
    assert.equal(await readlink("/proc/thread-self/ns/net"), own, "back in its own namespace");
    const shown = JSON.parse((await inName(["ip", "-j", "link", "show"])).stdout) as {
      ifindex: number;
      ifname: string;
      link_type: string;
    }[];
    assert.deepEqual(
      survey.links.map((link) => [link.ifindex, link.name, link.linkType, link.loopback]),
      shown.map((link) => [link.ifindex, link.ifname, link.link_type, link.link_type === "loopback"]),
    );
    assert.deepEqual([...survey.filterHolders], [LINKS[0]], "a root qdisc holds no ingress or egress filter");
    await namespaces.delete(name);
    await assert.rejects(
      surveyLinks({ name }),
      (error) => error instanceof InterceptError && error.code === "netns-not-found",
    );
  });
});

describe("outbound follows cgroups", { concurrency: false }, () => {
  let agent: AgentProcess;
  const name = `${p}cg`;

  test("a captured cgroup removed and made again gets its programs back from its own event", async (t) => {
    await namespaces.create(name);
    keys.add(await namespaces.key(name));
    const policies = await policyDir(
      "app",
      `outbound:\n  cgroups: ["${cgroup.path("app")}"]\n  exempt: { uids: [1337] }\n  rules: [{ originalPort: 5432, port: 15001 }]\n`,
    );
    agent = new AgentProcess([policies, "--netns", name, "--resync-interval", "0"]);
    agents.push(agent);
    await agent.waitFor(applied(name));
    const dir = cgroup.directory("app");
    assert.equal((await ourPrograms(dir)).length, 4);

    const from = agent.lines.length;
    await rmdir(dir);
    await mkdir(dir);
    const made = performance.now();
    const done = await agent.waitFor(applied(name), from);
    t.diagnostic(`cgroup made again → the agent's apply done in ${((done.receivedAt as number) - made).toFixed(0)} ms`);
    assert.equal((await ourPrograms(dir)).length, 4, "back on the cgroup made again");
    assert.ok(
      !agent.lines.slice(from).some((l) => l.event === "link seen" || l.event === "policy change"),
      "woken by the cgroup, not by a link or a file",
    );
  });

  test("a pod's cgroup under a captured one has the programs as it is made, and again when made again", async () => {
    const pod = path.join(cgroup.directory("app"), "pod");
    await mkdir(pod);
    try {
      assert.equal((await ourPrograms(pod, true)).length, 4, "inherited from the captured parent");
      await rmdir(pod);
      await mkdir(pod);
      assert.equal((await ourPrograms(pod, true)).length, 4, "inherited again");
    } finally {
      await rmdir(pod);
    }
  });

  test("SIGTERM removes the programs", async () => {
    assert.equal(await agent.stop(), 0);
    assert.deepEqual(await ourPrograms(cgroup.directory("app")), []);
  });
});
