/**
 * plan/apply/destroy's promises against the real kernel, in namespaces
 * this test creates: saved plans refuse a moved kernel, a replace never
 * drops a request, foreign filters keep their place and their packets,
 * and a failing step is rolled back.
 */
import assert from "node:assert/strict";
import { randomInt } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { listLinkStates } from "../../src/kernel/tc.js";
import { execa } from "execa";
import { compileBpf } from "../../src/toolchain/index.js";
import { dumpMap, loadAndPin } from "../../src/kernel/bpftool.js";
import { Gate } from "../../lab/gate.js";
import { intercept, Lab, SERVER_ADDRESS, waitForAnswers } from "../../lab/network.js";

let lab: Lab;
let scratch: string;
let foreignPins: string;

before(async () => {
  lab = await Lab.create();
  scratch = await mkdtemp(path.join(tmpdir(), "intercept-reconcile-"));
  foreignPins = `/sys/fs/bpf/${lab.id}-foreign`;
  await lab.startInServer(["node", "dist/demo/test-server.js"], /ready/);
});

after(async () => {
  await lab?.destroy();
  await rm(foreignPins, { recursive: true, force: true });
  await rm(scratch, { recursive: true, force: true });
});

async function policyFile(name: string, text: string): Promise<string> {
  const file = path.join(scratch, name);
  await writeFile(file, text);
  return file;
}

/**
 * A bpftool that refuses each command matching @pattern (a sh `case`
 * pattern) with "forced failure", given as arguments or as a line of a
 * `batch file -`. A batch runs its lines before the refused one, then fails
 * without naming the line, as bpftool's own batch does.
 */
function bpftoolShim(pattern: string): string {
  return `#!/bin/sh
refused() { case "$1" in ${pattern}) echo "Error: forced failure" >&2; return 0;; esac; return 1; }
case "$*" in *"batch file -"*)
  lines=$(mktemp)
  while IFS= read -r line; do
    if refused "$line "; then /usr/sbin/bpftool batch file "$lines" >/dev/null 2>&1; rm -f "$lines"; exit 255; fi
    printf '%s\n' "$line" >> "$lines"
  done
  /usr/sbin/bpftool "$@" < "$lines"; status=$?; rm -f "$lines"; exit $status;;
esac
refused "$* " && exit 255
exec /usr/sbin/bpftool "$@"
`;
}

const DEMO_YAML = "interceptors:\n  - { port: 9000, originalPort: 8000 }\n";
/**
 * The demo with ports of this run's own: a program no other namespace holds, so the apply loads it
 * with bpftool (a namespace holding it would share it: load once, no process to hold or fail).
 */
const OWN_PORT = 20_000 + randomInt(10_000);
const OWN_DEMO_YAML = `interceptors:\n  - { port: ${OWN_PORT + 1}, originalPort: ${OWN_PORT} }\n`;
const GROWN_YAML = `${DEMO_YAML}  - { port: 9443, originalPort: 8443 }\n`;

async function status() {
  return JSON.parse((await intercept("status", "--netns", lab.serverNs, "--json")).stdout);
}

async function tcShow(link: string, hook: "ingress" | "egress") {
  const shown = await lab.runInServer(["tc", "-j", "filter", "show", "dev", link, hook]);
  return (JSON.parse(String(shown.stdout) || "[]") as { pref: number; options?: { prog?: { id: number } } }[]).filter(
    (f) => f.options,
  );
}

describe("saved plans", { concurrency: false }, () => {
  test("apply FILE executes exactly the saved plan", async () => {
    const policy = await policyFile("demo.yaml", DEMO_YAML);
    const saved = path.join(scratch, "demo.plan");
    const plan = await intercept("plan", policy, "--netns", lab.serverNs, "--out", saved, "--no-color");
    assert.equal(plan.exitCode, 0, plan.stderr);
    const applied = await intercept("apply", saved, "--no-color");
    assert.equal(applied.exitCode, 0, applied.stderr);
    assert.match(applied.stdout, /Apply complete! Resources: 2 added/);
    assert.equal((await intercept("plan", policy, "--netns", lab.serverNs, "--detailed-exitcode")).exitCode, 0);
  });

  test("apply FILE refuses when the kernel changed since the plan", async () => {
    const saved = path.join(scratch, "grown.plan");
    assert.equal(
      (await intercept("plan", await policyFile("demo.yaml", GROWN_YAML), "--netns", lab.serverNs, "--out", saved))
        .exitCode,
      0,
    );
    // Someone else changes the kernel in between: a live edit by hand.
    assert.equal(
      (
        await intercept(
          "apply",
          "--yes",
          await policyFile("demo.yaml", DEMO_YAML.replace("8000 }", "8000, enabled: false }")),
          "--netns",
          lab.serverNs,
        )
      ).exitCode,
      0,
    );
    const idsBefore = (await status()).programs[0].programIds;
    const refused = await intercept("apply", saved);
    assert.equal(refused.exitCode, 1);
    assert.match(
      refused.stderr,
      /^intercept: the kernel changed since .*grown\.plan was made .*: run `intercept plan` again$/,
    );
    assert.deepEqual((await status()).programs[0].programIds, idsBefore, "nothing was applied");
  });
});

