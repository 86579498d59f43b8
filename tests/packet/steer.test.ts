/**
 * Packet-level tests of steer rules under BPF_PROG_TEST_RUN. A steer rule
 * acts on a connection's SYN only (the assignment itself needs a real tc
 * ingress and is tested end to end); every other packet to a steer port
 * must leave exactly as it came, with TC_ACT_UNSPEC. A SYN whose 4-tuple
 * is in TIME_WAIT is run in a namespace that holds one, where the RST the
 * program sends ahead of it reaches the stack for real.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { execa } from "execa";
import type { CounterSlot } from "../../src/compile/counters.js";
import { SWITCH_LIMIT } from "../../src/compile/render.js";
import { LoadedProgram, testPolicy } from "../support/bpf.js";
import { testRun } from "../../lab/bpf.js";
import { buildPacket, type PacketSpec, type TcpFlag } from "../../lab/packets.js";

const TC_ACT_UNSPEC = -1;
const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;

const STEER_RULES = [
  { originalPort: 8000, port: 9000 }, // 0: steer, fails closed (default)
  { originalPort: 8001, port: 9000, onProxyDown: "pass" as const }, // 1: many-to-one, passes
  { originalPort: 7000, port: 7100, family: "ipv4" as const }, // 2: IPv4 only
  { originalPort: 8443, port: 9443, enabled: false }, // 3: disabled
];

/** Padded past the switch limit, so the compiler picks lookup tables. */
const FILLER = Array.from({ length: SWITCH_LIMIT }, (_, i) => ({ originalPort: 30_000 + i, port: 50_000 }));

/** Every TCP segment that is not a new connection's first. */
const NOT_A_NEW_CONNECTION: TcpFlag[][] = [
  ["ack"],
  ["psh", "ack"],
  ["fin", "ack"],
  ["rst"],
  ["rst", "ack"],
  ["syn", "ack"],
  ["fin"],
];

/** The sum over CPUs of one counter slot's packets. */
async function counted(program: LoadedProgram, rule: number, slot: CounterSlot): Promise<number> {
  return (await program.counters(rule))[slot].packets;
}

