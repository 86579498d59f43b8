/**
 * intercept-cni against the CNI spec's conventions, run as a runtime runs
 * it (CNI_* environment, configuration on stdin) in namespaces this test
 * creates, and its interplay with the agent that feeds it:
 * - `agent --cni` loads the node's programs, writes the node table and
 *   chains the plugin into the configuration in use; then it is killed
 *   (kill -9), its programs left loaded, as in an upgrade gone wrong;
 * - ADD (prevResult passed through unchanged, the node's program in the
 *   agent's tc slot, its qdisc recorded as intercept's), CHECK, DEL twice,
 *   VERSION, a missing prevResult, a bad configuration, a netns gone on
 *   DEL, a namespace the agent does not serve, a foreign filter in the slot;
 * - an interface two policies select runs the node's program of their
 *   composition, and a table that lists none fails the ADD with code 101;
 * - pods of several namespaces run the very same program (`bpftool net`);
 * - the plugin-attached filter is not drift, and an agent started again
 *   replaces it in place with the namespace's own version; a live edit
 *   reaches the node's rule switches; a stop without --keep takes the
 *   plugin out of the chain and removes the table, the node's programs and
 *   the qdisc the plugin made.
 * Everything is removed in `after`, even on failure.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { execa } from "execa";
import { AgentProcess } from "../../lab/agent-process.js";
import { NamespaceSet } from "../../lab/namespaces.js";
import { intercept } from "../../lab/network.js";
import { compileBpf } from "../../src/toolchain/clang.js";
import { PIN_ROOT } from "../../src/kernel/pins.js";
import { NODE_TABLE_PATH, type NodeTable } from "../../src/model/cni.js";

const namespaces = NamespaceSet.unique("cn");
const p = namespaces.prefix;
const LINK = "a";
const PREV_RESULT = {
  cniVersion: "1.0.0",
  interfaces: [{ name: LINK, sandbox: "/var/run/netns/x" }],
  ips: [{ address: "198.18.200.2/24", interface: 0 }],
  dns: {},
};
let scratch: string;
let policies: string;
let binDir: string;
let confDir: string;
let agent: AgentProcess | undefined;

const agentArgs = () => [
  policies,
  "--netns-match",
  `${p}*`,
  "--cni",
  "--cni-bin-dir",
  binDir,
  "--cni-conf-dir",
  confDir,
];

interface PluginRun {
  exitCode: number | undefined;
  stdout: string;
  json: Record<string, unknown> | undefined;
}

/** Runs the installed plugin as a runtime would. */
async function plugin(
  command: string,
  netns: string,
  config: unknown = { cniVersion: "1.0.0", name: "test", type: "intercept-cni", prevResult: PREV_RESULT },
  ifname = LINK,
): Promise<PluginRun> {
  const result = await execa(path.join(binDir, "intercept-cni"), [], {
    reject: false,
    input: typeof config === "string" ? config : JSON.stringify(config),
    env: {
      CNI_COMMAND: command,
      CNI_CONTAINERID: `${p}container`,
      CNI_NETNS: netns,
      CNI_IFNAME: ifname,
      CNI_PATH: binDir,
    },
  });
  const stdout = String(result.stdout);
  return { exitCode: result.exitCode, stdout, json: stdout.trim() ? JSON.parse(stdout) : undefined };
}

const netnsPath = (name: string) => `/var/run/netns/${name}`;

/** The program ids of our slot's filters on @hook of the test link in @name. */
async function slotPrograms(name: string, hook = "ingress", link = LINK): Promise<number[]> {
  const { stdout } = await execa("nsenter", [
    `--net=${netnsPath(name)}`,
    "tc",
    "-j",
    "filter",
    "show",
    "dev",
    link,
    hook,
  ]);
  return (JSON.parse(stdout) as { pref: number; options?: { handle?: string; prog?: { id: number } } }[])
    .filter((f) => f.pref === 18755 && f.options?.handle === "0x1" && f.options.prog)
    .map((f) => f.options!.prog!.id);
}

/** Destroys what intercept has in namespace @name, removes its pin folder while the inode is still its own, then deletes it. */
async function removeNamespace(name: string): Promise<void> {
  if (!existsSync(netnsPath(name))) return;
  await intercept("destroy", "--netns", name, "--yes");
  await rm(path.join(PIN_ROOT, await namespaces.key(name)), { recursive: true, force: true });
  await execa("ip", ["netns", "del", name]);
}

/** The programs on each tc hook of namespace @name's links, as `bpftool net` lists them there. */
async function netPrograms(name: string): Promise<{ devname: string; kind: string; id: number }[]> {
  const { stdout } = await execa("nsenter", [`--net=${netnsPath(name)}`, "bpftool", "-j", "net", "show"]);
  return (JSON.parse(stdout) as { tc: { devname: string; kind: string; id: number }[] }[])[0]!.tc;
}

