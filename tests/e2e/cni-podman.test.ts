/**
 * CNI mode with a real container runtime: podman (runc) running its CNI
 * chain from a conflist, with intercept-cni installed into it by the
 * agent's own CNI module (src/agent/cni.ts: node programs loaded once, the
 * node table written, the binary and conflist entry installed). No agent
 * process serves the pods' namespaces: the state is that of an agent
 * killed with its programs left loaded. A client polls a pod's fixed
 * address from before the pod exists:
 * - with the plugin in the chain, its very first answer comes from the proxy;
 * - on a network without the plugin (the control), from the app;
 * - fail closed: a pod whose capture cannot be set up does not start, and
 *   podman shows the CNI error; fail open: it starts, and the plugin says so.
 * Everything (containers, networks, bridges, pins, files) is removed in `after`.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { execa } from "execa";
import { firstAnswer, PodmanLab, type PodmanNetwork } from "../../lab/podman.js";
import { CniMode } from "../../src/agent/cni.js";
import type { Logger } from "../../src/agent/log.js";
import { readPolicySet } from "../../src/agent/policy-watcher.js";
import { PIN_ROOT } from "../../src/kernel/pins.js";
import type { NodeTable } from "../../src/model/cni.js";
import { namespaceKeyOf } from "../../src/model/namespace.js";

const POD_ADDRESS_HOST = 5;
/** The pod: a proxy on 9000, then the app on 8000, each answering its own name. */
const POD = ["/bin/sh", "-c", "httpd -p 9000 -h /www/proxy && exec httpd -f -p 8000 -h /www/app"];

let lab: PodmanLab;
let scratch: string;
let cni: CniMode;
let captured: PodmanNetwork;
const logged: string[] = [];
/** The pin folders of captured pods' namespaces: the plugin records its qdisc there, and no agent serves them. */
const podPins: string[] = [];
const log: Logger = (event, message) => logged.push(`${event}: ${message}`);

before(async () => {
  lab = await PodmanLab.create();
  scratch = await mkdtemp(path.join(tmpdir(), `${lab.prefix}-policies-`));
  const policy = path.join(scratch, "proxy.yaml");
  await writeFile(policy, "interceptors:\n  - { originalPort: 8000, port: 9000 }\n");
  captured = await lab.network(); // the first configuration in name order: the one the plugin is chained into
  // podman's CNI backend names pod namespaces netns-<uuid>. Only this test's networks run the plugin.
  cni = new CniMode(
    {
      binDir: lab.binDir,
      confDir: lab.confDir,
      failurePolicy: "closed",
      nodeTable: path.join(lab.dir, "node-table.json"),
    },
    ["netns-*"],
    log,
  );
  await cni.start(await readPolicySet([policy], undefined));
});

after(async () => {
  // While the pods still hold their namespaces: an inode freed later may be another namespace's.
  for (const dir of podPins) await rm(dir, { recursive: true, force: true });
  await lab?.destroy();
  await cni?.stop(false);
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** Starts polling the pod address of @network, runs the pod, and resolves with the first answer and the run. */
async function podFirstAnswer(network: PodmanNetwork) {
  const address = lab.address(network, POD_ADDRESS_HOST);
  const answer = firstAnswer(address, 8000, AbortSignal.timeout(30_000));
  const run = await lab.run(network, address, POD);
  assert.equal(run.exitCode, 0, `podman run failed: ${run.stderr}`);
  podPins.push(path.join(PIN_ROOT, namespaceKeyOf((await stat(await lab.sandbox(run.name))).ino)));
  return { answer: await answer, run };
}

describe("intercept-cni in podman's CNI chain", { concurrency: false }, () => {
  test("the plugin is chained after the bridge, and the node table names the node's program", async () => {
    const conflist = JSON.parse(await readFile(captured.file, "utf8")) as { plugins: { type: string }[] };
    assert.deepEqual(
      conflist.plugins.map((plugin) => plugin.type),
      ["bridge", "intercept-cni"],
    );
    assert.ok(logged.some((line) => /plugin installed/.test(line)));
  });

  test("with the plugin, the first answer a client polling from before the pod existed gets is the proxy's", async () => {
    const { answer, run } = await podFirstAnswer(captured);
    assert.equal(answer, "proxy");
    const table = JSON.parse(await readFile(path.join(lab.dir, "node-table.json"), "utf8")) as NodeTable;
    const { stdout } = await execa("nsenter", [
      `--net=${await lab.sandbox(run.name)}`,
      "tc",
      "-j",
      "filter",
      "show",
      "dev",
      "eth0",
      "ingress",
    ]);
    const ids = (JSON.parse(stdout) as { options?: { prog?: { id: number } } }[]).flatMap((f) =>
      f.options?.prog ? [f.options.prog.id] : [],
    );
    assert.deepEqual(ids, [table.attachments[0]!.programIds.ingress], "the pod runs the node's program itself");
  });

  test("without the plugin (the control), the app answers first: nothing else closes that window", async () => {
    const control = await lab.network();
    const { answer } = await podFirstAnswer(control);
    assert.equal(answer, "app");
  });

  describe("a pod whose capture cannot be set up", () => {
    /** A node table naming a program pin that does not exist: the plugin cannot open it. */
    async function brokenTable(): Promise<string> {
      const table = JSON.parse(await readFile(path.join(lab.dir, "node-table.json"), "utf8")) as NodeTable;
      table.attachments[0]!.programs.ingress = path.join(path.dirname(table.attachments[0]!.programs.ingress!), "gone");
      const file = path.join(lab.dir, "broken-table.json");
      await writeFile(file, JSON.stringify(table));
      return file;
    }

    test("fail closed: the pod does not start, and podman shows the CNI error", async () => {
      const network = await lab.network([
        { type: "intercept-cni", nodeTable: await brokenTable(), failurePolicy: "closed" },
      ]);
      const run = await lab.run(network, lab.address(network, POD_ADDRESS_HOST), POD);
      assert.notEqual(run.exitCode, 0);
      assert.match(run.stderr, /cannot open the node's program/);
      assert.equal(await lab.running(run.name), false);
    });

    test("fail open: the pod starts uncaptured, and the plugin's log says so", async () => {
      const logFile = path.join(lab.dir, "cni-events.log");
      const network = await lab.network([
        { type: "intercept-cni", nodeTable: await brokenTable(), failurePolicy: "open", logFile },
      ]);
      const { answer } = await podFirstAnswer(network);
      assert.equal(answer, "app");
      const [line] = (await readFile(logFile, "utf8")).trim().split("\n");
      const event = JSON.parse(line!) as { event: string; msg: string };
      assert.equal(event.event, "capture-failed-open");
      assert.equal(event.msg, "cannot open the node's program");
    });
  });
});
