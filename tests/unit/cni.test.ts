/**
 * CNI mode without root: installing the plugin into a runtime's folders
 * (appended to the chain in use, replaced not doubled, a `.conf` made a
 * conflist, removed from every configuration again), the node table's
 * values taken from the agent's own modules (and none of them repeated in
 * the C plugin), the node programs' sync over the fake datapath (load once,
 * live edits as rule writes, stale versions), and a filter the plugin
 * attached seen as the agent's own kind: no drift, replaced in place.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { installPlugin, uninstallPlugin } from "../../src/cni/install.js";
import { syncNodePrograms, type NodeDatapath } from "../../src/cni/node-programs.js";
import { nodeTable } from "../../src/cni/node-table.js";
import type { ProgramBuilder } from "../../src/toolchain/index.js";
import { InterceptError } from "../../src/errors.js";
import { PinLayout } from "../../src/kernel/pins.js";
import { FILTER_HANDLE, FILTER_PREF } from "../../src/kernel/tc.js";
import { TC_PROGRAM_PREFIX } from "../../src/model/bpf-abi.js";
import { INODE_MARK, NODE_TABLE_FORMAT, NODE_TABLE_FORMAT_VERSION, NODE_TABLE_PATH } from "../../src/model/cni.js";
import { namespaceKeyOf } from "../../src/model/namespace.js";
import { findDrift } from "../../src/reconcile/drift.js";
import { makePlan } from "../../src/reconcile/make-plan.js";
import { testPolicy } from "../support/bpf.js";
import { desired } from "../support/desired.js";
import { FakeDatapath } from "../support/fake-datapath.js";

const scratch = await mkdtemp(path.join(tmpdir(), "intercept-cni-unit-"));
after(() => rm(scratch, { recursive: true, force: true }));

async function folders(name: string) {
  const root = path.join(scratch, name);
  const paths = { binDir: path.join(root, "bin"), confDir: path.join(root, "net.d") };
  await mkdir(paths.confDir, { recursive: true });
  const binary = path.join(root, "built-plugin");
  await writeFile(binary, "#!/bin/true\n");
  return { ...paths, binary };
}

const SETTINGS = { nodeTable: NODE_TABLE_PATH, failurePolicy: "closed" as const };
const BRIDGE = { type: "bridge", bridge: "cni0", ipam: { type: "host-local", subnet: "198.18.9.0/24" } };

describe("installing the plugin, as istio-cni does", () => {
  test("put back by the next install after the network plugin rewrote its configuration without it", async () => {
    const dirs = await folders("rewritten");
    const primary = path.join(dirs.confDir, "10-pods.conflist");
    const original = JSON.stringify({ cniVersion: "1.0.0", name: "pods", plugins: [BRIDGE] });
    await writeFile(primary, original);
    await installPlugin(dirs, SETTINGS, dirs.binary);
    await writeFile(primary, original); // the node's network plugin restarted and wrote its own
    assert.deepEqual(await installPlugin(dirs, SETTINGS, dirs.binary), { conflist: primary, changed: true });
    assert.equal(JSON.parse(await readFile(primary, "utf8")).plugins.length, 2);
  });

  test("appended to the chain of the first configuration in name order, once however often installed", async () => {
    const dirs = await folders("append");
    const primary = path.join(dirs.confDir, "10-pods.conflist");
    const other = path.join(dirs.confDir, "20-other.conflist");
    await writeFile(primary, JSON.stringify({ cniVersion: "1.0.0", name: "pods", plugins: [BRIDGE] }));
    const otherText = JSON.stringify({ cniVersion: "1.0.0", name: "other", plugins: [BRIDGE] });
    await writeFile(other, otherText);
    for (const failurePolicy of ["closed", "open"] as const)
      assert.deepEqual(await installPlugin(dirs, { ...SETTINGS, failurePolicy }, dirs.binary), {
        conflist: primary,
        changed: true,
      });
    const before = await readFile(primary, "utf8");
    assert.deepEqual(
      await installPlugin(dirs, { ...SETTINGS, failurePolicy: "open" }, dirs.binary),
      { conflist: primary, changed: false },
      "installed as wanted already: nothing is written",
    );
    assert.equal(await readFile(primary, "utf8"), before);
    const conflist = JSON.parse(await readFile(primary, "utf8"));
    assert.deepEqual(conflist.plugins, [
      BRIDGE,
      { type: "intercept-cni", nodeTable: NODE_TABLE_PATH, failurePolicy: "open" },
    ]);
    assert.equal(await readFile(other, "utf8"), otherText, "other configurations are left alone");
    assert.equal(await readFile(path.join(dirs.binDir, "intercept-cni"), "utf8"), "#!/bin/true\n");
    assert.deepEqual(
      (await readdir(dirs.confDir)).filter((name) => name.startsWith(".")),
      [],
      "no temporary file is left where a runtime reads configurations",
    );
  });

  test("a single plugin's .conf becomes a .conflist with that plugin first", async () => {
    const dirs = await folders("conf");
    await writeFile(
      path.join(dirs.confDir, "10-pods.conf"),
      JSON.stringify({ cniVersion: "0.4.0", name: "pods", ...BRIDGE }),
    );
    const { conflist: written } = await installPlugin(dirs, SETTINGS, dirs.binary);
    assert.equal(written, path.join(dirs.confDir, "10-pods.conflist"));
    assert.equal(existsSync(path.join(dirs.confDir, "10-pods.conf")), false);
    const conflist = JSON.parse(await readFile(written, "utf8"));
    assert.equal(conflist.name, "pods");
    assert.deepEqual(
      conflist.plugins.map((plugin: { type: string }) => plugin.type),
      ["bridge", "intercept-cni"],
    );
  });

  test("no configuration yet, or no built plugin: one line, and nothing written", async () => {
    const dirs = await folders("empty");
    await assert.rejects(installPlugin(dirs, SETTINGS, dirs.binary), (error: InterceptError) => {
      assert.equal(error.code, "cni-install");
      assert.match(error.message, /no CNI network configuration in .*net\.d/);
      return true;
    });
    await assert.rejects(installPlugin(dirs, SETTINGS, path.join(scratch, "missing")), /npm run build:cni/);
  });

  test("uninstall removes the entry from every configuration and the binary, and is idempotent", async () => {
    const dirs = await folders("uninstall");
    const primary = path.join(dirs.confDir, "10-pods.conflist");
    await writeFile(primary, JSON.stringify({ cniVersion: "1.0.0", name: "pods", plugins: [BRIDGE] }));
    await installPlugin(dirs, SETTINGS, dirs.binary);
    assert.deepEqual(await uninstallPlugin(dirs), [primary]);
    assert.deepEqual(JSON.parse(await readFile(primary, "utf8")).plugins, [BRIDGE]);
    assert.equal(existsSync(path.join(dirs.binDir, "intercept-cni")), false);
    assert.deepEqual(await uninstallPlugin(dirs), [], "nothing left to remove");
  });
});

describe("the node table", () => {
  test("its tc slot, program prefix and registry come from the modules the agent attaches with", () => {
    const table = nodeTable([], [], ["cni-*"]);
    assert.equal(table.format, NODE_TABLE_FORMAT);
    assert.equal(table.formatVersion, NODE_TABLE_FORMAT_VERSION);
    assert.deepEqual(table.filter, { priority: FILTER_PREF, handle: Number(FILTER_HANDLE) });
    assert.equal(table.programPrefix, TC_PROGRAM_PREFIX);
    const inode = 4026532999;
    assert.equal(
      table.qdiscRegistry.pinTemplate.replace(INODE_MARK, String(inode)),
      new PinLayout(namespaceKeyOf(inode)).qdiscs,
    );
    assert.deepEqual(table.namespaces, ["cni-*"]);
  });

  test("the C plugin states only the table's format and default path, as the model does, and none of its values", async () => {
    const sources = await Promise.all(
      ["cni.c", "cni.h", "node_table.c", "node_table.h", "capture.c", "main.c"].map((file) =>
        readFile(path.join("cni", file), "utf8"),
      ),
    );
    const all = sources.join("\n");
    assert.match(all, new RegExp(`#define DEFAULT_NODE_TABLE "${NODE_TABLE_PATH}"`));
    assert.match(all, new RegExp(`#define NODE_TABLE_FORMAT "${NODE_TABLE_FORMAT}"`));
    assert.match(all, new RegExp(`#define NODE_TABLE_FORMAT_VERSION ${NODE_TABLE_FORMAT_VERSION}\\b`));
    for (const value of [String(FILTER_PREF), TC_PROGRAM_PREFIX, "intercept_qdisc", "/sys/fs/bpf"])
      assert.doesNotMatch(all, new RegExp(value), `${value} is read from the node table, never written in C`);
  });
});

describe("the node's programs", () => {
  const builder: ProgramBuilder = {
    identify: async () => "unused",
    object: async (compiled: { policy: { name: string } }) => `/objects/${compiled.policy.name}.o`,
  } as unknown as ProgramBuilder;
  const node = (fake: FakeDatapath): NodeDatapath => ({
    observeVersions: async () => (await fake.observe()).programs,
    programPin: (ref, hook) => `/pins/node/${ref.policy}/${ref.version}/progs/${hook}`,
    loadProgram: (load) => fake.loadProgram(load),
    unloadProgram: (ref) => fake.unloadProgram(ref),
    setRule: (ref, index, enabled) => fake.setRule(ref, index, enabled),
  });

  test("loaded once; a live edit is a rule write on the loaded version; a policy gone leaves its version stale", async () => {
    const fake = new FakeDatapath();
    const web = desired({ ...testPolicy("web", [{ originalPort: 8000, port: 9000 }]), namespaces: ["cni-*"] });
    const first = await syncNodePrograms(node(fake), [web], builder);
    assert.deepEqual(first.loaded, [web.program]);
    assert.equal(first.attachments.length, 1);
    assert.deepEqual(first.attachments[0]!.namespaces, ["cni-*"]);
    assert.deepEqual(first.attachments[0]!.programs, {
      ingress: `/pins/node/web/${web.program.version}/progs/ingress`,
    });
    assert.equal(typeof first.attachments[0]!.programIds.ingress, "number");

    const again = await syncNodePrograms(node(fake), [web], builder);
    assert.deepEqual([again.loaded, again.ruleWrites], [[], 0], "nothing to do: no load, no write");

    const disabled = desired(testPolicy("web", [{ originalPort: 8000, port: 9000, enabled: false }]));
    assert.equal(disabled.program.version, web.program.version, "enabled is not part of the program");
    const edit = await syncNodePrograms(node(fake), [disabled], builder);
    assert.deepEqual([edit.loaded, edit.ruleWrites], [[], 1]);
    assert.deepEqual((await fake.observe()).programs[0]!.enabled, [false]);

    const gone = await syncNodePrograms(node(fake), [], builder);
    assert.deepEqual(gone.attachments, []);
    assert.deepEqual(gone.stale, [web.program]);
  });

  test("policies that select one interface together get their composition's program, live-edited with them", async () => {
    const fake = new FakeDatapath();
    const web = desired(testPolicy("web", [{ originalPort: 8000, port: 9000 }]));
    const db = desired(testPolicy("db", [{ originalPort: 5432, port: 6432 }]));
    const first = await syncNodePrograms(node(fake), [web, db], builder);
    assert.deepEqual(
      first.loaded.map((ref) => ref.policy),
      ["web", "db", "db+web"],
    );
    assert.equal(first.compositions.length, 1);
    const [both] = first.compositions;
    assert.deepEqual([both!.name, both!.policies], ["db+web", ["db", "web"]]);
    assert.deepEqual(Object.keys(both!.programs), ["ingress"]);
    assert.match(both!.programs.ingress!, /^\/pins\/node\/db\+web\//);
    const ids = [...first.attachments, ...first.compositions].map((entry) => entry.programIds.ingress);
    assert.equal(new Set(ids).size, 3, "three programs, each its own id");

    const off = desired(testPolicy("web", [{ originalPort: 8000, port: 9000, enabled: false }]));
    const edit = await syncNodePrograms(node(fake), [off, db], builder);
    assert.deepEqual([edit.loaded, edit.ruleWrites], [[], 2], "web's own switch and its slot in db+web");
    const composed = (await fake.observe()).programs.find((p) => p.ref.policy === "db+web")!;
    assert.deepEqual(composed.enabled, [true, false], "db's interceptor first (composition order), then web's");

    const alone = await syncNodePrograms(node(fake), [off], builder);
    assert.deepEqual(alone.compositions, []);
    assert.deepEqual(alone.stale.map((ref) => ref.policy).sort(), ["db", "db+web"]);
  });

  test("a composition that cannot be built is left out, with why; the policies' own programs are not", async () => {
    const fake = new FakeDatapath();
    const web = desired(testPolicy("web", [{ originalPort: 8000, port: 9000 }]));
    const db = desired(testPolicy("db", [{ originalPort: 5432, port: 6432 }]));
    const noClang: ProgramBuilder = {
      ...builder,
      object: async (compiled: { policy: { name: string } }) => {
        if (compiled.policy.name.includes("+")) throw new InterceptError("tool-missing", "clang not found");
        return `/objects/${compiled.policy.name}.o`;
      },
    } as unknown as ProgramBuilder;
    const synced = await syncNodePrograms(node(fake), [web, db], noClang);
    assert.deepEqual(
      synced.attachments.map((entry) => entry.policy),
      ["web", "db"],
    );
    assert.deepEqual(synced.compositions, []);
    assert.deepEqual(synced.skipped, [{ name: "db+web", reason: "clang not found" }]);
    assert.deepEqual((await fake.observe()).programs.map((p) => p.ref.policy).sort(), ["db", "web"]);
  });
});

describe("a filter the plugin attached", () => {
  test("is no drift, and the plan replaces it in place with the namespace's own version", async () => {
    const fake = new FakeDatapath({ name: "cni-1" });
    fake.addLink("eth0");
    const web = desired(testPolicy("web", [{ originalPort: 8000, port: 9000 }]));
    const observed = await fake.observe();
    const nodeProgram = 4242;
    const links = observed.links.map((link) =>
      link.name === "eth0" ? { ...link, clsact: true, filters: { ingress: nodeProgram } } : link,
    );
    const unknown = { ...observed, links };
    assert.deepEqual(
      findDrift(unknown).map((drift) => drift.kind),
      ["unknown-program"],
      "without the node table, an unknown program",
    );
    const withNode = { ...unknown, nodePrograms: new Map([[nodeProgram, web.program]]) };
    assert.deepEqual(findDrift(withNode), []);
    const plan = makePlan([web], withNode);
    const update = plan.changes.find((change) => change.type === "attachment.update");
    assert.ok(update, "an in-place update, not a create beside it");
    assert.match(update.reason, /^switch from the node's program \(attached by the CNI plugin\) to web@/);
  });
});
