/**
 * Steering against the real kernel (docs/steering.md), in namespaces this
 * test creates and always removes: connections keep working across apply,
 * replace, retarget and destroy; clients of the proxy port, many-to-one,
 * proxy down, IPv6, dual-stack and SO_REUSEPORT listeners; and a SYN whose
 * 4-tuple the server still holds in TIME_WAIT: the TIME_WAIT ended and the
 * SYN steered, the fallbacks when that cannot be done, and wrk's
 * Connection: close load, which reuses such tuples all the time.
 *
 * The servers are lab/echo.ts line echoes tagged by role, answering with
 * the accepted socket's local address and port: the original destination.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { execa } from "execa";
import { EchoConnection, probe, type EchoReply, type ProbeResult } from "../../lab/echo-client.js";
import { intercept, Lab, SERVER_ADDRESS, SERVER_ADDRESS_V6 } from "../../lab/network.js";
import { parseWrk } from "../../lab/wrk.js";

const BACKEND_PORTS = [8000, 8001, 8002, 8003, 8004, 8005];
/** Node's default listener: `::`, dual-stack. */
const PROXY_PORT = 9000;
/** Bound to 0.0.0.0: IPv4 only. */
const OTHER_PROXY_PORT = 9100;
/** Two Python sockets in one SO_REUSEPORT group. */
const REUSEPORT_PORT = 9200;
/** Nothing listens here. */
const DOWN_PORT = 9900;
/** lab's HTTP server (bench/http-server.ts), for wrk. */
const HTTP_PORT = 9300;

let lab: Lab;
let scratch: string;
const connections: EchoConnection[] = [];

before(async () => {
  lab = await Lab.create();
  scratch = await mkdtemp(path.join(tmpdir(), "intercept-steer-"));
  await lab.addIpv6();
  await lab.startInServer(
    ["node", "dist/lab/echo.js", "serve", "--tag", "backend", ...BACKEND_PORTS.map(String)],
    /ready/,
  );
  await lab.startInServer(["node", "dist/lab/echo.js", "serve", "--tag", "proxy", String(PROXY_PORT)], /ready/);
  await lab.startInServer(
    ["node", "dist/lab/echo.js", "serve", "--tag", "other-proxy", "--host", "0.0.0.0", String(OTHER_PROXY_PORT)],
    /ready/,
  );
  await lab.startInServer(["python3", "lab/reuseport-echo.py", String(REUSEPORT_PORT)], /ready/);
  await lab.startInServer(["node", "dist/bench/http-server.js", String(HTTP_PORT)], /ready/);
});

after(async () => {
  for (const connection of connections) connection.kill();
  await lab?.destroy();
  await rm(scratch, { recursive: true, force: true });
  const namespaces = (await execa("ip", ["netns", "list"])).stdout;
  assert.ok(!namespaces.includes(lab.id), "the lab's namespaces are gone");
});

async function open(
  host: string,
  port: number,
  options: { localPort?: number; timeoutMs?: number } = {},
): Promise<EchoConnection> {
  const connection = await EchoConnection.open(lab, host, port, options);
  connections.push(connection);
  return connection;
}

async function apply(name: string, yaml: string): Promise<string> {
  const file = path.join(scratch, `${name}.yaml`);
  await writeFile(file, yaml);
  const applied = await intercept("apply", file, "--netns", lab.serverNs, "--yes", "--no-color");
  assert.equal(applied.exitCode, 0, applied.stdout + applied.stderr);
  return applied.stdout;
}

async function destroy(): Promise<void> {
  const destroyed = await intercept("destroy", "--netns", lab.serverNs, "--yes", "--no-color");
  assert.equal(destroyed.exitCode, 0, destroyed.stdout + destroyed.stderr);
}

interface SteerCounters {
  steered: number;
  proxyDown: number;
  timeWait: number;
  timeWaitRecycled: number;
}

