/**
 * Outbound capture against the real kernel. The lab's two namespaces play
 * a host (where intercept applies, the applications and the proxy run)
 * and a "remote" network with the servers; a cgroup of the test's own
 * (intercept-test-<random>, with app, proxy and other children) holds
 * the applications. Everything is removed afterwards, on failure too.
 */
import "../support/temporary-cache.js";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { execa } from "execa";
import { addAddress6, LabCgroup, OUTBOUND_HELPER } from "../../lab/cgroup.js";
import { CLIENT_ADDRESS, intercept, Lab, SERVER_ADDRESS } from "../../lab/network.js";
import { compileBpf } from "../../src/toolchain/index.js";

/** The "remote" servers: 8080 is captured, 8081 never is. */
const REMOTE_V4 = CLIENT_ADDRESS;
const REMOTE_V6 = "fd00::2";
const HOST_V4 = SERVER_ADDRESS;
const PROXY_PORT = 15001;
const PROXY_UID = 1337;
const PROXY_MARK = 0x539;

let lab: Lab;
let cgroup: LabCgroup;
let scratch: string;
let host: string;
const proxyLog: string[] = [];

before(async () => {
  lab = await Lab.create();
  cgroup = await LabCgroup.create(["app", "proxy", "other", "app/sidecar"]);
  scratch = await mkdtemp(path.join(tmpdir(), "intercept-outbound-"));
  host = lab.serverNs;
  await addAddress6(lab.serverNs, lab.serverLink, "fd00::1/64");
  await addAddress6(lab.clientNs, lab.clientLink, `${REMOTE_V6}/64`);
  await cgroup.start(
    undefined,
    lab.clientNs,
    ["python3", OUTBOUND_HELPER, "server", "--port", "8080", "--port", "8081"],
    /server ready/,
  );
});

after(async () => {
  await lab?.destroy(); // intercept destroy in the host namespace first: our programs leave the cgroups
  await cgroup?.destroy();
  await rm(scratch, { recursive: true, force: true });
  assert.ok(!(await execa("ip", ["netns", "list"])).stdout.includes(lab.id), "the lab's namespaces are gone");
  assert.ok(!existsSync(cgroup.directory()), "the test's cgroup is gone");
});

async function policy(name: string, exempt: string, rules: string, fileName = name): Promise<string> {
  const file = path.join(scratch, `${fileName}.yaml`);
  await writeFile(
    file,
    `name: ${name}\noutbound:\n  cgroups: ["${cgroup.path("app")}"]\n  exempt: ${exempt}\n  rules:\n${rules}`,
  );
  return file;
}

const rule8080 = (enabled = true) => `    - originalPort: 8080\n      port: ${PROXY_PORT}\n      enabled: ${enabled}\n`;

async function apply(file: string): Promise<void> {
  const applied = await intercept("apply", file, "--netns", host, "--yes", "--no-color");
  assert.equal(applied.exitCode, 0, applied.stderr + applied.stdout);
}

async function destroy(): Promise<void> {
  const destroyed = await intercept("destroy", "--netns", host, "--yes", "--no-color");
  assert.equal(destroyed.exitCode, 0, destroyed.stderr);
}

interface Exchange {
  answered: number;
  failed: number;
  failures: string[];
  response: string | null;
}

/** Connects from @child of the test cgroup (undefined: from outside it) to @address:@port, @count times. */
async function connect(child: string | undefined, address: string, port: number, count = 1): Promise<Exchange> {
  const result = await cgroup.run(child, host, [
    "python3",
    OUTBOUND_HELPER,
    "client",
    address,
    String(port),
    "--count",
    String(count),
  ]);
  assert.equal(result.exitCode, 0, result.stderr);
  return JSON.parse(result.stdout) as Exchange;
}

