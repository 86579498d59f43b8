/**
 * Packet-level tests of selectors under BPF_PROG_TEST_RUN: for each form
 * (a port list with a range and exceptions, "*" with exceptions, IPv4 and
 * IPv6 sources with exceptions, IPv4 and IPv6 destinations), packets on
 * both sides of every boundary are acted on or left alone as specified, in
 * each way the compiler can build the program: a switch with constant
 * compares, a switch with LPM tries (lists padded past the constant
 * limit), and lookup tables (padded past the switch limit, tries for every
 * list).
 *
 * Steer rules act on SYNs only, and BPF_PROG_TEST_RUN never finds a
 * listener, so a SYN a steer rule selects takes the proxy-down path: under
 * onProxyDown "drop" it is dropped (TC_ACT_SHOT) and counted in proxyDown,
 * while a SYN the selector leaves out is handed on (TC_ACT_UNSPEC) and
 * counted nowhere. Rewrite rules are seen rewriting, or not.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Interceptor } from "../../src/api.js";
import { compilePolicies } from "../../src/compile/index.js";
import { PREFIX_CONSTANT_LIMIT, SWITCH_LIMIT } from "../../src/compile/render.js";
import { buildPacket, parsePacket, type PacketSpec } from "../../lab/packets.js";
import { LoadedProgram, testPolicy } from "../support/bpf.js";

const TC_ACT_UNSPEC = -1;
const TC_ACT_SHOT = 2;

const RULES: Interceptor[] = [
  // 0: a port, a range, and exceptions inside the range
  { originalPorts: [8000, "9000-9100"], exceptPorts: ["9050-9052"], port: 15001 },
  // 1: a range with exceptions, its own port inside it (left out by itself)
  { originalPorts: ["20000-29999"], exceptPorts: [22222, "25000-25001"], port: 25500 },
  // 2: IPv4 sources with an exception inside them
  { originalPort: 7000, port: 15001, sources: ["198.18.0.0/24"], exceptSources: ["198.18.0.128/28"] },
  // 3: IPv4 destinations: one address and a network
  { originalPort: 7001, port: 15001, destinations: ["198.18.0.1", "198.18.4.0/22"] },
  // 4: IPv6 sources with an exception inside them
  { originalPort: 7002, port: 15001, sources: ["fd00:1::/64"], exceptSources: ["fd00:1:0:0:8000::/65"] },
  // 5: IPv6 destinations: one address and a network
  { originalPort: 7003, port: 15001, destinations: ["fd00::1", "fd00:2::/48"] },
  // 6: a UDP rewrite rule with sources and an exception: replies mirror it
  { originalPort: 5000, port: 5001, protocol: "udp", sources: ["198.18.0.0/24"], exceptSources: ["198.18.0.100"] },
  // 7: a TCP rewrite rule whose range, less its exception, is one port
  { originalPorts: ["6000-6001"], exceptPorts: [6001], port: 6100, strategy: "rewrite" },
];

/** The "*" rule gets a program of its own: it overlaps every other TCP rule. */
const EVERY_PORT: Interceptor[] = [{ originalPorts: "*", exceptPorts: [22, 15020, 15021], port: 15006 }];

/** Far-away networks that push each address list past the constant limit, selecting nothing tested. */
function padded(rules: Interceptor[]): Interceptor[] {
  const v4 = Array.from({ length: PREFIX_CONSTANT_LIMIT }, (_, i) => `198.19.${2 * i}.0/24`);
  const v6 = Array.from({ length: PREFIX_CONSTANT_LIMIT }, (_, i) => `fd00:ffff:${(2 * i).toString(16)}::/48`);
  const pad = (list: readonly string[] | undefined) =>
    list?.[0]?.includes(":") ? [...list, ...v6] : list && [...list, ...v4];
  return rules.map((rule) => ({
    ...rule,
    ...(rule.sources && { sources: pad(rule.sources) }),
    ...(rule.destinations && { destinations: pad(rule.destinations) }),
  }));
}

/** Rules on ports above every tested one: enough port segments for lookup tables. */
const FILLER: Interceptor[] = Array.from({ length: SWITCH_LIMIT }, (_, i) => ({
  originalPort: 40_000 + 2 * i,
  port: 60_000,
}));