for (const [strategy, rules] of [
  ["switch", STEER_RULES],
  ["table", [...STEER_RULES, ...FILLER]],
] as const) {
  describe(`steer rules, ${strategy} strategy`, () => {
    let program: LoadedProgram;
    before(async () => {
      program = await LoadedProgram.load(testPolicy(`steer_${strategy}`, rules));
    });
    after(async () => {
      await program?.close();
    });

    /** Runs @spec through ingress; asserts the verdict and that the frame came out as it went in. */
    async function expectUntouched(spec: PacketSpec, verdict = TC_ACT_UNSPEC) {
      const frame = buildPacket(spec);
      const result = await program.run("ingress", frame);
      assert.equal(result.returnValue, verdict, JSON.stringify(spec));
      assert.deepEqual(result.output.toString("hex"), frame.toString("hex"), "the packet is never rewritten");
    }

    test("a policy that only steers has no egress program", () => {
      assert.ok(existsSync(program.programPin("ingress")));
      assert.ok(!existsSync(program.programPin("egress")));
    });

    for (const family of ["ipv4", "ipv6"] as const) {
      test(`${family}: ACK, data, FIN, RST and SYN+ACK to a steer port leave unchanged`, async () => {
        for (const dport of [8000, 8001]) {
          for (const tcpFlags of NOT_A_NEW_CONNECTION)
            await expectUntouched({ family, protocol: "tcp", sport: 40000, dport, tcpFlags });
        }
      });

      test(`${family}: UDP to a steer port leaves unchanged`, async () => {
        await expectUntouched({ family, protocol: "udp", sport: 40000, dport: 8000 });
        await expectUntouched({ family, protocol: "udp", sport: 40000, dport: 9000 });
      });

      test(`${family}: a SYN to a port no rule names, or to the proxy port, leaves unchanged`, async () => {
        await expectUntouched({ family, protocol: "tcp", sport: 40000, dport: 8002, tcpFlags: ["syn"] });
        await expectUntouched({ family, protocol: "tcp", sport: 40000, dport: 9000, tcpFlags: ["syn"] });
      });
    }

    // Under BPF_PROG_TEST_RUN the skb is not at tc ingress, so bpf_sk_assign refuses even a
    // listener the lookup finds: a SYN always takes the proxy-down path here, which makes
    // that path's verdicts and counters testable. Steering itself is tested end to end.
    test("proxy down: drop fails closed (TC_ACT_SHOT), pass hands the SYN on; both are counted", async () => {
      const syn = (dport: number, family: PacketSpec["family"] = "ipv4"): PacketSpec => ({
        family,
        protocol: "tcp",
        sport: 40000,
        dport,
        tcpFlags: ["syn"],
        payload: Buffer.alloc(0),
      });
      const before = [await counted(program, 0, "proxyDown"), await counted(program, 1, "proxyDown")];
      await expectUntouched(syn(8000), TC_ACT_SHOT);
      await expectUntouched(syn(8000, "ipv6"), TC_ACT_SHOT);
      await expectUntouched(syn(8001), TC_ACT_UNSPEC);
      assert.deepEqual(
        [await counted(program, 0, "proxyDown"), await counted(program, 1, "proxyDown")],
        [before[0]! + 2, before[1]! + 1],
      );
      assert.equal(await counted(program, 0, "steered"), 0);
    });

    test("a steer rule's family is honoured", async () => {
      const before = await counted(program, 2, "proxyDown");
      await expectUntouched({ family: "ipv6", protocol: "tcp", sport: 1, dport: 7000, tcpFlags: ["syn"] });
      assert.equal(await counted(program, 2, "proxyDown"), before);
      await expectUntouched({ family: "ipv4", protocol: "tcp", sport: 1, dport: 7000, tcpFlags: ["syn"] }, TC_ACT_SHOT);
      assert.equal(await counted(program, 2, "proxyDown"), before + 1);
    });

    test("a disabled steer rule hands the SYN on untouched until enabled, with no reload", async () => {
      const spec: PacketSpec = { family: "ipv4", protocol: "tcp", sport: 1, dport: 8443, tcpFlags: ["syn"] };
      const before = await counted(program, 3, "proxyDown");
      await expectUntouched(spec, TC_ACT_UNSPEC);
      assert.equal(await counted(program, 3, "proxyDown"), before, "a disabled rule counts nothing");
      await program.setRule(3, true);
      try {
        await expectUntouched(spec, TC_ACT_SHOT);
      } finally {
        await program.setRule(3, false);
      }
      await expectUntouched(spec, TC_ACT_UNSPEC);
    });
  });
}

describe("steer and rewrite rules in one program", () => {
  let program: LoadedProgram;
  before(async () => {
    program = await LoadedProgram.load(
      testPolicy("steer_and_rewrite", [
        { originalPort: 8000, port: 9000 }, // 0: steer
        { originalPort: 7000, port: 9000, strategy: "rewrite" }, // 1: rewrite to the same target
        { originalPort: 8000, port: 9053, protocol: "udp" }, // 2: udp on the steer port, rewrite
      ]),
    );
  });
  after(async () => {
    await program?.close();
  });

  test("both programs are there", () => {
    assert.ok(existsSync(program.programPin("ingress")));
    assert.ok(existsSync(program.programPin("egress")));
  });

  test("a steer port's data is untouched, a rewrite port's is rewritten, udp on the steer port follows its own rule", async () => {
    const data = (dport: number, protocol: "tcp" | "udp" = "tcp"): PacketSpec => ({
      family: "ipv4",
      protocol,
      sport: 40000,
      dport,
    });
    const steered = buildPacket(data(8000));
    assert.deepEqual((await program.run("ingress", steered)).output, steered);
    assert.deepEqual((await program.run("ingress", buildPacket(data(7000)))).output, buildPacket(data(9000)));
    assert.deepEqual(
      (await program.run("ingress", buildPacket(data(8000, "udp")))).output,
      buildPacket(data(9053, "udp")),
    );
  });

  test("egress rewrites the rewrite rule's replies only: a steered connection's replies leave from its own port", async () => {
    const reply = (sport: number): PacketSpec => ({ family: "ipv6", protocol: "tcp", sport, dport: 40000 });
    assert.deepEqual((await program.run("egress", buildPacket(reply(9000)))).output, buildPacket(reply(7000)));
    const steeredReply = buildPacket(reply(8000));
    assert.deepEqual((await program.run("egress", steeredReply)).output, steeredReply);
  });
});