/** The proxy's first line names the original destination it read with SO_ORIGINAL_DST. */
function viaProxy(exchange: Exchange): string | undefined {
  return /^proxy (\S+) (\d+)\n/
    .exec(exchange.response ?? "")
    ?.slice(1)
    .join(" ");
}

let proxy: { stop: () => Promise<void> } | undefined;

async function startProxy(child: string, options: string[]): Promise<void> {
  proxy = await cgroup.start(
    child,
    host,
    ["python3", OUTBOUND_HELPER, "proxy", "--port", String(PROXY_PORT), "--log", ...options],
    /proxy ready/,
    (line) => proxyLog.push(line),
  );
}

async function stopProxy(): Promise<void> {
  await proxy?.stop();
  proxy = undefined;
}

/** Programs attached to a cgroup of the test, by name. */
async function attachedTo(child: string): Promise<string[]> {
  const { stdout } = await execa("bpftool", ["-j", "cgroup", "show", cgroup.directory(child)]);
  return (stdout.trim() ? (JSON.parse(stdout) as { name: string }[]) : []).map((program) => program.name);
}

async function status(): Promise<{
  programs: {
    policy: string;
    version: string;
    programIds: Record<string, number>;
    cgroupProgramIds: Record<string, number>;
    exemptCgroups: { id: number; level: number }[];
    rules: { index: number; enabled: boolean; counters: Record<string, { packets: number }> | null }[];
  }[];
  cgroups: { path: string; policy: string | null; programs: string[]; foreign: string[] }[];
}> {
  const result = await intercept("status", "--netns", host, "--json");
  assert.equal(result.exitCode, 0, result.stderr);
  return JSON.parse(result.stdout);
}

/** Entries of a record map of the live version of @policyName. */
async function records(policyName: string, map: "orig_by_cookie" | "orig_by_conn"): Promise<number> {
  const policyDir = `/sys/fs/bpf/intercept/${lab.pinKey}/${policyName}`;
  const [version] = await readdir(policyDir);
  const { stdout } = await execa("bpftool", ["-j", "map", "dump", "pinned", `${policyDir}/${version}/maps/${map}`]);
  return (JSON.parse(stdout) as unknown[]).length;
}

/** TCP sockets open in the host namespace, listeners and TIME_WAIT left out (neither holds a record). */
async function openSockets(): Promise<number> {
  const { stdout } = await execa("nsenter", [
    `--net=/var/run/netns/${host}`,
    "ss",
    "-Htan",
    "exclude",
    "listening",
    "exclude",
    "time-wait",
  ]);
  return stdout.split("\n").filter((line) => line.trim()).length;
}