const BUILDS = [
  {
    name: "switch, constant compares",
    rules: RULES,
    structure: /Ports: switch.*\n \* Addresses: constant masked compares/,
  },
  {
    name: "switch, LPM tries",
    rules: padded(RULES),
    structure: /Ports: switch.*\n \* Addresses: prefix lists in LPM tries above/,
  },
  {
    name: "lookup tables, LPM tries",
    rules: [...RULES, ...FILLER],
    structure: /Ports: lookup tables.*\n \* Addresses: prefix lists in LPM tries \(/,
  },
];

/** A SYN to @dport from @source to @destination. */
function syn(dport: number, family: PacketSpec["family"] = "ipv4", source?: string, destination?: string): PacketSpec {
  return {
    family,
    protocol: "tcp",
    sport: 40000,
    dport,
    tcpFlags: ["syn"],
    payload: Buffer.alloc(0),
    ...(source && { source }),
    ...(destination && { destination }),
  };
}

for (const build of BUILDS) {
  describe(`selectors: ${build.name}`, () => {
    let program: LoadedProgram;
    before(async () => {
      program = await LoadedProgram.load(testPolicy("selectors", build.rules));
    });
    after(async () => {
      await program?.close();
    });

    /** Every rule's proxyDown and rewrite counters, summed. */
    async function counted(): Promise<number[]> {
      return (await program.allCounters(build.rules.length)).map(
        (c) => c.proxyDown.packets + c.rewrittenIngress.packets + c.rewrittenEgress.packets,
      );
    }

    /** A SYN @rule steers (dropped: no listener, counted for @rule), or one no rule takes (handed on, counted nowhere). */
    async function expectSteered(spec: PacketSpec, rule: number | null) {
      const before = await counted();
      const frame = buildPacket(spec);
      const result = await program.run("ingress", frame);
      const where = `${spec.family} ${spec.source ?? "default"} → ${spec.destination ?? "default"}:${spec.dport}`;
      assert.equal(result.returnValue, rule === null ? TC_ACT_UNSPEC : TC_ACT_SHOT, where);
      assert.deepEqual(result.output, frame, "a SYN is never rewritten");
      const expected = [...before];
      if (rule !== null) expected[rule]! += 1;
      assert.deepEqual(
        await counted(),
        expected,
        `${where}: counted ${rule === null ? "nowhere" : `for rule ${rule}`}`,
      );
    }

    /** A packet through @hook: rewritten to @changes by a rewrite rule, or untouched (@changes null). */
    async function expectRewrite(hook: "ingress" | "egress", spec: PacketSpec, changes: Partial<PacketSpec> | null) {
      const result = await program.run(hook, buildPacket(spec));
      assert.equal(result.returnValue, TC_ACT_UNSPEC);
      assert.deepEqual(
        result.output.toString("hex"),
        buildPacket({ ...spec, ...changes }).toString("hex"),
        `${hook} ${JSON.stringify(spec)}`,
      );
      if (changes) assert.ok(parsePacket(result.output, spec).checksumValid);
    }

    test("the compiler built it the intended way", () => {
      const [compiled] = compilePolicies([testPolicy("selectors", build.rules)]);
      assert.match(compiled!.source, build.structure);
    });

    test("a port list with a range and exceptions: first and last ports, the exceptions and their neighbours", async () => {
      for (const port of [8000, 9000, 9049, 9053, 9100]) await expectSteered(syn(port), 0);
      for (const port of [7999, 8001, 8999, 9050, 9051, 9052, 9101]) await expectSteered(syn(port), null);
      await expectSteered(syn(9100, "ipv6"), 0);
    });

    test("a range with exceptions: both ends, each exception and the ports beside it, the rule's own port", async () => {
      for (const port of [20000, 22221, 22223, 24999, 25002, 25499, 25501, 29999]) await expectSteered(syn(port), 1);
      for (const port of [19999, 22222, 25000, 25001, 25500, 30000]) await expectSteered(syn(port), null);
    });

    test("IPv4 sources with an exception: first and last address of each network, and the ones just outside", async () => {
      for (const source of ["198.18.0.0", "198.18.0.127", "198.18.0.144", "198.18.0.255"])
        await expectSteered(syn(7000, "ipv4", source), 2);
      for (const source of ["198.17.255.255", "198.18.0.128", "198.18.0.143", "198.18.1.0"])
        await expectSteered(syn(7000, "ipv4", source), null);
      await expectSteered(syn(7000, "ipv6"), null);
    });

    test("IPv4 destinations: the address, the network's ends, and their neighbours", async () => {
      for (const destination of ["198.18.0.1", "198.18.4.0", "198.18.7.255"])
        await expectSteered(syn(7001, "ipv4", undefined, destination), 3);
      for (const destination of ["198.18.0.0", "198.18.0.2", "198.18.3.255", "198.18.8.0"])
        await expectSteered(syn(7001, "ipv4", undefined, destination), null);
    });

    test("IPv6 sources with an exception: first and last address of each network, and the ones just outside", async () => {
      for (const source of ["fd00:1::", "fd00:1::7fff:ffff:ffff:ffff"])
        await expectSteered(syn(7002, "ipv6", source), 4);
      for (const source of [
        "fd00:0:ffff:ffff:ffff:ffff:ffff:ffff",
        "fd00:1::8000:0:0:0",
        "fd00:1::ffff:ffff:ffff:ffff",
        "fd00:1:0:1::",
      ]) {
        await expectSteered(syn(7002, "ipv6", source), null);
      }
      await expectSteered(syn(7002, "ipv4"), null);
    });

    test("IPv6 destinations: the address, the network's ends, and their neighbours", async () => {
      for (const destination of ["fd00::1", "fd00:2::", "fd00:2:0:ffff:ffff:ffff:ffff:ffff"])
        await expectSteered(syn(7003, "ipv6", undefined, destination), 5);
      for (const destination of ["fd00::", "fd00::2", "fd00:1:ffff:ffff:ffff:ffff:ffff:ffff", "fd00:2:1::"])
        await expectSteered(syn(7003, "ipv6", undefined, destination), null);
    });

    test("a rewrite rule with sources: requests from them rewritten, from the exception or outside not; replies mirror it", async () => {
      const udp = (sport: number, dport: number, source?: string, destination?: string): PacketSpec => ({
        family: "ipv4",
        protocol: "udp",
        sport,
        dport,
        ...(source && { source }),
        ...(destination && { destination }),
      });
      for (const source of ["198.18.0.0", "198.18.0.99", "198.18.0.101", "198.18.0.255"])
        await expectRewrite("ingress", udp(40000, 5000, source), { dport: 5001 });
      for (const source of ["198.18.0.100", "198.17.255.255", "198.18.1.0"])
        await expectRewrite("ingress", udp(40000, 5000, source), null);
      await expectRewrite("egress", udp(5001, 40000, "198.18.0.1", "198.18.0.99"), { sport: 5000 });
      await expectRewrite("egress", udp(5001, 40000, "198.18.0.1", "198.18.0.100"), null);
      await expectRewrite("egress", udp(5001, 40000, "198.18.0.1", "198.18.1.0"), null);
    });

    test("a rewrite rule of one port left from a range: that port rewritten, its neighbours not", async () => {
      const tcp = (sport: number, dport: number): PacketSpec => ({ family: "ipv6", protocol: "tcp", sport, dport });
      await expectRewrite("ingress", tcp(40000, 6000), { dport: 6100 });
      for (const port of [5999, 6001]) await expectRewrite("ingress", tcp(40000, port), null);
      await expectRewrite("egress", tcp(6100, 40000), { sport: 6000 });
    });
  });
}

describe('selectors: every port but a few ("*")', () => {
  let program: LoadedProgram;
  before(async () => {
    program = await LoadedProgram.load(testPolicy("every_port", EVERY_PORT));
  });
  after(async () => {
    await program?.close();
  });

  test("the first and last port, each exception and its neighbours, the rule's own port", async () => {
    for (const [port, steered] of [
      [1, true],
      [21, true],
      [22, false],
      [23, true],
      [15005, true],
      [15006, false],
      [15007, true],
      [15019, true],
      [15020, false],
      [15021, false],
      [15022, true],
      [65535, true],
    ] as const) {
      for (const family of ["ipv4", "ipv6"] as const) {
        const before = (await program.counters(0)).proxyDown.packets;
        const result = await program.run("ingress", buildPacket(syn(port, family)));
        assert.equal(result.returnValue, steered ? TC_ACT_SHOT : TC_ACT_UNSPEC, `${family} port ${port}`);
        assert.equal(
          (await program.counters(0)).proxyDown.packets,
          before + (steered ? 1 : 0),
          `${family} port ${port} counted`,
        );
      }
    }
  });

  test("UDP, and TCP segments other than a SYN, are never touched", async () => {
    for (const spec of [
      { ...syn(8000), protocol: "udp" as const, tcpFlags: undefined },
      { ...syn(8000), tcpFlags: ["ack" as const] },
    ]) {
      const frame = buildPacket(spec);
      const result = await program.run("ingress", frame);
      assert.equal(result.returnValue, TC_ACT_UNSPEC);
      assert.deepEqual(result.output, frame);
    }
  });
});