for (const count of [1, SWITCH_LIMIT + 1, 10_000]) {
  test(`${count.toLocaleString("en")} steer rule${count === 1 ? "" : "s"}: the program passes the verifier and hands data on`, async () => {
    const rules = Array.from({ length: count }, (_, i) => ({ originalPort: 10_000 + i, port: 9000 }));
    const program = await LoadedProgram.load(testPolicy(`steer_${count}`, rules));
    try {
      for (const index of new Set([0, Math.floor(count / 2), count - 1])) {
        const frame = buildPacket({ family: "ipv6", protocol: "tcp", sport: 5, dport: 10_000 + index });
        const result = await program.run("ingress", frame);
        assert.equal(result.returnValue, TC_ACT_UNSPEC);
        assert.deepEqual(result.output, frame);
        const syn = buildPacket({
          family: "ipv4",
          protocol: "tcp",
          sport: 5,
          dport: 10_000 + index,
          tcpFlags: ["syn"],
        });
        assert.equal(
          (await program.run("ingress", syn)).returnValue,
          TC_ACT_SHOT,
          "the SYN path runs: proxy down, dropped",
        );
      }
    } finally {
      await program.close();
    }
  });
}

/**
 * A SYN for a 4-tuple in TIME_WAIT, run in a namespace whose loopback holds
 * both of lab/packets.ts's addresses and the frames' destination MAC: the
 * program's lookups find the namespace's TIME_WAIT socket, and the RST it
 * sends ahead of the SYN (to the skb's device, this loopback) is received
 * by the namespace's stack. A BPF_PROG_TEST_RUN skb carries no checksum
 * offload (CHECKSUM_NONE), so the stack verifies the RST's checksum in
 * full: a TIME_WAIT it ends proves the RST well formed. (The SYN itself is
 * not redirected under BPF_PROG_TEST_RUN: a second run plays its second
 * pass.) Which of two sequence numbers 2^31 apart is after the TIME_WAIT's
 * rcv_nxt is not known in advance: exactly one of them is.
 */
