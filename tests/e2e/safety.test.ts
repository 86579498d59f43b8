/**
 * Safety against the real kernel, in namespaces this test creates: saved
 * plans are data (the hostile corpus in tests/hostile/plans), one writer
 * per namespace (the lock), a run killed at any moment is repaired by the
 * next, and commands that need the kernel say which privilege is missing.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { execa } from "execa";
import { Gate } from "../../lab/gate.js";
import { intercept, type Lab } from "../../lab/network.js";
import { DEMO_YAML, OTHER_YAML, SafetyLab } from "../support/safety-lab.js";
import { AGENT_LOCK_HOLDER } from "../../src/model/lock-holder.js";
import { LOCK_DIR, lockNamespace } from "../../src/host/lock.js";

let safety: SafetyLab;
let lab: Lab;
let scratch: string;
let decoy: string;

before(async () => {
  safety = await SafetyLab.create("intercept-safety-");
  ({ lab, scratch } = safety);
  decoy = path.join(scratch, "decoy");
  await mkdir(decoy);
  await writeFile(path.join(decoy, "keep-me"), "a file no intercept run may touch\n");
});

after(async () => {
  await safety?.destroy();
});

const policyFile = (name: string, text: string) => safety.policyFile(name, text);

/** Everything intercept could have changed: its view of the kernel, the filters, the pins. */
async function kernelSnapshot(): Promise<string> {
  const status = JSON.parse((await intercept("status", "--netns", lab.serverNs, "--json")).stdout);
  const filters = await Promise.all(
    ["ingress", "egress"].map((hook) => lab.runInServer(["tc", "filter", "show", "dev", lab.serverLink, hook])),
  );
  const qdiscs = await lab.runInServer(["tc", "qdisc", "show", "dev", lab.serverLink]);
  const pins = existsSync(`/sys/fs/bpf/intercept/${lab.pinKey}`)
    ? await readdir(`/sys/fs/bpf/intercept/${lab.pinKey}`, { recursive: true })
    : [];
  return JSON.stringify({
    programs: status.programs,
    links: status.links,
    filters: filters.map((f) => f.stdout),
    qdiscs: qdiscs.stdout,
    pins: pins.sort(),
  });
}

const HOSTILE_PLANS = (await readdir("tests/hostile/plans")).filter((f) => f.endsWith(".json")).sort();

const intercepted = () => safety.intercepted();

describe("hostile saved plans: one line, exit 1, nothing changed", { concurrency: false }, () => {
  const corpus = "tests/hostile/plans";
  let planned: Record<string, unknown>;

  before(async () => {
    assert.equal((await intercept("destroy", "--yes", "--netns", lab.serverNs)).exitCode, 0);
    const saved = path.join(scratch, "good.plan");
    const made = await intercept(
      "plan",
      await policyFile("demo.yaml", DEMO_YAML),
      "--netns",
      lab.serverNs,
      "--out",
      saved,
    );
    assert.equal(made.exitCode, 0, made.stderr);
    planned = JSON.parse(await readFile(saved, "utf8"));
  });

  for (const name of HOSTILE_PLANS) {
    test(name, async () => {
      const hostile = JSON.parse(await readFile(path.join(corpus, name), "utf8")) as {
        edits?: { path: (string | number)[]; value?: unknown; delete?: boolean }[];
        raw?: string;
        error: string;
      };
      const file = path.join(scratch, name.replace(/\.json$/, ".plan"));
      await writeFile(file, hostile.raw ?? `${JSON.stringify(tampered(planned, hostile.edits ?? []), null, 2)}\n`);
      const before = await kernelSnapshot();
      const result = await intercept("apply", "--plan", file);
      assert.equal(result.exitCode, 1, result.stdout + result.stderr);
      assert.equal(result.stderr.trim().split("\n").length, 1, `one line: ${result.stderr}`);
      assert.match(result.stderr.trim(), new RegExp(hostile.error));
      assert.equal(await kernelSnapshot(), before, "the kernel is unchanged");
      assert.ok(existsSync(path.join(decoy, "keep-me")), "the decoy directory is untouched");
    });
  }

  test("the untampered plan applies", async () => {
    const file = path.join(scratch, "untampered.plan");
    await writeFile(file, JSON.stringify(planned));
    const result = await intercept("apply", "--plan", file);
    assert.equal(result.exitCode, 0, result.stderr);
    assert.ok(await intercepted());
    assert.equal((await intercept("destroy", "--yes", "--netns", lab.serverNs)).exitCode, 0);
  });

  /** @plan with @edits applied; "@DECOY@" in a value becomes the decoy directory's path. */
  function tampered(
    plan: Record<string, unknown>,
    edits: { path: (string | number)[]; value?: unknown; delete?: boolean }[],
  ) {
    const copy = structuredClone(plan);
    for (const edit of edits) {
      const parent = edit.path
        .slice(0, -1)
        .reduce<Record<string | number, unknown>>((node, key) => node[key] as Record<string | number, unknown>, copy);
      const key = edit.path.at(-1)!;
      if (edit.delete) delete parent[key];
      else parent[key] = JSON.parse(JSON.stringify(edit.value).replaceAll("@DECOY@", decoy));
    }
    return copy;
  }
});