describe("outbound capture, the proxy exempt by uid", { concurrency: false }, () => {
  let file: string;
  before(async () => {
    await startProxy("app", ["--uid", String(PROXY_UID)]); // beside the applications, in the same cgroup
    file = await policy("outbound_uid", `{ uids: [${PROXY_UID}] }`, rule8080());
  });
  after(stopProxy);

  test("before apply, the application reaches the remote server directly", async () => {
    const exchange = await connect("app", REMOTE_V4, 8080);
    assert.equal(exchange.answered, 1, JSON.stringify(exchange));
    assert.equal(viaProxy(exchange), undefined);
  });

  test("apply: connections to the selected port land on the proxy, which reads the exact original destination (IPv4 and IPv6) and goes there itself", async () => {
    await apply(file);
    assert.deepEqual((await attachedTo("app")).sort(), [
      "out_connect4",
      "out_connect6",
      "out_getsockopt",
      "out_sockops",
    ]);
    proxyLog.length = 0;
    const v4 = await connect("app", REMOTE_V4, 8080);
    assert.equal(viaProxy(v4), `${REMOTE_V4} 8080`, JSON.stringify(v4));
    assert.match(
      v4.response!,
      new RegExp(
        `\\nserver \\S*${REMOTE_V4.replaceAll(".", "\\.")} 8080 peer \\S*${HOST_V4.replaceAll(".", "\\.")}\\n$`,
      ),
      "the proxy's own connection reached the server (no loop)",
    );
    const v6 = await connect("app", REMOTE_V6, 8080);
    assert.equal(viaProxy(v6), `${REMOTE_V6} 8080`, JSON.stringify(v6));
    assert.match(v6.response!, /\nserver fd00::2 8080 peer fd00::1\n$/);
    const seen = proxyLog.map((line) => JSON.parse(line) as { original?: [string, number]; error?: string });
    assert.deepEqual(
      seen.map((entry) => entry.original ?? entry.error),
      [
        [REMOTE_V4, 8080],
        [REMOTE_V6, 8080],
      ],
      "SO_ORIGINAL_DST and IP6T_SO_ORIGINAL_DST, as the proxy read them",
    );
  });

  test("a port no rule names, a process outside the cgroup, and a process in a sibling cgroup go direct", async () => {
    for (const [child, port] of [
      ["app", 8081],
      [undefined, 8080],
      ["other", 8080],
    ] as const) {
      const exchange = await connect(child, REMOTE_V4, port);
      assert.equal(exchange.answered, 1, JSON.stringify(exchange));
      assert.equal(viaProxy(exchange), undefined, `${child ?? "outside"} → ${port} is not captured`);
    }
  });

  test("1,000 sequential connections are all answered through the proxy, and no record outlives its socket", async () => {
    const before = (await status()).programs[0]!.rules[0]!.counters!.redirected!.packets;
    const exchange = await connect("app", REMOTE_V4, 8080, 1000);
    assert.equal(exchange.answered, 1000, JSON.stringify(exchange.failures));
    assert.equal(viaProxy(exchange), `${REMOTE_V4} 8080`);
    const after = (await status()).programs[0]!.rules[0]!.counters!.redirected!.packets;
    assert.equal(after - before, 1000, "counted: one redirected connection each");
    const open = await openSockets();
    const held = (await records("outbound_uid", "orig_by_cookie")) + (await records("outbound_uid", "orig_by_conn"));
    assert.ok(held <= open, `${held} records, ${open} open sockets`);
  });

  test("enabled: false is a live edit: the same programs stay attached, and connections go direct", async () => {
    const ids = (await status()).programs[0]!.cgroupProgramIds;
    await apply(await policy("outbound_uid", `{ uids: [${PROXY_UID}] }`, rule8080(false), "outbound_uid_disabled"));
    assert.deepEqual((await status()).programs[0]!.cgroupProgramIds, ids, "no reload");
    assert.equal(viaProxy(await connect("app", REMOTE_V4, 8080)), undefined);
    await apply(file);
    assert.equal(viaProxy(await connect("app", REMOTE_V4, 8080)), `${REMOTE_V4} 8080`);
  });

  test("destroy leaves nothing attached to the cgroup and no pins", async () => {
    await destroy();
    assert.deepEqual(await attachedTo("app"), []);
    assert.ok(!existsSync(`/sys/fs/bpf/intercept/${lab.pinKey}`), "no pins");
    assert.equal(viaProxy(await connect("app", REMOTE_V4, 8080)), undefined);
  });
});

describe("the proxy exempt by its cgroup", { concurrency: false }, () => {
  before(() => startProxy("proxy", []));
  after(stopProxy);

  test("the proxy runs as root in its own cgroup: its getsockopt is answered there, and its connections go direct", async () => {
    await apply(await policy("outbound_cgroup", `{ cgroups: ["${cgroup.path("proxy")}"] }`, rule8080()));
    assert.deepEqual(await attachedTo("proxy"), ["out_getsockopt"]);
    for (const address of [REMOTE_V4, REMOTE_V6])
      assert.equal(viaProxy(await connect("app", address, 8080)), `${address} 8080`);
    // A connection from the exempt cgroup itself is never captured.
    assert.equal(viaProxy(await connect("proxy", REMOTE_V4, 8080)), undefined);
    await destroy();
    assert.deepEqual([...(await attachedTo("app")), ...(await attachedTo("proxy"))], []);
  });
});