/** A rule's steer counters, as `status --json` reports them. */
async function counters(index: number): Promise<SteerCounters> {
  const status = JSON.parse((await intercept("status", "--netns", lab.serverNs, "--json")).stdout);
  assert.equal(status.programs.length, 1, JSON.stringify(status.programs));
  const rule = status.programs[0].rules.find((r: { index: number }) => r.index === index);
  const { steered, proxyDown, timeWait, timeWaitRecycled } = rule.counters;
  return {
    steered: steered.packets,
    proxyDown: proxyDown.packets,
    timeWait: timeWait.packets,
    timeWaitRecycled: timeWaitRecycled.packets,
  };
}

/** Who answered a probe, and on which local port. */
function served(results: ProbeResult[]): string[] {
  return results.map((result) => ("error" in result ? `error: ${result.error}` : `${result.tag}@${result.localPort}`));
}

function answeredBy(reply: EchoReply): string {
  return `${reply.tag}@${reply.localPort}`;
}

describe("connections are never disturbed by apply, replace, retarget and destroy", { concurrency: false }, () => {
  let direct: EchoConnection;
  let proxied: EchoConnection;
  let retargeted: EchoConnection;

  test("a connection to originalPort opened before apply is the backend's", async () => {
    direct = await open(SERVER_ADDRESS, 8000);
    assert.equal(answeredBy(await direct.send("before apply")), "backend@8000");
  });

  test("apply: the open connection keeps exchanging with the backend, new ones reach the proxy", async () => {
    const applied = await apply("lifecycle", `interceptors:\n  - { originalPort: 8000, port: ${PROXY_PORT} }\n`);
    assert.match(applied, /Apply complete! Resources: 2 added/);
    for (let i = 0; i < 3; i++) assert.equal(answeredBy(await direct.send(`after apply ${i}`)), "backend@8000");
    proxied = await open(SERVER_ADDRESS, 8000);
    assert.equal(answeredBy(await proxied.send("proxied")), "proxy@8000");
  });

  test("retarget (a program replace): both connections keep working, new ones reach the new target", async () => {
    const applied = await apply("lifecycle", `interceptors:\n  - { originalPort: 8000, port: ${OTHER_PROXY_PORT} }\n`);
    assert.match(applied, /-\/\+ program\.lifecycle +replace: program changed/);
    assert.equal(answeredBy(await direct.send("after replace")), "backend@8000");
    assert.equal(answeredBy(await proxied.send("after retarget")), "proxy@8000");
    retargeted = await open(SERVER_ADDRESS, 8000);
    assert.equal(answeredBy(await retargeted.send("retargeted")), "other-proxy@8000");
  });

  test("destroy: every connection keeps working, new ones reach the backend", async () => {
    await destroy();
    assert.equal(answeredBy(await direct.send("after destroy")), "backend@8000");
    assert.equal(answeredBy(await proxied.send("after destroy")), "proxy@8000");
    assert.equal(answeredBy(await retargeted.send("after destroy")), "other-proxy@8000");
    assert.deepEqual(served(await probe(lab, SERVER_ADDRESS, 8000)), ["backend@8000"]);
    for (const connection of [direct, proxied, retargeted]) await connection.close();
  });
});

