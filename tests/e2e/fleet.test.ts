/**
 * One agent serving many network namespaces (--netns-match), against the
 * real kernel, in namespaces this test creates with a prefix of its own:
 * /healthz waits for every namespace's first reconcile; a policy folder
 * laid out and updated exactly as kubelet does a ConfigMap volume is
 * followed (and a bad update rejected, the last good policies kept); fifty
 * namespaces created in a burst all reach the desired state, each with the
 * policies whose `namespaces` match it; a namespace deleted in the middle of
 * a reconcile leaves no error line and no pins; removed namespaces are
 * forgotten. Everything is removed in `after`, even on failure.
 */
import assert from "node:assert/strict";
import { randomInt } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, readlink, rename, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { execa } from "execa";
import { parseAllDocuments } from "yaml";
import { AgentProcess } from "../../lab/agent-process.js";
import { LINKS, NamespaceSet } from "../../lab/namespaces.js";
import { intercept } from "../../lab/network.js";
import { lockNamespace } from "../../src/host/lock.js";

const BURST = 50;
const namespaces = NamespaceSet.unique("fl");
const p = namespaces.prefix;
/** Every pin directory key this test's namespaces had, for clean-up. */
const keys = new Set<string>();
/** A namespace bound to a second, matching name, as CNI plugins bind them. */
const held = { scratchName: `${p.slice(0, -1)}_unmatched`, name: `${p}held` };
let scratch: string;
let policies: string;
let agent: AgentProcess;
let healthz: string;

const DEMO = (port: number) =>
  `interfaces: { include: ["a*"] }\ninterceptors:\n  - { originalPort: 8000, port: ${port} }\n`;
// Only in the namespaces named <prefix>1<digit>: on link b.
const EXTRA = `namespaces: ["${p}1?"]\ninterfaces: { include: [b] }\ninterceptors:\n  - { originalPort: 7000, port: 7100 }\n`;
// Only in the namespace <prefix>busy, with ports of this run's own: a program no other namespace holds, so
// that namespace's apply loads it with bpftool (where bpftoolShim holds it) rather than sharing it (load once).
const BUSY_PORT = 20_000 + randomInt(10_000);
const BUSY = `namespaces: ["${p}busy"]\ninterfaces: { include: ["b*"] }\ninterceptors:\n  - { originalPort: ${BUSY_PORT}, port: ${BUSY_PORT + 1} }\n`;

/**
 * Writes @files as kubelet's AtomicWriter updates a ConfigMap volume: a new
 * `..<timestamp>` folder with the files, a `..data_tmp` symlink to it renamed
 * over `..data`, a top-level symlink per new key into `..data`, then the old
 * folder and the symlinks of keys that went are removed.
 */
async function kubeletWrite(dir: string, files: Record<string, string>): Promise<void> {
  const old = await readlink(path.join(dir, "..data")).catch(() => undefined);
  const stamp = `..2026_11_25_10_00_${String(randomInt(10, 60))}.${randomInt(100_000_000, 999_999_999)}`;
  await mkdir(path.join(dir, stamp));
  for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, stamp, name), text);
  await symlink(stamp, path.join(dir, "..data_tmp"));
  await rename(path.join(dir, "..data_tmp"), path.join(dir, "..data"));
  for (const name of Object.keys(files)) {
    if (!existsSync(path.join(dir, name))) await symlink(path.join("..data", name), path.join(dir, name));
  }
  if (old) await rm(path.join(dir, old), { recursive: true });
}

async function health(): Promise<{ status: number; text: string }> {
  const response = await fetch(healthz);
  return { status: response.status, text: await response.text() };
}

const applied = (name: string) => (l: Record<string, unknown>) =>
  l.event === "applied" && l.namespace === name && /^policies applied/.test(String(l.message));
const errorsAbout = (names: string[], from = 0) =>
  agent.lines
    .slice(from)
    .filter((l) => l.event === "error" && (l.namespace === undefined || names.includes(String(l.namespace))));

/**
 * A bpftool, first on the agent's PATH, that holds an apply's load batch
 * for the namespace named in the file at @hold (the batch names its pins,
 * under the namespace's key) for as long as that file exists (10 s at
 * most), and says so in `<hold>.reached`; then loads. The links are
 * attached after it, in the agent's own process.
 */