async function nodeTable(): Promise<NodeTable> {
  return JSON.parse(await readFile(NODE_TABLE_PATH, "utf8")) as NodeTable;
}

/** The node table's entry of policy @policy. */
async function attachmentOf(policy = "proxy") {
  const entry = (await nodeTable()).attachments.find((attachment) => attachment.policy === policy);
  assert.ok(entry, `the node table lists ${policy}`);
  return entry;
}

before(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), `${p}cni-`));
  policies = path.join(scratch, "policies");
  binDir = path.join(scratch, "bin");
  confDir = path.join(scratch, "net.d");
  await mkdir(policies);
  await mkdir(confDir);
  await writeFile(path.join(policies, "proxy.yaml"), "interceptors:\n  - { originalPort: 8000, port: 9000 }\n");
  // Selects the veth's other end, `b`, which proxy (every interface) selects too: a composition.
  await writeFile(
    path.join(policies, "other.yaml"),
    "interfaces: { include: [b] }\ninterceptors:\n  - { originalPort: 5432, port: 6432 }\n",
  );
  await writeFile(
    path.join(confDir, "10-pods.conflist"),
    JSON.stringify({ cniVersion: "1.0.0", name: "pods", plugins: [{ type: "ptp", ipam: { type: "static" } }] }),
  );
  agent = new AgentProcess(agentArgs());
  await agent.waitFor((l) => l.event === "cni" && /plugin installed/.test(String(l.message)));
  agent.kill(); // kill -9: the node's programs, the table and the plugin stay
  await agent.exited();
  agent = undefined;
});

after(async () => {
  if (agent) await agent.stop(); // a stop without --keep removes what CNI mode made
  // After a failure before that stop: what CNI mode made goes as the uninstall DaemonSet removes it.
  await intercept("cni", "uninstall", "--cni-bin-dir", binDir, "--cni-conf-dir", confDir);
  for (const name of namespaces.made) await removeNamespace(name);
  await rm(scratch, { recursive: true, force: true });
});