describe("two policy files capturing one cgroup compose", { concurrency: false }, () => {
  before(() => startProxy("proxy", []));
  after(stopProxy);

  test("both files' rules redirect through one composition's programs, the proxy reads the original of each, destroy leaves nothing", async () => {
    const folder = path.join(scratch, "teams");
    await mkdir(folder);
    const team = (name: string, port: number) =>
      writeFile(
        path.join(folder, `${name}.yaml`),
        `outbound:\n  cgroups: ["${cgroup.path("app")}"]\n  exempt: { cgroups: ["${cgroup.path("proxy")}"] }\n  rules:\n    - { originalPort: ${port}, port: ${PROXY_PORT} }\n`,
      );
    await team("team_a", 8080);
    await team("team_b", 8081);
    const applied = await intercept("apply", folder, "--netns", host, "--yes", "--no-color");
    assert.equal(applied.exitCode, 0, applied.stderr + applied.stdout);
    const { programs, cgroups } = await status();
    assert.deepEqual(
      programs.map((program) => program.policy),
      ["team_a+team_b"],
      "one composition; neither file's own program is loaded",
    );
    assert.deepEqual(cgroups.map((entry) => [entry.path, entry.policy]).sort(), [
      [cgroup.path("app"), "team_a+team_b"],
      [cgroup.path("proxy"), "team_a+team_b"],
    ]);
    assert.deepEqual((await attachedTo("app")).sort(), [
      "out_connect4",
      "out_connect6",
      "out_getsockopt",
      "out_sockops",
    ]);
    assert.deepEqual(await attachedTo("proxy"), ["out_getsockopt"]);
    proxyLog.length = 0;
    for (const port of [8080, 8081]) {
      const exchange = await connect("app", REMOTE_V4, port);
      assert.equal(viaProxy(exchange), `${REMOTE_V4} ${port}`, JSON.stringify(exchange));
      assert.match(exchange.response!, new RegExp(`\\nserver \\S*${REMOTE_V4.replaceAll(".", "\\.")} ${port} `));
    }
    const seen = proxyLog.map((line) => JSON.parse(line) as { original?: [string, number]; error?: string });
    assert.deepEqual(
      seen.map((entry) => entry.original ?? entry.error),
      [
        [REMOTE_V4, 8080],
        [REMOTE_V4, 8081],
      ],
      "SO_ORIGINAL_DST for each file's rule, as the proxy read it",
    );
    await destroy();
    assert.deepEqual([...(await attachedTo("app")), ...(await attachedTo("proxy"))], []);
    assert.ok(!existsSync(`/sys/fs/bpf/intercept/${lab.pinKey}`), "no pins");
    assert.equal(viaProxy(await connect("app", REMOTE_V4, 8081)), undefined);
  });
});

describe("the proxy exempt by a cgroup inside the captured one", { concurrency: false }, () => {
  before(() => startProxy("app/sidecar", []));
  after(stopProxy);

  test("the captured cgroup's programs run for the proxy too: its connections are told apart by cgroup id, and go direct", async () => {
    await apply(await policy("outbound_sidecar", `{ cgroups: ["${cgroup.path("app/sidecar")}"] }`, rule8080()));
    const report = await status();
    const [exempt] = report.programs[0]!.exemptCgroups;
    assert.equal(exempt!.level, 3, `${cgroup.path("app/sidecar")} is three levels below the root`);
    // Without the id check the proxy's upstream connect() would be sent back to the proxy itself.
    assert.equal(viaProxy(await connect("app", REMOTE_V4, 8080)), `${REMOTE_V4} 8080`);
    assert.equal(viaProxy(await connect("app/sidecar", REMOTE_V4, 8080)), undefined);
    await destroy();
  });
});