describe("replace", { concurrency: false }, () => {
  test("adding a rule replaces the program without a single failed request on the old rule", async () => {
    assert.equal(
      (await intercept("apply", "--yes", await policyFile("demo.yaml", DEMO_YAML), "--netns", lab.serverNs)).exitCode,
      0,
    );
    const idsBefore = (await status()).programs[0].programIds;
    const loop = lab.runInClient([
      "node",
      "dist/lab/request-loop.js",
      `http://${SERVER_ADDRESS}:8000/`,
      "60000",
      "Server",
      await lab.addClientAddress(),
    ]);
    await waitForAnswers(loop);
    const replaced = await intercept(
      "apply",
      "--yes",
      await policyFile("demo.yaml", GROWN_YAML),
      "--netns",
      lab.serverNs,
      "--no-color",
    );
    loop.kill("SIGTERM"); // the loop spanned the whole replace
    assert.equal(replaced.exitCode, 0, replaced.stderr);
    assert.match(replaced.stdout, /-\/\+ program\.demo/);
    const result = JSON.parse(String((await loop).stdout));
    assert.ok(result.requests > 20, `the loop ran (${result.requests} requests)`);
    assert.deepEqual(
      { failures: result.failures, withoutHeader: result.withoutHeader },
      { failures: 0, withoutHeader: 0 },
      JSON.stringify(result),
    );
    const idsAfter = (await status()).programs[0].programIds;
    assert.notEqual(idsAfter.ingress, idsBefore.ingress, "a new program");
    assert.equal((await status()).programs.length, 1, "the old version is unpinned");
  });
});

describe("foreign filters", { concurrency: false }, () => {
  async function addForeign(name: string, pref: number) {
    const object = path.join(scratch, "foreign.o");
    if (!existsSync(object)) await compileBpf("tests/support/foreign.bpf.c", object);
    await loadAndPin(object, `${foreignPins}/${name}`);
    const added = await lab.runInServer([
      "tc",
      "filter",
      "add",
      "dev",
      lab.serverLink,
      "ingress",
      "pref",
      String(pref),
      "bpf",
      "direct-action",
      "object-pinned",
      `${foreignPins}/${name}/progs/foreign_counter`,
    ]);
    assert.equal(added.exitCode, 0, String(added.stderr));
  }
  const seen = async (name: string) => (await dumpMap<number>(`${foreignPins}/${name}/maps/seen`))[0]!.value!;

  test("filters before and after ours survive apply and destroy, and keep seeing packets", async () => {
    assert.equal((await intercept("destroy", "--yes", "--netns", lab.serverNs)).exitCode, 0);
    assert.equal((await lab.runInServer(["tc", "qdisc", "add", "dev", lab.serverLink, "clsact"])).exitCode, 0);
    await addForeign("before", 1);
    await addForeign("after", 60000);
    assert.equal(
      (await intercept("apply", "--yes", await policyFile("demo.yaml", DEMO_YAML), "--netns", lab.serverNs)).exitCode,
      0,
    );
    const [beforeCount, afterCount] = [await seen("before"), await seen("after")];
    const { response } = await lab.curl(8000);
    assert.match(response, /\r\nServer: intercept\r\n/i, "ours still runs after the earlier filter");
    assert.ok((await seen("before")) > beforeCount, "the filter before ours saw the request");
    assert.ok((await seen("after")) > afterCount, "the filter after ours saw the request: ours hands packets on");
    assert.deepEqual(
      (await tcShow(lab.serverLink, "ingress")).map((f) => f.pref),
      [1, 18755, 60000],
    );
    // What the agent reads of the link by rtnetlink is what tc shows: ours and the foreign ones.
    const shown = (await tcShow(lab.serverLink, "ingress")) as {
      pref: number;
      kind: string;
      options: { handle: string; prog: { id: number; name: string } };
    }[];
    const state = (await listLinkStates({ name: lab.serverNs }, [lab.serverLink])).get(lab.serverLink);
    assert.equal(state?.clsact, true);
    assert.deepEqual(
      state?.filters.ingress,
      shown.map(({ pref, kind, options }) => ({
        pref,
        kind,
        handle: options.handle,
        programId: options.prog.id,
        programName: options.prog.name,
      })),
    );

    assert.equal((await intercept("destroy", "--yes", "--netns", lab.serverNs)).exitCode, 0);
    assert.deepEqual(
      (await tcShow(lab.serverLink, "ingress")).map((f) => f.pref),
      [1, 60000],
      "only ours is gone",
    );
    const qdiscs = String((await lab.runInServer(["tc", "qdisc", "show", "dev", lab.serverLink])).stdout);
    assert.match(qdiscs, /clsact/, "the clsact qdisc intercept did not create stays");
  });
});