function bpftoolShim(hold: string): string {
  return `#!/bin/sh
case "$*" in "batch file -")
  if [ -f "${hold}" ]; then
    input=$(mktemp); cat > "$input"
    key="ns$(stat -L -c %i "/var/run/netns/$(cat "${hold}")" 2>/dev/null)"
    if grep -q "/$key/" "$input"; then
      touch "${hold}.reached"
      i=0; while [ -f "${hold}" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
    fi
    /usr/sbin/bpftool "$@" < "$input"; status=$?; rm -f "$input"; exit $status
  fi;;
esac
exec /usr/sbin/bpftool "$@"
`;
}

before(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), "intercept-fleet-"));
  policies = path.join(scratch, "policies");
  await mkdir(policies);
  await kubeletWrite(policies, { "demo.yaml": DEMO(9000), "extra.yaml": EXTRA, "busy.yaml": BUSY });
  const bin = path.join(scratch, "bin");
  await mkdir(bin);
  await writeFile(path.join(bin, "bpftool"), bpftoolShim(path.join(scratch, "hold-attach")), { mode: 0o755 });
  agent = new AgentProcess([policies, "--netns-match", `${p}*`, "--metrics", "127.0.0.1:0", "--lock-timeout", "30s"], {
    PATH: `${bin}:${process.env.PATH}`,
  });
  const started = await agent.waitFor((l) => l.event === "agent started" && typeof l.metrics === "string");
  healthz = `http://${started.metrics}/healthz`;
  await agent.waitFor((l) => l.event === "agent started" && Array.isArray(l.namespaces));
});

after(async () => {
  agent?.kill();
  await execa("umount", [`/var/run/netns/${held.name}`], { reject: false });
  await rm(`/var/run/netns/${held.name}`, { force: true });
  await execa("ip", ["netns", "del", held.scratchName], { reject: false });
  await namespaces.remove(keys);
  await rm(scratch, { recursive: true, force: true });
});