describe("one writer per namespace", { concurrency: false }, () => {
  /** A bpftool, first on PATH, that holds every load batch at @gate (a slow apply holding the lock). */
  async function gatedBpftool(name: string): Promise<{ bin: string; gate: Gate }> {
    const bin = path.join(scratch, name);
    const gate = await Gate.create(path.join(scratch, `${name}-gate`));
    await mkdir(bin, { recursive: true });
    await writeFile(
      path.join(bin, "bpftool"),
      `#!/bin/sh\ncase "$*" in "batch file -") ${gate.shellWait};; esac\nexec /usr/sbin/bpftool "$@"\n`,
      { mode: 0o755 },
    );
    return { bin, gate };
  }

  const run = (args: string[], env: Record<string, string> = {}) =>
    execa("node", ["bin/intercept.js", ...args], { reject: false, env, stdin: "ignore" });

  test("a second apply waits and says for whom; with a short --lock-timeout it gives up in one line", async () => {
    assert.equal((await intercept("destroy", "--yes", "--netns", lab.serverNs)).exitCode, 0);
    const { bin, gate } = await gatedBpftool("bpftool-held");
    const slow = run(["apply", "--yes", await policyFile("demo.yaml", DEMO_YAML), "--netns", lab.serverNs], {
      PATH: `${bin}:${process.env.PATH}`,
    });
    try {
      await gate.reached(() => slow.exitCode !== null); // it holds the lock now, until released
      const impatient = await intercept(
        "apply",
        "--yes",
        await policyFile("other.yaml", OTHER_YAML),
        "--netns",
        lab.serverNs,
        "--lock-timeout",
        "200ms",
      );
      assert.equal(impatient.exitCode, 1);
      assert.match(
        impatient.stderr,
        new RegExp(
          `^waiting for the lock held by pid ${slow.pid} \\(intercept apply\\)\\nintercept: gave up after 0\\.2 s waiting for the lock held by pid ${slow.pid} \\(intercept apply\\) \\(--lock-timeout\\)$`,
        ),
      );
      const patient = run(["apply", "--yes", await policyFile("other.yaml", OTHER_YAML), "--netns", lab.serverNs]);
      await new Promise<void>((resolve, reject) => {
        // Released only once it waits: the lock is held until then, however slow this machine is.
        patient.stderr?.on("data", (chunk: Buffer) => {
          if (chunk.toString().includes("waiting for the lock")) resolve();
        });
        void patient.then((ended) =>
          reject(new Error(`the second apply ended without waiting: ${String(ended.stderr)}`)),
        );
      });
      await gate.release();
      const patiently = await patient;
      assert.equal(patiently.exitCode, 0, String(patiently.stderr));
      assert.match(
        String(patiently.stderr),
        new RegExp(`^waiting for the lock held by pid ${slow.pid} \\(intercept apply\\)$`, "m"),
      );
      assert.equal((await slow).exitCode, 0);
    } finally {
      await gate.release();
      await slow;
    }
    assert.equal(
      (
        await intercept(
          "plan",
          await policyFile("other.yaml", OTHER_YAML),
          "--netns",
          lab.serverNs,
          "--detailed-exitcode",
        )
      ).exitCode,
      0,
      "the later apply won",
    );
  });

  test("a lock held by a killed process is released by the kernel", async () => {
    const { bin, gate } = await gatedBpftool("bpftool-killed");
    const slow = run(["apply", "--yes", await policyFile("demo.yaml", DEMO_YAML), "--netns", lab.serverNs], {
      PATH: `${bin}:${process.env.PATH}`,
    });
    try {
      await gate.reached(() => slow.exitCode !== null);
      slow.kill("SIGKILL");
      await slow;
    } finally {
      await gate.release(); // the shim outlives its parent: let it end
    }
    const started = Date.now();
    const next = await intercept(
      "apply",
      "--yes",
      await policyFile("demo.yaml", DEMO_YAML),
      "--netns",
      lab.serverNs,
      "--lock-timeout",
      "0",
    );
    assert.equal(next.exitCode, 0, next.stderr);
    assert.ok(Date.now() - started < 5000, "no waiting for a dead holder");
  });

  test('a held lock with --lock-timeout 0: refused in one line, no "waiting" first; the lock file stays only while pins do', async () => {
    const held = await lockNamespace(lab.pinKey, { holder: "intercept apply", timeoutMs: 0 });
    try {
      const refused = await intercept(
        "apply",
        await policyFile("demo.yaml", DEMO_YAML),
        "--netns",
        lab.serverNs,
        "--lock-timeout",
        "0",
        "--yes",
      );
      assert.equal(refused.exitCode, 1);
      assert.equal(
        refused.stderr,
        `intercept: the network namespace is locked by pid ${process.pid} (intercept apply)`,
      );
    } finally {
      await held.release();
    }
    assert.equal(
      (await intercept("apply", await policyFile("demo.yaml", DEMO_YAML), "--netns", lab.serverNs, "--yes")).exitCode,
      0,
    );
    const record = JSON.parse(await readFile(path.join(LOCK_DIR, `${lab.pinKey}.lock`), "utf8"));
    assert.equal(record.holder, "intercept apply", "while pins stay, the lock file stays with who last changed them");
    assert.equal((await intercept("destroy", "--netns", lab.serverNs, "--yes")).exitCode, 0);
    assert.equal(
      existsSync(path.join(LOCK_DIR, `${lab.pinKey}.lock`)),
      false,
      "destroy, which leaves no pins, removed the lock file",
    );
  });

  test("a namespace an agent holds: apply and destroy are refused at once, naming its pid; --wait-for-agent waits", async () => {
    const before = await kernelSnapshot();
    const agent = await lockNamespace(lab.pinKey, { holder: AGENT_LOCK_HOLDER, timeoutMs: 0 }); // as `intercept agent --netns` holds it
    try {
      const refusal = `intercept: an agent (pid ${process.pid}) manages network namespace "${lab.serverNs}": change the policies it reads and it applies them, or stop it first (--wait-for-agent waits up to --lock-timeout for it to exit)`;
      for (const args of [["apply", await policyFile("other.yaml", OTHER_YAML)], ["destroy"]]) {
        const started = Date.now();
        const refused = await intercept(...args, "--netns", lab.serverNs, "--yes");
        assert.equal(refused.exitCode, 1, args[0]);
        assert.equal(refused.stderr, refusal, args[0]);
        assert.ok(Date.now() - started < 5000, `${args[0]}: at once, not after --lock-timeout`);
      }
      const waited = await intercept(
        "destroy",
        "--netns",
        lab.serverNs,
        "--yes",
        "--wait-for-agent",
        "--lock-timeout",
        "300ms",
      );
      assert.equal(waited.exitCode, 1);
      assert.equal(
        waited.stderr,
        `waiting for the lock held by pid ${process.pid} (intercept agent)\nintercept: gave up after 0.3 s waiting for the lock held by pid ${process.pid} (intercept agent) (--lock-timeout)`,
      );
    } finally {
      await agent.release();
    }
    assert.equal(await kernelSnapshot(), before, "the kernel is unchanged");
  });

  test("plan warns, from the namespace's listeners (ss in the namespace), when a steer rule's proxy is not listening", async () => {
    const steer = (port: number) => `interceptors:\n  - { port: ${port}, originalPort: 8000, strategy: steer }\n`;
    const down = await intercept(
      "plan",
      await policyFile("steer-down.yaml", steer(9100)),
      "--netns",
      lab.serverNs,
      "--no-color",
      "--detailed-exitcode",
    );
    assert.match(
      down.stdout,
      new RegExp(
        `\nWarning: policy steer_down rule 0 steers port 8000 to tcp port 9100, where nothing listens in network namespace "${lab.serverNs}": applying now would drop new connections to port 8000 on ${lab.serverLink} \\(onProxyDown: drop\\)`,
      ),
    );
    assert.equal(down.exitCode, 2, "--detailed-exitcode still reports the changes alone");
    const up = await intercept(
      "plan",
      await policyFile("steer-up.yaml", steer(9000)),
      "--netns",
      lab.serverNs,
      "--json",
    );
    assert.deepEqual(JSON.parse(up.stdout).warnings, [], "the test server's proxy listens on 9000");
  });
});