describe("a SYN whose 4-tuple is in TIME_WAIT", { concurrency: false }, () => {
  const namespace = `intercept-tw-${randomBytes(4).toString("hex")}`;
  const rule = { originalPort: 8000, port: 9000 }; // nothing listens on 9000: proxy down, dropped
  let program: LoadedProgram;

  before(async () => {
    await execa("ip", ["netns", "add", namespace]);
    await inNamespace("ip", "link", "set", "lo", "address", "02:00:00:00:00:01", "up");
    await inNamespace("ip", "addr", "add", "198.18.0.1/32", "dev", "lo");
    await inNamespace("ip", "addr", "add", "198.18.0.2/32", "dev", "lo");
    // The RST arrives on lo from a local address: without accept_local it is a martian.
    await inNamespace("sysctl", "-q", "-w", "net.ipv4.conf.all.accept_local=1", "net.ipv4.conf.lo.accept_local=1");
    program = await LoadedProgram.load(testPolicy("steer_time_wait", [rule]));
  });
  after(async () => {
    await program?.close();
    await execa("ip", ["netns", "del", namespace]);
  });

  async function inNamespace(...command: string[]): Promise<string> {
    return (await execa("ip", ["netns", "exec", namespace, ...command])).stdout;
  }

  async function leaveInTimeWait(clientPort: number): Promise<void> {
    await inNamespace(
      "python3",
      "lab/time-wait.py",
      "198.18.0.1",
      String(rule.originalPort),
      "198.18.0.2",
      String(clientPort),
    );
    assert.equal(await timeWaits(clientPort), 1, "the server side holds the tuple in TIME_WAIT");
  }

  async function timeWaits(clientPort: number): Promise<number> {
    const listed = await inNamespace(
      "ss",
      "-Htan",
      "state",
      "time-wait",
      "(",
      "sport",
      "=",
      `:${rule.originalPort}`,
      "and",
      "dport",
      "=",
      `:${clientPort}`,
      ")",
    );
    return listed.split("\n").filter((line) => line.trim() !== "").length;
  }

  /** Runs a SYN from @clientPort with sequence number @seq; asserts it leaves exactly as it came. */
  async function runSyn(clientPort: number, seq: number): Promise<number> {
    const frame = buildPacket({
      family: "ipv4",
      protocol: "tcp",
      sport: clientPort,
      dport: rule.originalPort,
      tcpFlags: ["syn"],
      seq,
      payload: Buffer.alloc(0),
    });
    const result = await testRun(program.programPin("ingress"), frame, 1, { name: namespace });
    assert.deepEqual(result.output.toString("hex"), frame.toString("hex"), "the SYN is restored byte for byte");
    return result.returnValue;
  }

  async function counted(slot: CounterSlot): Promise<number> {
    return (await program.counters(0))[slot].packets;
  }

  /** The namespace's TcpInSegs (nstat, absolute, its history file left alone). */
  async function tcpSegmentsIn(): Promise<number> {
    const [, value] = (await inNamespace("nstat", "-saz", "TcpInSegs"))
      .split("\n")
      .find((line) => line.startsWith("TcpInSegs"))!
      .trim()
      .split(/\s+/);
    return Number(value);
  }

  async function dropResets(action: "-I" | "-D"): Promise<void> {
    await inNamespace("iptables", action, "INPUT", "-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "DROP");
  }

  test("a RST that does not take: the newer SYN is sent round once a second, the older one never", async () => {
    await leaveInTimeWait(45_001);
    await dropResets("-I");
    let dropping = true;
    try {
      const before = await counted("timeWait");
      const verdicts = [await runSyn(45_001, 0x10000000), await runSyn(45_001, 0x90000000)];
      assert.deepEqual(
        [...verdicts].sort(),
        [TC_ACT_SHOT, TC_ACT_REDIRECT],
        "one is after rcv_nxt: sent round; the other falls back",
      );
      const newer = verdicts[0] === TC_ACT_REDIRECT ? 0x10000000 : 0x90000000;
      assert.equal(await runSyn(45_001, newer), TC_ACT_SHOT, "tried less than a second ago: the fallback");
      assert.equal(await counted("timeWait"), before + 2);
      assert.equal(await timeWaits(45_001), 1, "the RST was dropped: the TIME_WAIT stays");

      await dropResets("-D");
      dropping = false;
      await sleep(1000);
      assert.equal(await runSyn(45_001, newer), TC_ACT_REDIRECT, "a second later it is tried again");
      await until("the RST ends the TIME_WAIT", async () => (await timeWaits(45_001)) === 0);
      assert.equal(await runSyn(45_001, newer), TC_ACT_SHOT, "the tuple is free: on to the proxy, which is down");
      assert.deepEqual(
        [await counted("timeWait"), await counted("proxyDown"), await counted("timeWaitRecycled")],
        [before + 2, 1, 0],
      );
    } finally {
      if (dropping) await dropResets("-D");
    }
  });

  test("net.ipv4.tcp_rfc1337 = 1: no RST is sent, the SYN falls back at once", async () => {
    await leaveInTimeWait(45_002);
    await inNamespace("sysctl", "-q", "-w", "net.ipv4.tcp_rfc1337=1");
    try {
      const [before, segmentsBefore] = [await counted("timeWait"), await tcpSegmentsIn()];
      assert.deepEqual(
        [await runSyn(45_002, 0x10000000), await runSyn(45_002, 0x90000000)],
        [TC_ACT_SHOT, TC_ACT_SHOT],
      );
      assert.equal(await counted("timeWait"), before + 2);
      await sleep(100);
      assert.equal(await tcpSegmentsIn(), segmentsBefore, "no RST reached the stack");
      assert.equal(await timeWaits(45_002), 1);
    } finally {
      await inNamespace("sysctl", "-q", "-w", "net.ipv4.tcp_rfc1337=0");
    }
  });
});

async function until(what: string, condition: () => Promise<boolean>, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await sleep(20);
  }
}