describe("while a steer policy is active", { concurrency: false }, () => {
  const rule = { toProxy: 0, manyToOne: 1, downDrop: 2, downPass: 3, toProxyPass: 4, reuseport: 5, http: 6 };

  before(async () => {
    await apply(
      "active",
      [
        "interceptors:",
        `  - { originalPort: 8000, port: ${PROXY_PORT} }`,
        `  - { originalPort: 8001, port: ${PROXY_PORT} }`,
        `  - { originalPort: 8002, port: ${DOWN_PORT} }`,
        `  - { originalPort: 8003, port: ${DOWN_PORT}, onProxyDown: pass }`,
        `  - { originalPort: 8004, port: ${PROXY_PORT}, onProxyDown: pass }`,
        `  - { originalPort: 8005, port: ${REUSEPORT_PORT} }`,
        `  - { originalPort: 8006, port: ${HTTP_PORT} }`,
        "",
      ].join("\n"),
    );
  });

  after(destroy);

  test("a client of the proxy port itself is served by the proxy", async () => {
    assert.deepEqual(served(await probe(lab, SERVER_ADDRESS, PROXY_PORT, 3)), Array(3).fill(`proxy@${PROXY_PORT}`));
  });

  test("many-to-one: 8000 and 8001 both reach the proxy, which sees the port each client asked for", async () => {
    const before = await Promise.all([counters(rule.toProxy), counters(rule.manyToOne)]);
    assert.deepEqual(served(await probe(lab, SERVER_ADDRESS, 8000)), ["proxy@8000"]);
    assert.deepEqual(served(await probe(lab, SERVER_ADDRESS, 8001)), ["proxy@8001"]);
    const afterwards = await Promise.all([counters(rule.toProxy), counters(rule.manyToOne)]);
    assert.deepEqual(
      afterwards.map((c, i) => c.steered - before[i]!.steered),
      [1, 1],
      "one connection steered per rule",
    );
  });

  test("proxy down, drop: the connection attempt fails and proxyDown counts it", async () => {
    const before = await counters(rule.downDrop);
    const [result] = await probe(lab, SERVER_ADDRESS, 8002, 1, 1500);
    assert.ok(result && "error" in result && /timed out/.test(result.error), JSON.stringify(result));
    const afterwards = await counters(rule.downDrop);
    assert.ok(afterwards.proxyDown > before.proxyDown, `proxyDown ${before.proxyDown} → ${afterwards.proxyDown}`);
    assert.equal(afterwards.steered, before.steered);
  });

  test("proxy down, pass: the backend on originalPort answers and proxyDown counts it", async () => {
    const before = await counters(rule.downPass);
    assert.deepEqual(served(await probe(lab, SERVER_ADDRESS, 8003)), ["backend@8003"]);
    const afterwards = await counters(rule.downPass);
    assert.deepEqual(afterwards, { ...before, proxyDown: before.proxyDown + 1 });
  });

  test("IPv4 to Node's dual-stack listener: the proxy's socket holds the original IPv4 destination", async () => {
    const connection = await open(SERVER_ADDRESS, 8000);
    const reply = await connection.send("dual-stack");
    assert.deepEqual([reply.tag, reply.localAddress, reply.localPort], ["proxy", `::ffff:${SERVER_ADDRESS}`, 8000]);
    await connection.close();
  });

  test("IPv6: steered to the same listener, which holds the original IPv6 destination", async () => {
    const before = await counters(rule.toProxy);
    const connection = await open(SERVER_ADDRESS_V6, 8000);
    const reply = await connection.send("ipv6");
    assert.deepEqual([reply.tag, reply.localAddress, reply.localPort], ["proxy", SERVER_ADDRESS_V6, 8000]);
    await connection.close();
    assert.equal((await counters(rule.toProxy)).steered, before.steered + 1);
  });

  test("a two-socket SO_REUSEPORT group: connections spread over both members", async () => {
    const results = await probe(lab, SERVER_ADDRESS, 8005, 50);
    const failed = results.filter((result) => "error" in result);
    assert.deepEqual(failed, []);
    const members = new Set((results as EchoReply[]).map((reply) => reply.tag));
    assert.deepEqual([...members].sort(), ["member-0", "member-1"]);
    assert.ok((results as EchoReply[]).every((reply) => reply.localPort === 8005));
    assert.equal((await counters(rule.reuseport)).steered, 50);
  });

  /**
   * A client reusing its 4-tuple while the proxy still holds it in
   * TIME_WAIT (the proxy closed first): the program ends the TIME_WAIT with
   * a RST and steers the SYN, unless the kernel would not let a RST end it
   * (docs/steering.md, "TIME_WAIT").
   */
  describe("TIME_WAIT: a client reusing a 4-tuple the proxy closed", { concurrency: false }, () => {
    /** Opens a proxied connection from @localPort, lets the proxy close it, and waits for the server's TIME_WAIT. */
    async function leaveInTimeWait(host: string, originalPort: number, localPort: number): Promise<void> {
      const connection = await open(host, originalPort, { localPort });
      assert.equal(answeredBy(await connection.send("first")), `proxy@${originalPort}`);
      await connection.closeFromServer();
      await until(
        `the server holds :${originalPort} ↔ :${localPort} in TIME_WAIT`,
        async () => (await timeWaits(originalPort, localPort)) === 1,
      );
      await until(
        `the client's port ${localPort} is free`,
        async () => (await socketsOf(lab.runInClient.bind(lab), `( sport = :${localPort} )`)) === 0,
      );
    }

    function timeWaits(originalPort: number, localPort: number): Promise<number> {
      return socketsOf(
        lab.runInServer.bind(lab),
        `state time-wait ( sport = :${originalPort} and dport = :${localPort} )`,
      );
    }

    /** Sets sysctls (`key=value`) in a namespace. */
    async function sysctl(runIn: Lab["runInServer"], ...settings: string[]): Promise<void> {
      const set = await runIn(["sysctl", "-q", "-w", ...settings]);
      assert.equal(set.exitCode, 0, String(set.stderr));
    }

    for (const [family, host, localPort] of [
      ["IPv4", SERVER_ADDRESS, 40_001],
      ["IPv6", SERVER_ADDRESS_V6, 40_002],
    ] as const) {
      test(`${family}: the TIME_WAIT is ended and the SYN steered to the proxy, counted in timeWaitRecycled`, async () => {
        await leaveInTimeWait(host, 8000, localPort);
        const before = await counters(rule.toProxy);
        const connection = await open(host, 8000, { localPort });
        assert.equal(answeredBy(await connection.send("again")), "proxy@8000");
        await connection.close();
        assert.deepEqual(await counters(rule.toProxy), {
          ...before,
          steered: before.steered + 1,
          timeWaitRecycled: before.timeWaitRecycled + 1,
        });
      });
    }

    describe("net.ipv4.tcp_rfc1337 = 1: a RST does not end a TIME_WAIT, so onProxyDown applies", {
      concurrency: false,
    }, () => {
      before(() => sysctl(lab.runInServer.bind(lab), "net.ipv4.tcp_rfc1337=1"));
      after(() => sysctl(lab.runInServer.bind(lab), "net.ipv4.tcp_rfc1337=0"));

      test("drop: the SYN is dropped and counted in timeWait; the TIME_WAIT stays", async () => {
        await leaveInTimeWait(SERVER_ADDRESS, 8000, 40_003);
        const before = await counters(rule.toProxy);
        await assert.rejects(open(SERVER_ADDRESS, 8000, { localPort: 40_003, timeoutMs: 2500 }), /timed out/);
        const afterwards = await counters(rule.toProxy);
        assert.ok(afterwards.timeWait > before.timeWait, `timeWait ${before.timeWait} → ${afterwards.timeWait}`);
        assert.deepEqual(
          { ...afterwards, timeWait: before.timeWait },
          before,
          "nothing steered, recycled or proxy-down",
        );
        assert.equal(await timeWaits(8000, 40_003), 1);
      });

      test("pass: the kernel's own TIME_WAIT reuse hands the SYN to the listener on originalPort", async () => {
        await leaveInTimeWait(SERVER_ADDRESS, 8004, 40_004);
        const before = await counters(rule.toProxyPass);
        const connection = await open(SERVER_ADDRESS, 8004, { localPort: 40_004 });
        assert.equal(answeredBy(await connection.send("again")), "backend@8004");
        await connection.close();
        assert.deepEqual(await counters(rule.toProxyPass), { ...before, timeWait: before.timeWait + 1 });
      });
    });

    test("a RST that does not take (netfilter drops it): each SYN goes round once, then onProxyDown applies", async () => {
      await leaveInTimeWait(SERVER_ADDRESS, 8000, 40_005);
      const dropResets = [
        "INPUT",
        "-p",
        "tcp",
        "--tcp-flags",
        "RST",
        "RST",
        "--dport",
        "8000",
        "--sport",
        "40005",
        "-j",
        "DROP",
      ];
      const inserted = await lab.runInServer(["iptables", "-I", ...dropResets]);
      assert.equal(inserted.exitCode, 0, String(inserted.stderr));
      try {
        const before = await counters(rule.toProxy);
        await assert.rejects(open(SERVER_ADDRESS, 8000, { localPort: 40_005, timeoutMs: 2500 }), /timed out/);
        const afterwards = await counters(rule.toProxy);
        const fallbacks = afterwards.timeWait - before.timeWait;
        const resets = await droppedPackets("INPUT");
        // The client sends its SYN at 0 s and again at 1 s: each try is one RST and, on the
        // SYN's second pass, one fallback; a SYN within a second of the last try falls back at once.
        assert.ok(fallbacks >= 1 && fallbacks <= 3, `timeWait ${before.timeWait} → ${afterwards.timeWait}`);
        assert.ok(resets >= 1 && resets <= fallbacks, `${resets} RSTs dropped for ${fallbacks} fallbacks`);
        assert.deepEqual(
          { ...afterwards, timeWait: before.timeWait },
          before,
          "nothing steered, recycled or proxy-down",
        );
        assert.equal(await timeWaits(8000, 40_005), 1);
      } finally {
        const deleted = await lab.runInServer(["iptables", "-D", ...dropResets]);
        assert.equal(deleted.exitCode, 0, String(deleted.stderr));
      }
    });

    /** Packets the one DROP rule of the server's iptables @chain has counted. */
    async function droppedPackets(chain: string): Promise<number> {
      const listed = await lab.runInServer(["iptables", "-L", chain, "-v", "-x", "-n"]);
      assert.equal(listed.exitCode, 0, String(listed.stderr));
      const rules = String(listed.stdout)
        .split("\n")
        .filter((line) => /\bDROP\b/.test(line));
      assert.equal(rules.length, 1, String(listed.stdout));
      return Number(rules[0]!.trim().split(/\s+/)[0]);
    }

    test("load: 6 s of wrk with Connection: close, 50 connections from a narrow port range: no error, tuples recycled", async () => {
      // Linux hands a client successive ports towards one destination, so a port comes round
      // again only after the whole range: with 6,000 ports it does within the run at any rate
      // above 1,000 connections a second. wrk often closes first itself, and the client's own
      // TIME_WAITs would exhaust the range: tcp_tw_reuse = 1 lets it reuse them, once they are
      // a second old (so the range must not come round faster than that).
      const client = lab.runInClient.bind(lab);
      const saved = await Promise.all(
        ["net.ipv4.ip_local_port_range", "net.ipv4.tcp_tw_reuse"].map(
          async (key) =>
            `${key}=${String((await client(["sysctl", "-n", key])).stdout)
              .trim()
              .replace(/\s+/, " ")}`,
        ),
      );
      await sysctl(client, "net.ipv4.ip_local_port_range=50000 55999", "net.ipv4.tcp_tw_reuse=1");
      try {
        const before = await counters(rule.http);
        const wrk = await lab.runInClient([
          "wrk",
          "-t1",
          "-c50",
          "-d6s",
          "-H",
          "Connection: close",
          `http://${SERVER_ADDRESS}:8006/`,
        ]);
        assert.equal(wrk.exitCode, 0, String(wrk.stderr));
        const result = parseWrk(String(wrk.stdout));
        const afterwards = await counters(rule.http);
        assert.ok(result.requests > 0, String(wrk.stdout));
        assert.deepEqual([result.socketErrors, result.non2xx], [0, 0], String(wrk.stdout));
        assert.ok(
          afterwards.timeWaitRecycled > before.timeWaitRecycled,
          `timeWaitRecycled ${before.timeWaitRecycled} → ${afterwards.timeWaitRecycled}`,
        );
        assert.deepEqual([afterwards.timeWait, afterwards.proxyDown], [before.timeWait, before.proxyDown]);
      } finally {
        await sysctl(client, ...saved);
      }
    });
  });
});

/** How many sockets `ss` lists in a namespace for @filter. */
async function socketsOf(runIn: Lab["runInServer"], filter: string): Promise<number> {
  const listed = await runIn(["ss", "-Htan", ...filter.split(" ")]);
  assert.equal(listed.exitCode, 0, String(listed.stderr));
  return String(listed.stdout)
    .split("\n")
    .filter((line) => line.trim() !== "").length;
}

async function until(what: string, condition: () => Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await sleep(50);
  }
}