describe("failures", { concurrency: false }, () => {
  const extraLinks = () => [`${lab.id}x`, `${lab.id}y`];

  before(async () => {
    assert.equal((await intercept("destroy", "--yes", "--netns", lab.serverNs)).exitCode, 0);
    const [x, y] = extraLinks() as [string, string];
    assert.equal((await lab.runInServer(["ip", "link", "add", x, "type", "veth", "peer", "name", y])).exitCode, 0);
    for (const link of [x, y]) await lab.runInServer(["ip", "link", "set", link, "up"]);
  });

  after(async () => {
    await lab.runInServer(["ip", "link", "del", extraLinks()[0]!]); // its peer goes with it
  });

  const snapshot = async () =>
    JSON.stringify([
      await status(),
      ...(await Promise.all([lab.serverLink, ...extraLinks()].map((link) => tcShow(link, "ingress")))),
    ]);

  test("a step that fails midway is rolled back: the kernel is exactly as it was", async () => {
    const [, y] = extraLinks() as [string, string];
    // A foreign filter of another kind at intercept's priority, beside its slot (a u32 table, not handle 1):
    // the plan lets it be, and the kernel refuses intercept's bpf filter at that priority when the attach
    // gets there.
    await lab.runInServer(["tc", "qdisc", "add", "dev", y, "clsact"]);
    try {
      const u32 = ["ingress", "pref", "18755", "protocol", "all", "u32", "match", "u32", "0", "0"];
      const added = await lab.runInServer(["tc", "filter", "add", "dev", y, ...u32]);
      assert.equal(added.exitCode, 0, String(added.stderr));
      const before = await snapshot();
      const result = await intercept(
        "apply",
        "--yes",
        await policyFile("demo.yaml", DEMO_YAML),
        "--netns",
        lab.serverNs,
        "--no-color",
      );
      assert.equal(result.exitCode, 1, result.stderr);
      assert.match(result.stdout, /attachment\.\S+: created/, "steps had succeeded before the failure");
      assert.match(
        result.stderr,
        /attachment\.\S+y: tc filter replace dev \S+y ingress: Error: Specified filter kind does not match existing one\.\nRolled back: the kernel is as it was before this apply\.$/,
      );
      assert.equal(await snapshot(), before);
      assert.equal(existsSync(`/sys/fs/bpf/intercept/${lab.pinKey}`), false, "no pins left behind");
    } finally {
      await lab.runInServer(["tc", "qdisc", "del", "dev", y, "clsact"]);
    }
  });

  test("a batch that fails without saying where: one at a time finds the step, and it is rolled back", async () => {
    const before = await snapshot();
    // A bpftool, first on PATH, that refuses to record a qdisc: the load before it in the batch is done.
    const bin = path.join(scratch, "bpftool-failing");
    await mkdir(bin, { recursive: true });
    await writeFile(path.join(bin, "bpftool"), bpftoolShim(`"map update pinned "*/qdiscs" "*`), { mode: 0o755 });
    const result = await execa(
      "node",
      [
        "bin/intercept.js",
        "apply",
        "--yes",
        await policyFile("demo.yaml", OWN_DEMO_YAML),
        "--netns",
        lab.serverNs,
        "--no-color",
      ],
      { reject: false, env: { PATH: `${bin}:${process.env.PATH}` } },
    );
    assert.equal(result.exitCode, 1, String(result.stderr));
    assert.match(
      String(result.stdout),
      /program\.demo: created/,
      "the load, before the failure, was done and reported",
    );
    assert.match(
      String(result.stderr),
      /attachment\.\S+: bpftool map update pinned \S+\/qdiscs key hex [0-9a-f ]+ value hex 01 00 00 00: Error: forced failure\nRolled back: the kernel is as it was before this apply\.$/,
    );
    assert.equal(await snapshot(), before);
    assert.equal(
      existsSync(`/sys/fs/bpf/intercept/${lab.pinKey}`),
      false,
      "no pins left behind, the registry the batch made included",
    );
  });

  test("SIGINT mid-apply: the step in flight finishes, then everything is rolled back", async () => {
    const before = await snapshot();
    // A bpftool, first on PATH, that holds the batch loading the program and recording the qdiscs (the
    // step before the attaches) at a gate, and says when it gets there.
    const bin = path.join(scratch, "bpftool-shim");
    const gate = await Gate.create(path.join(scratch, "bpftool-gate"));
    await mkdir(bin, { recursive: true });
    const shim = `#!/bin/sh\ncase "$*" in "batch file -") ${gate.shellWait};; esac\nexec /usr/sbin/bpftool "$@"\n`;
    await writeFile(path.join(bin, "bpftool"), shim, { mode: 0o755 });
    const apply = execa(
      "node",
      [
        "bin/intercept.js",
        "apply",
        "--yes",
        await policyFile("demo.yaml", OWN_DEMO_YAML),
        "--netns",
        lab.serverNs,
        "--no-color",
      ],
      { reject: false, env: { PATH: `${bin}:${process.env.PATH}` } },
    );
    try {
      await gate.reached(() => apply.exitCode !== null);
      apply.kill("SIGINT");
      // The signal is seen while the step is held; the step then finishes.
      let said = "";
      apply.stderr?.on("data", (chunk: Buffer) => (said += chunk.toString()));
      for (const deadline = Date.now() + 15_000; !said.includes("SIGINT received"); ) {
        assert.ok(Date.now() < deadline && apply.exitCode === null, `apply saw the signal: ${said}`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    } finally {
      await gate.release();
    }
    const result = await apply;
    assert.equal(result.exitCode, 1, String(result.stderr));
    assert.match(String(result.stderr), /^SIGINT received: stopping after the current step and rolling back\.\n/);
    assert.match(String(result.stdout), /program\.demo: created/, "the step in flight finished");
    assert.doesNotMatch(String(result.stdout), /attachment\.\S+: created/, "nothing after it began");
    assert.match(
      String(result.stderr),
      /\nintercept: interrupted by SIGINT after \d+ of \d+ steps\nRolled back: the kernel is as it was before this apply\.$/,
    );
    assert.equal(await snapshot(), before);
    assert.equal(existsSync(`/sys/fs/bpf/intercept/${lab.pinKey}`), false, "no pins left behind");
  });

  test("a foreign filter in intercept's slot stops the plan before anything changes", async () => {
    const [, y] = extraLinks() as [string, string];
    await lab.runInServer(["tc", "qdisc", "add", "dev", y, "clsact"]);
    const blocker = await lab.runInServer([
      "tc",
      "filter",
      "add",
      "dev",
      y,
      "ingress",
      "pref",
      "18755",
      "handle",
      "1",
      "bpf",
      "direct-action",
      "object-pinned",
      `${foreignPins}/before/progs/foreign_counter`,
    ]);
    assert.equal(blocker.exitCode, 0, String(blocker.stderr));
    const before = await snapshot();
    const result = await intercept("apply", "--yes", await policyFile("demo.yaml", DEMO_YAML), "--netns", lab.serverNs);
    assert.equal(result.exitCode, 1);
    assert.equal(
      result.stderr.trim(),
      `intercept: interface ${y}: tc pref 18755 handle 0x1, where intercept attaches, is held by a filter intercept did not create (bpf foreign_counter); remove it or exclude the interface`,
    );
    assert.equal(await snapshot(), before);
  });
});

describe("compile cache", { concurrency: false }, () => {
  test("applying an unchanged policy never runs clang", async () => {
    assert.equal((await intercept("destroy", "--yes", "--netns", lab.serverNs)).exitCode, 0);
    // A clang that records every call, first on PATH.
    const bin = path.join(scratch, "clang-shim");
    const calls = path.join(scratch, "clang-calls");
    await execa("mkdir", ["-p", bin]);
    await writeFile(path.join(bin, "clang"), `#!/bin/sh\necho "$*" >> ${calls}\nexec /usr/bin/clang "$@"\n`, {
      mode: 0o755,
    });
    const run = (...args: string[]) =>
      execa("node", ["bin/intercept.js", ...args], { reject: false, env: { PATH: `${bin}:${process.env.PATH}` } });
    const policy = await policyFile("cached.yaml", "interceptors:\n  - { port: 9321, originalPort: 8321 }\n");
    assert.equal((await run("apply", "--yes", policy, "--netns", lab.serverNs)).exitCode, 0); // may compile: first time
    assert.equal((await run("destroy", "--yes", "--netns", lab.serverNs)).exitCode, 0);
    await rm(calls, { force: true });
    const again = await run("apply", "--yes", policy, "--netns", lab.serverNs);
    assert.equal(again.exitCode, 0, String(again.stderr));
    assert.match(String(again.stdout), /program\.cached: created/);
    assert.equal(existsSync(calls), false, "clang was not run");
    assert.equal((await run("destroy", "--yes", "--netns", lab.serverNs)).exitCode, 0);
  });
});