describe("killed at any moment, repaired by the next run", { concurrency: false }, () => {
  test("killed between a link's ingress and egress swaps: status names it, plan switches it whole, traffic flows", async () => {
    const demo = await policyFile("demo.yaml", DEMO_YAML);
    assert.equal((await intercept("apply", "--yes", demo, "--netns", lab.serverNs)).exitCode, 0);
    // The attach swaps a link's hooks microseconds apart, in the apply's own process: a kill lands between
    // them by chance only. So the apply is killed once it has loaded the new version (a bpftool that runs
    // the load batch, says so, then hangs; its status is not read: bpftool 7.1's batch may exit 1 having
    // done it all, see unlessStaleErrno), and the egress swap it would have made first is made here.
    const bin = path.join(scratch, "bpftool-loaded");
    const loaded = path.join(scratch, "new-version-loaded");
    await mkdir(bin, { recursive: true });
    await writeFile(
      path.join(bin, "bpftool"),
      `#!/bin/sh
case "$*" in "batch file -") /usr/sbin/bpftool "$@"; touch ${loaded}; sleep 30; exit 1;; esac
exec /usr/sbin/bpftool "$@"
`,
      { mode: 0o755 },
    );
    const versions = path.join(`/sys/fs/bpf/intercept/${lab.pinKey}`, "demo");
    const old = await readdir(versions);
    // The same policy, grown: a new version of it to switch to.
    const grown = await policyFile("grown/demo.yaml", OTHER_YAML);
    const apply = execa("node", ["bin/intercept.js", "apply", "--yes", grown, "--netns", lab.serverNs], {
      reject: false,
      stdin: "ignore",
      env: { PATH: `${bin}:${process.env.PATH}` },
    });
    for (const deadline = Date.now() + 15_000; !existsSync(loaded); ) {
      assert.ok(Date.now() < deadline && apply.exitCode === null, "apply reached the load of the new version");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    apply.kill("SIGKILL");
    await apply;
    await execa("pkill", ["-KILL", "-f", `${bin}/bpftool`], { reject: false }); // the shim outlives its parent
    const [version] = (await readdir(versions)).filter((name) => !old.includes(name));
    assert.ok(version, "the new version is pinned beside the old");
    const egress = path.join(versions, version, "progs", "intercept_egress");
    const swap = ["filter", "replace", "dev", lab.serverLink, "egress", "pref", "18755", "handle", "0x1"];
    const swapped = await lab.runInServer(["tc", ...swap, "bpf", "direct-action", "object-pinned", egress]);
    assert.equal(swapped.exitCode, 0, String(swapped.stderr));
    const status = JSON.parse((await intercept("status", "--netns", lab.serverNs, "--json")).stdout);
    assert.deepEqual(
      status.drift.map((d: { kind: string; link: string }) => `${d.kind} ${d.link}`),
      [`half-switched ${lab.serverLink}`],
    );
    const plan = await intercept("plan", grown, "--netns", lab.serverNs, "--no-color");
    assert.match(
      plan.stdout,
      new RegExp(
        `attachment\\.${lab.serverLink} +update in place: switch from ingress demo@\\w+, egress demo@\\w+ \\(half-switched by an interrupted apply\\) to demo@\\w+`,
      ),
    );
    assert.equal((await intercept("apply", "--yes", grown, "--netns", lab.serverNs)).exitCode, 0);
    assert.deepEqual(JSON.parse((await intercept("status", "--netns", lab.serverNs, "--json")).stdout).drift, []);
    assert.ok(await intercepted());
  });
});

describe("privileges", { concurrency: false }, () => {
  /** Runs the CLI as nobody, with no capabilities. */
  const asNobody = (...args: string[]) =>
    execa(
      "setpriv",
      ["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "node", "bin/intercept.js", ...args],
      { reject: false, stdin: "ignore", env: { INTERCEPT_CACHE_DIR: path.join(scratch, "nobody-cache") } },
    );

  test("plan, apply, status and destroy say which privilege is missing, and change nothing", async () => {
    const before = await kernelSnapshot();
    for (const command of ["plan", "apply", "status", "destroy"]) {
      const result = await asNobody(command, "--netns", lab.serverNs);
      assert.equal(result.exitCode, 1, `${command}: ${result.stderr}`);
      assert.equal(
        String(result.stderr).trim(),
        `intercept: intercept ${command} needs root, or CAP_NET_ADMIN and CAP_SYS_ADMIN (missing: CAP_NET_ADMIN, CAP_SYS_ADMIN); validate, compile and build need none`,
      );
    }
    assert.equal(await kernelSnapshot(), before);
  });

  /** Runs the CLI as root holding only @capabilities (setpriv's names: net_admin, …). */
  const withOnly = (capabilities: string[], ...args: string[]) => {
    const set = `-all,${capabilities.map((c) => `+${c}`).join(",")}`;
    return execa(
      "setpriv",
      [
        `--inh-caps=${set}`,
        `--ambient-caps=${set}`,
        `--bounding-set=${set}`,
        "--",
        "node",
        "bin/intercept.js",
        ...args,
      ],
      { reject: false, stdin: "ignore" },
    );
  };

  test("CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN alone are refused: the maps' BTF is fetched by id, which asks CAP_SYS_ADMIN", async () => {
    const before = await kernelSnapshot();
    const result = await withOnly(["bpf", "perfmon", "net_admin"], "plan", "--netns", lab.serverNs);
    assert.equal(result.exitCode, 1);
    assert.match(String(result.stderr), /\(missing: CAP_SYS_ADMIN\)/);
    assert.equal(await kernelSnapshot(), before);
  });

  test("CAP_NET_ADMIN and CAP_SYS_ADMIN are enough: apply, status and destroy see and remove everything", async () => {
    const policy = await policyFile("least/demo.yaml", DEMO_YAML);
    const applied = await withOnly(["net_admin", "sys_admin"], "apply", "--yes", policy, "--netns", lab.serverNs);
    assert.equal(applied.exitCode, 0, applied.stderr);
    assert.ok(await intercepted());
    const status = JSON.parse(
      (await withOnly(["net_admin", "sys_admin"], "status", policy, "--netns", lab.serverNs, "--json")).stdout,
    );
    assert.deepEqual(status.drift, []);
    assert.deepEqual(
      status.links.map((link: { link: string }) => link.link),
      [lab.serverLink],
    );
    const again = await withOnly(
      ["net_admin", "sys_admin"],
      "plan",
      policy,
      "--netns",
      lab.serverNs,
      "--detailed-exitcode",
    );
    assert.equal(again.exitCode, 0, `nothing to change: ${again.stdout}`);
    assert.equal((await withOnly(["net_admin", "sys_admin"], "destroy", "--yes", "--netns", lab.serverNs)).exitCode, 0);
    const filters = await lab.runInServer(["tc", "filter", "show", "dev", lab.serverLink, "ingress"]);
    assert.equal(filters.stdout.trim(), "", "no filter left behind");
    assert.equal(
      existsSync(`/sys/fs/bpf/intercept/${lab.pinKey}`)
        ? (await readdir(`/sys/fs/bpf/intercept/${lab.pinKey}`)).filter((e) => e !== "qdiscs").length
        : 0,
      0,
    );
  });
});