describe("intercept-cni and the CNI spec", { concurrency: false }, () => {
  test("the agent chained the plugin after the configuration's plugins", async () => {
    const conflist = JSON.parse(await readFile(path.join(confDir, "10-pods.conflist"), "utf8"));
    assert.deepEqual(conflist.plugins[1], {
      type: "intercept-cni",
      nodeTable: NODE_TABLE_PATH,
      failurePolicy: "closed",
    });
  });

  test("VERSION lists the spec versions it speaks", async () => {
    const run = await plugin("VERSION", "");
    assert.equal(run.exitCode, 0);
    assert.deepEqual(run.json, { cniVersion: "1.0.0", supportedVersions: ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] });
  });

  test("ADD attaches the node's program in the agent's slot, records its qdisc, and passes prevResult through", async () => {
    const name = namespaces.name(0);
    await namespaces.create(name);
    const run = await plugin("ADD", netnsPath(name));
    assert.equal(run.exitCode, 0, run.stdout);
    assert.deepEqual(run.json, PREV_RESULT);
    assert.deepEqual(await slotPrograms(name), [(await attachmentOf()).programIds.ingress]);
    const registry = path.join(PIN_ROOT, await namespaces.key(name), "qdiscs");
    const { stdout } = await execa("bpftool", ["-j", "map", "dump", "pinned", registry]);
    assert.equal((JSON.parse(stdout) as unknown[]).length, 1, "the clsact qdisc the plugin made is recorded");
  });

  test("CHECK passes while the capture is in place, and fails with a code once it is not", async () => {
    const name = namespaces.name(0);
    assert.equal((await plugin("CHECK", netnsPath(name))).exitCode, 0);
    await execa("nsenter", [
      `--net=${netnsPath(name)}`,
      "tc",
      "filter",
      "del",
      "dev",
      LINK,
      "ingress",
      "pref",
      "18755",
    ]);
    const run = await plugin("CHECK", netnsPath(name));
    assert.equal(run.exitCode, 1);
    assert.equal(run.json?.code, 102);
    assert.equal((await plugin("ADD", netnsPath(name))).exitCode, 0, "ADD again puts it back");
    assert.equal((await slotPrograms(name)).length, 1);
  });

  test("DEL removes the filter and is idempotent; DEL of a namespace already gone succeeds", async () => {
    const name = namespaces.name(1);
    await namespaces.create(name);
    assert.equal((await plugin("ADD", netnsPath(name))).exitCode, 0);
    for (const round of [1, 2]) {
      const run = await plugin("DEL", netnsPath(name));
      assert.equal(run.exitCode, 0, `DEL #${round}: ${run.stdout}`);
      assert.deepEqual(await slotPrograms(name), []);
    }
    await removeNamespace(name);
    const gone = await plugin("DEL", netnsPath(name));
    assert.equal(gone.exitCode, 0, gone.stdout);
    assert.equal((await plugin("DEL", "")).exitCode, 0, "DEL without CNI_NETNS (the runtime lost it)");
  });

  test("errors are JSON on stdout with CNI codes: no prevResult, bad JSON, a bad command, an old or no version, no node table", async () => {
    const name = namespaces.name(0);
    const missing = await plugin("ADD", netnsPath(name), { cniVersion: "1.0.0", name: "t", type: "intercept-cni" });
    assert.equal(missing.exitCode, 1);
    assert.equal(missing.json?.code, 7);
    const bad = await plugin("ADD", netnsPath(name), '{"cniVersion": "1.0.0",');
    assert.equal(bad.exitCode, 1);
    assert.equal(bad.json?.code, 6);
    const command = await plugin("FROB", netnsPath(name));
    assert.equal(command.json?.code, 4);
    const old = await plugin("ADD", netnsPath(name), { cniVersion: "0.2.0", name: "t", type: "intercept-cni" });
    assert.equal(old.json?.code, 1);
    const unversioned = await plugin("ADD", netnsPath(name), { name: "t", type: "intercept-cni" });
    assert.equal(unversioned.json?.code, 7);
    const noTable = await plugin("ADD", netnsPath(name), {
      cniVersion: "1.0.0",
      name: "t",
      type: "intercept-cni",
      nodeTable: path.join(scratch, "no-such-table.json"),
      prevResult: PREV_RESULT,
    });
    assert.equal(noTable.exitCode, 1, "fail closed: no table, no pod");
    assert.equal(noTable.json?.code, 11, "try again later: the agent has not written the table yet");
    for (const run of [missing, bad, command, old, unversioned, noTable]) assert.equal(typeof run.json?.msg, "string");
  });

  test("a namespace the agent does not serve is passed through untouched", async () => {
    const name = `${p.slice(0, -1)}_other`;
    namespaces.made.add(name);
    await namespaces.create(name);
    const run = await plugin("ADD", netnsPath(name));
    assert.equal(run.exitCode, 0);
    assert.deepEqual(run.json, PREV_RESULT);
    assert.deepEqual(await slotPrograms(name), []);
  });

  test("a filter intercept did not make in its slot fails the ADD (fail closed)", async () => {
    const name = namespaces.name(2);
    await namespaces.create(name);
    const ns = `--net=${netnsPath(name)}`;
    const foreign = path.join(scratch, "foreign.o");
    await compileBpf("tests/support/foreign.bpf.c", foreign);
    await execa("nsenter", [ns, "tc", "qdisc", "add", "dev", LINK, "clsact"]);
    await execa("nsenter", [
      ns,
      ...["tc", "filter", "add", "dev", LINK, "ingress", "pref", "18755", "handle", "1", "bpf", "direct-action"],
      ...["object-file", foreign, "section", "tc"],
    ]);
    const run = await plugin("ADD", netnsPath(name));
    assert.equal(run.exitCode, 1);
    assert.equal(run.json?.code, 100);
    assert.match(String(run.json?.msg), /slot taken/);
    assert.equal(existsSync(path.join(PIN_ROOT, await namespaces.key(name))), false, "a failed ADD leaves no pins");
    await removeNamespace(name);
  });

  test("an interface two policies select runs their composition's node program; a table without it fails with 101", async () => {
    const name = namespaces.name(3);
    await namespaces.create(name);
    const table = await nodeTable();
    const composition = table.compositions.find((entry) => entry.name === "other+proxy");
    assert.ok(composition, JSON.stringify(table.compositions));
    assert.deepEqual(composition.policies, ["other", "proxy"]);
    const run = await plugin("ADD", netnsPath(name), undefined, "b");
    assert.equal(run.exitCode, 0, run.stdout);
    assert.deepEqual(await slotPrograms(name, "ingress", "b"), [composition.programIds.ingress]);
    assert.equal((await plugin("CHECK", netnsPath(name), undefined, "b")).exitCode, 0);
    const status = await intercept("status", "--netns", name, policies, "--json");
    assert.deepEqual(JSON.parse(status.stdout).drift, [], "the composition's node program is ours too");

    const older = path.join(scratch, "table-without-compositions.json");
    await writeFile(older, JSON.stringify({ ...table, compositions: undefined }));
    const config = { cniVersion: "1.0.0", name: "t", type: "intercept-cni", nodeTable: older, prevResult: PREV_RESULT };
    const conflict = await plugin("ADD", netnsPath(name), config, "b");
    assert.equal(conflict.exitCode, 1, "fail closed");
    assert.equal(conflict.json?.code, 101);
    assert.match(String(conflict.json?.details), /selected by policies other, proxy/);
    assert.equal((await plugin("ADD", netnsPath(name), config, LINK)).exitCode, 0, "a only proxy selects");
    assert.equal((await plugin("DEL", netnsPath(name), undefined, "b")).exitCode, 0);
    assert.deepEqual(await slotPrograms(name, "ingress", "b"), []);
    assert.equal((await plugin("ADD", netnsPath(name), undefined, "b")).exitCode, 0, "left for the agent, below");
  });

  test("pods the plugin captured run one program, loaded once for the node: one id in every namespace", async () => {
    const pods = [namespaces.name(4), namespaces.name(5)];
    for (const name of pods) {
      await namespaces.create(name);
      assert.equal((await plugin("ADD", netnsPath(name))).exitCode, 0);
    }
    const expected = (await attachmentOf()).programIds.ingress;
    for (const name of [namespaces.name(0), ...pods])
      assert.deepEqual(
        (await netPrograms(name)).map((entry) => [entry.devname, entry.kind, entry.id]),
        [[LINK, "clsact/ingress", expected]],
        `bpftool net in ${name}`,
      );
    for (const name of pods) await removeNamespace(name);
  });

  test("the plugin's filter is not drift; a new agent takes it over in place, and a live edit reaches the node's maps", async () => {
    const name = namespaces.name(0);
    const before = await intercept("status", "--netns", name, policies, "--json");
    assert.deepEqual(JSON.parse(before.stdout).drift, [], before.stdout);
    const nodeProgram = (await attachmentOf()).programIds.ingress!;
    agent = new AgentProcess(agentArgs());
    const update = await agent.waitFor(
      (l) => l.event === "applied" && l.namespace === name && l.type === "attachment.update",
    );
    assert.match(String(update.message), /attachment\.a: updated/);
    // Load once: the namespace's own version is the node's program, pinned in its folder with a slot of its own.
    const [own] = await slotPrograms(name);
    assert.equal(own, nodeProgram, "the namespace shares the node's program");
    assert.ok(existsSync(path.join(PIN_ROOT, await namespaces.key(name), "proxy")), "pinned in the namespace's folder");
    const composed = namespaces.name(3);
    const composedNode = (await nodeTable()).compositions.find((entry) => entry.name === "other+proxy")!;
    await agent.waitFor(
      (l) =>
        l.event === "applied" &&
        l.namespace === composed &&
        l.type === "attachment.update" &&
        /attachment\.b: updated/.test(String(l.message)),
    );
    const [composedOwn] = await slotPrograms(composed, "ingress", "b");
    assert.equal(composedOwn, composedNode.programIds.ingress, "the composition's node program, shared likewise");
    assert.equal(agent.lines.filter((l) => l.event === "error").length, 0);

    await writeFile(
      path.join(policies, "proxy.yaml"),
      "interceptors:\n  - { originalPort: 8000, port: 9000, enabled: false }\n",
    );
    // proxy's own switch, and its slot in the composition other+proxy: written by the node's sync, or
    // already by the namespaces' reconciles, since they share the node's maps (load once); the sync logs
    // only what it wrote itself, so the barrier is the node's switch itself, read until it is off.
    const entry = await attachmentOf();
    const rules = path.join(path.dirname(path.dirname(entry.programs.ingress!)), "maps", "rule_state");
    const enabled = async () => {
      const { stdout } = await execa("bpftool", ["-j", "map", "dump", "pinned", rules]);
      return (JSON.parse(stdout) as { formatted: { value: { enabled: number } } }[])[0]!.formatted.value.enabled;
    };
    for (const deadline = Date.now() + 15_000; (await enabled()) !== 0 && Date.now() < deadline; )
      await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(await enabled(), 0, "the live edit reached the node's map");
  });

  test("a stop without --keep takes the plugin out of the chain and removes its table, programs and qdisc", async () => {
    const name = namespaces.name(0);
    assert.equal(await agent!.stop(), 0);
    agent = undefined;
    const conflist = JSON.parse(await readFile(path.join(confDir, "10-pods.conflist"), "utf8"));
    assert.deepEqual(
      conflist.plugins.map((plugin: { type: string }) => plugin.type),
      ["ptp"],
    );
    assert.equal(existsSync(path.join(binDir, "intercept-cni")), false);
    assert.equal(existsSync(NODE_TABLE_PATH), false);
    assert.equal(existsSync(path.join(PIN_ROOT, "node")), false);
    const { stdout } = await execa("nsenter", [`--net=${netnsPath(name)}`, "tc", "qdisc", "show", "dev", LINK]);
    assert.doesNotMatch(stdout, /clsact/);
  });
});