describe("agent --netns-match", { concurrency: false }, () => {
  test("/healthz is not ready until the first reconcile of every namespace succeeded", async () => {
    assert.deepEqual(await health(), { status: 200, text: "ready: 0 network namespaces reconciled\n" });
    // A namespace whose lock this test holds: the agent waits for it, and is not ready meanwhile.
    await execa("ip", ["-batch", "-"], {
      input: `netns add ${held.scratchName}\nlink add name a netns ${held.scratchName} type veth peer name b netns ${held.scratchName}\n`,
    });
    const key = await namespaces.key(held.scratchName);
    keys.add(key);
    const lock = await lockNamespace(key, { holder: "fleet test", timeoutMs: 0 });
    try {
      // Named as a CNI plugin names a pod's namespace: a file, then the namespace bind-mounted on it.
      await writeFile(`/var/run/netns/${held.name}`, "");
      await execa("mount", ["--bind", `/var/run/netns/${held.scratchName}`, `/var/run/netns/${held.name}`]);
      await agent.waitFor((l) => l.event === "waiting" && l.namespace === held.name);
      const waiting = await health();
      assert.equal(waiting.status, 503);
      assert.equal(waiting.text, `not ready: 1 of 1 network namespaces not reconciled yet: ${held.name}\n`);
    } finally {
      await lock.release();
    }
    await agent.waitFor(applied(held.name));
    assert.deepEqual(await health(), { status: 200, text: "ready: 1 network namespace reconciled\n" });
  });

  test("a ConfigMap update (kubelet's ..data swap) is applied; a bad one is rejected and the last good policies stay", async () => {
    const version = async () =>
      JSON.parse((await intercept("status", "--netns", held.name, "--json")).stdout).programs.map(
        (program: { policy: string; version: string }) => `${program.policy}@${program.version}`,
      );
    const before = await version();
    let from = agent.lines.length;
    await kubeletWrite(policies, { "demo.yaml": DEMO(9100), "extra.yaml": EXTRA, "busy.yaml": BUSY });
    await agent.waitFor(
      (l) => l.event === "applied" && l.namespace === held.name && l.message === "program.demo: replaced",
      from,
    );
    const swapped = await version();
    assert.notDeepEqual(swapped, before);

    from = agent.lines.length;
    await kubeletWrite(policies, {
      "demo.yaml": "interceptors:\n  - { originalPort: 8000, port: eighty }\n",
      "extra.yaml": EXTRA,
      "busy.yaml": BUSY,
    });
    await agent.waitFor((l) => l.event === "error" && /keeping the last good policies/.test(String(l.message)), from);
    assert.ok(!agent.lines.slice(from).some((l) => l.event === "applied"), "nothing applied");
    assert.deepEqual(await version(), swapped, "the last good policies stay in force");
    await kubeletWrite(policies, { "demo.yaml": DEMO(9100), "extra.yaml": EXTRA, "busy.yaml": BUSY });
    await agent.waitFor((l) => l.event === "policy change", from);
  });

  test(`${BURST} namespaces created in a burst all reach the desired state, each with the policies for it`, async () => {
    const from = agent.lines.length;
    const { names } = await namespaces.burst(BURST);
    for (const name of names) keys.add(await namespaces.key(name));
    for (const name of names) await agent.waitFor(applied(name), from, 60_000);
    const wrong: string[] = [];
    await Promise.all(
      names.map(async (name) => {
        const wanted = { a: true, b: /1\d$/.test(name) }; // demo everywhere on a; extra only in <prefix>1?
        for (const link of LINKS)
          if ((await namespaces.attached(name, link)) !== wanted[link]) wrong.push(`${name}/${link}`);
      }),
    );
    assert.deepEqual(wrong, []);
    // Loaded once: every namespace's link runs the node's one program for its policy.
    for (const link of LINKS) {
      const attachedHere = names.filter((name) => link === "a" || /1\d$/.test(name));
      const ids = new Set(await Promise.all(attachedHere.map((name) => namespaces.ingressProgram(name, link))));
      assert.equal(ids.size, 1, `one program on every ${link}: ${[...ids].join(", ")}`);
    }
    const status = JSON.parse((await intercept("status", "--netns", namespaces.name(15), "--json")).stdout);
    assert.equal(status.namespace, namespaces.name(15));
    assert.deepEqual(status.programs.map((program: { policy: string }) => program.policy).sort(), ["demo", "extra"]);
    assert.deepEqual(await health(), { status: 200, text: `ready: ${BURST + 1} network namespaces reconciled\n` });
    const metrics = await (await fetch(healthz.replace(/healthz$/, "metrics"))).text();
    assert.match(metrics, new RegExp(`^intercept_attached_links\\{namespace="${namespaces.name(15)}"\\} 2$`, "m"));
    assert.match(metrics, new RegExp(`^intercept_attached_links\\{namespace="${namespaces.name(25)}"\\} 1$`, "m"));
    assert.deepEqual(errorsAbout(names, from), []);
  });

  test("a namespace deleted in the middle of a reconcile leaves no error line and no pins", async () => {
    const from = agent.lines.length;
    // Mid-apply: the agent's load of busy.yaml's program is held (bpftoolShim) before its attach; the namespace goes then.
    const busy = `${p}busy`;
    const hold = path.join(scratch, "hold-attach");
    await writeFile(hold, busy);
    namespaces.made.add(busy);
    await execa("ip", ["-batch", "-"], {
      input:
        [
          `netns add ${busy}`,
          ...Array.from(
            { length: 12 },
            (_, i) => `link add name a${i} netns ${busy} type veth peer name b${i} netns ${busy}`,
          ),
        ].join("\n") + "\n",
    });
    const busyKey = await namespaces.key(busy);
    keys.add(busyKey);
    for (const deadline = Date.now() + 15_000; !existsSync(`${hold}.reached`); ) {
      assert.ok(Date.now() < deadline, "the agent's apply reached the load");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await namespaces.delete(busy);
    await rm(hold);
    // Mid-start or mid-plan: namespaces deleted a few milliseconds after they appear.
    const brief = Array.from({ length: 5 }, (_, i) => `${p}brief${i}`);
    const briefKeys: string[] = [];
    for (const [i, name] of brief.entries()) {
      await namespaces.create(name);
      briefKeys.push(await namespaces.key(name));
      await new Promise((resolve) => setTimeout(resolve, 10 * i));
      await namespaces.delete(name);
    }
    for (const key of briefKeys) keys.add(key);
    await agent.waitFor((l) => l.event === "namespace gone" && l.namespace === busy, from);
    // A barrier, not a sleep: every brief namespace the agent saw is gone again, and /healthz counts none of them.
    const settled = async () => {
      const said = (event: string, name: string) =>
        agent.lines.slice(from).some((l) => l.event === event && l.namespace === name);
      const ready = await health();
      return (
        brief.every((name) => !said("namespace seen", name) || said("namespace gone", name)) &&
        ready.text === `ready: ${BURST + 1} network namespaces reconciled\n`
      );
    };
    for (const deadline = Date.now() + 15_000; !(await settled()); ) {
      assert.ok(Date.now() < deadline, "the brief namespaces are forgotten");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.ok(
      agent.lines.some((l) => l.namespace === busy && l.message === "program.demo: created"),
      "the program was loaded",
    );
    assert.ok(!agent.lines.some(applied(busy)), "the apply was cut short by the namespace going");
    assert.deepEqual(errorsAbout([busy, ...brief], from), []);
    for (const key of [busyKey, ...briefKeys])
      assert.equal(existsSync(`/sys/fs/bpf/intercept/${key}`), false, `no pins left for ${key}`);
    assert.deepEqual(await health(), { status: 200, text: `ready: ${BURST + 1} network namespaces reconciled\n` });
  });

  test("removed namespaces are forgotten: pins, metrics and readiness; SIGTERM then removes the rest", async () => {
    const from = agent.lines.length;
    const names = Array.from({ length: BURST }, (_, i) => namespaces.name(i));
    const burstKeys = await Promise.all(names.map((name) => namespaces.key(name)));
    for (const name of names) await namespaces.delete(name);
    for (const name of names)
      await agent.waitFor((l) => l.event === "namespace gone" && l.namespace === name, from, 30_000);
    assert.deepEqual(
      burstKeys.filter((key) => existsSync(`/sys/fs/bpf/intercept/${key}`)),
      [],
    );
    const metrics = await (await fetch(healthz.replace(/healthz$/, "metrics"))).text();
    assert.doesNotMatch(metrics, new RegExp(`namespace="${p}\\d\\d"`));
    assert.deepEqual(await health(), { status: 200, text: "ready: 1 network namespace reconciled\n" });
    assert.deepEqual(errorsAbout(names, from), []);

    assert.equal(await agent.stop(), 0);
    assert.equal(await namespaces.attached(held.name, "a"), false, "without --keep, SIGTERM removes the datapath");
  });

  test("an upgrade: --keep leaves the datapath, the next agent adopts it unchanged and removes the pins of a namespace deleted in between", async () => {
    const [kept, deleted] = [`${p}k0`, `${p}k1`];
    for (const name of [kept, deleted]) {
      await namespaces.create(name);
      keys.add(await namespaces.key(name));
    }
    const deletedKey = await namespaces.key(deleted);
    const args = [policies, "--netns-match", `${p}k*`, "--keep", "--metrics", "127.0.0.1:0"];
    const programIds = async () =>
      JSON.parse((await intercept("status", "--netns", kept, "--json")).stdout).links.map(
        (link: { link: string; programIds: object }) => [link.link, link.programIds],
      );
    const old = new AgentProcess(args);
    try {
      for (const name of [kept, deleted]) await old.waitFor(applied(name));
      const before = await programIds();
      assert.equal(await old.stop(), 0);
      assert.ok(await namespaces.attached(kept, "a"), "--keep leaves the filters");
      await namespaces.delete(deleted); // while no agent runs: nothing forgets it...
      assert.ok(existsSync(`/sys/fs/bpf/intercept/${deletedKey}`));

      agent = new AgentProcess(args); // ...until the next agent starts
      await agent.waitFor((l) => l.event === "namespace gone" && l.key === deletedKey);
      const started = await agent.waitFor((l) => l.event === "agent started" && typeof l.metrics === "string");
      healthz = `http://${started.metrics}/healthz`;
      await agent.waitFor((l) => l.event === "namespace seen" && l.namespace === kept);
      for (let ready = await health(); ready.status !== 200; ready = await health())
        await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(existsSync(`/sys/fs/bpf/intercept/${deletedKey}`), false, "the orphan's pins are removed");
      assert.deepEqual(
        agent.lines.filter((l) => l.event === "applied"),
        [],
        "nothing to change: adopted as it is",
      );
      assert.deepEqual(await programIds(), before, "the same programs run");
      assert.deepEqual(
        agent.lines.filter((l) => l.event === "error"),
        [],
      );
      assert.equal(await agent.stop(), 0);
    } finally {
      old.kill();
      await intercept("destroy", "--netns", kept, "--yes");
    }
  });

  test("uninstall.yaml's clean-up removes what intercept made in the served namespaces, orphans included, and nothing else", async () => {
    // Run as on a node, but in a mount namespace of its own: a fresh bpffs, and /run/netns and the
    // host's /run (where /run/intercept lives) on tmpfs, so nothing outside this test is seen or touched.
    const work = await mkdtemp(path.join(scratch, "uninstall-"));
    const bin = path.join(work, "bin");
    await mkdir(bin);
    await writeFile(path.join(bin, "intercept"), `#!/bin/sh\nexec node ${path.resolve("bin/intercept.js")} "$@"\n`, {
      mode: 0o755,
    });
    const cleanup = parseAllDocuments(await readFile("deploy/kubernetes/uninstall.yaml", "utf8"))[0]!.toJS().spec
      .template.spec.containers[0];
    const script = (cleanup.args[0] as string)
      .replaceAll("/host/run", `${work}/hostrun`)
      .replace("touch /tmp/clean", `touch ${work}/clean`)
      .replace("exec sleep infinity", "exit 0");
    await writeFile(path.join(work, "cleanup.sh"), script);
    const [served, gone, other] = [`${p}u1`, `${p}u2`, `${p.slice(0, -1)}_other`];
    const apply = (name: string) => `intercept apply ${policies} --netns ${name} --yes >/dev/null`;
    const filters = (name: string) =>
      `nsenter --net=/run/netns/${name} tc filter show dev a ingress | grep -c intercept_ingre || true`;
    const node = [
      "set -e",
      `export PATH=${bin}:$PATH`,
      "mount -t bpf bpf /sys/fs/bpf",
      "mount -t tmpfs tmpfs /run/netns",
      `mkdir -p ${work}/hostrun/intercept && mount --bind ${work}/hostrun/intercept /run/intercept`,
      ...[served, gone, other].flatMap((name) => [
        `ip netns add ${name}`,
        `ip -n ${name} link add name a type veth peer name b`,
        apply(name),
      ]),
      `ip netns del ${gone}`,
      `NETNS_MATCH='${p}u*' sh ${work}/cleanup.sh`,
      `echo "served: $(${filters(served)}) other: $(${filters(other)})"`,
      "echo pins: $(ls /sys/fs/bpf/intercept)",
      `intercept_other=$(stat -L -c %i /run/netns/${other}); echo "other's: ns$intercept_other"`,
      `intercept destroy --netns ${other} --yes >/dev/null`,
      `NETNS_MATCH='${p}u*' sh ${work}/cleanup.sh`,
      `echo "left: $(ls -A /sys/fs/bpf | grep -c intercept) $(ls -A ${work}/hostrun)"`,
    ].join("\n");
    const result = await execa("unshare", ["--mount", "--propagation", "private", "sh", "-c", node], {
      reject: false,
      env: { INTERCEPT_CACHE_DIR: process.env.INTERCEPT_CACHE_DIR ?? path.join(work, "cache") },
    });
    assert.equal(result.exitCode, 0, `${result.stdout}\n${result.stderr}`);
    const out = String(result.stdout);
    assert.match(out, /^served: 0 other: 1$/m, "the served namespace is clean; the other one keeps its filter");
    const otherKey = /^other's: (ns\d+)$/m.exec(out)![1];
    assert.match(
      out,
      new RegExp(`^pins: ${otherKey}$`, "m"),
      "only the other namespace's pins are left (the orphan's went too)",
    );
    assert.match(out, /^intercept: \/sys\/fs\/bpf\/intercept is not empty: left in place$/m);
    assert.match(
      out,
      /^left: 0 $/m,
      "with nothing else of intercept's on the node, nothing is left: no pins, no lock folder",
    );
  });
});