describe("the proxy exempt by its socket mark", { concurrency: false }, () => {
  before(() => startProxy("app", ["--mark", String(PROXY_MARK)]));
  after(stopProxy);

  test("the proxy runs as root beside the applications and marks its upstream sockets: they go direct", async () => {
    await apply(await policy("outbound_mark", `{ marks: [${PROXY_MARK}] }`, rule8080()));
    assert.equal(viaProxy(await connect("app", REMOTE_V4, 8080)), `${REMOTE_V4} 8080`);
    await destroy();
  });
});

describe("what intercept leaves alone", { concurrency: false }, () => {
  before(() => startProxy("app", ["--uid", String(PROXY_UID)]));
  after(stopProxy);

  test("a connection made before apply is not affected", async () => {
    const held = cgroup.spawn("app", host, ["python3", OUTBOUND_HELPER, "client", REMOTE_V4, "8080", "--hold"]);
    const connected = new Promise<void>((resolve) => held.stdout!.once("data", () => resolve()));
    await connected;
    await apply(await policy("outbound_before", `{ uids: [${PROXY_UID}] }`, rule8080()));
    held.stdin!.end("go\n");
    const result = await held;
    const exchange = JSON.parse(String(result.stdout).split("\n").at(-1)!) as Exchange;
    assert.equal(exchange.answered, 1, JSON.stringify(exchange));
    assert.equal(viaProxy(exchange), undefined, "it kept going to the server it was connected to");
    assert.equal(viaProxy(await connect("app", REMOTE_V4, 8080)), `${REMOTE_V4} 8080`, "a new one is captured");
    await destroy();
  });

  test("another tool's program on the same cgroup keeps running, before and after intercept", async () => {
    const pin = `/sys/fs/bpf/intercept-test-foreign-${path.basename(cgroup.name)}`;
    const object = path.join(scratch, "foreign-cgroup.bpf.o");
    await compileBpf("tests/support/foreign-cgroup.bpf.c", object);
    await execa("bpftool", ["prog", "load", object, pin, "type", "cgroup/connect4"]);
    try {
      await execa("bpftool", [
        "cgroup",
        "attach",
        cgroup.directory("app"),
        "cgroup_inet4_connect",
        "pinned",
        pin,
        "multi",
      ]);
      await apply(await policy("outbound_foreign", `{ uids: [${PROXY_UID}] }`, rule8080()));
      const report = await status();
      const app = report.cgroups.find((entry) => entry.path === cgroup.path("app"))!;
      assert.deepEqual(app.foreign, ["foreign_connect"], "status names it as another's");
      assert.equal(viaProxy(await connect("app", REMOTE_V4, 8080)), `${REMOTE_V4} 8080`, "capture works beside it");
      await destroy();
      assert.deepEqual(await attachedTo("app"), ["foreign_connect"], "still attached after destroy");
    } finally {
      await execa("bpftool", ["cgroup", "detach", cgroup.directory("app"), "cgroup_inet4_connect", "pinned", pin], {
        reject: false,
      });
      await rm(pin, { force: true });
    }
  });

  test("a cgroup the policy names and the kernel lacks is a one-line error naming it, and nothing changes", async () => {
    const file = path.join(scratch, "missing.yaml");
    await writeFile(
      file,
      `outbound:\n  cgroups: ["${cgroup.path("missing")}"]\n  exempt: { uids: [${PROXY_UID}] }\n  rules:\n${rule8080()}`,
    );
    const planned = await intercept("plan", file, "--netns", host, "--no-color");
    assert.equal(planned.exitCode, 1);
    assert.match(
      planned.stderr,
      new RegExp(
        `^intercept: policy "missing": cgroup "${cgroup.path("missing")}" does not exist under the cgroup2 mount ${cgroup.root}$`,
      ),
    );
    assert.ok(!existsSync(`/sys/fs/bpf/intercept/${lab.pinKey}`));
  });
});
