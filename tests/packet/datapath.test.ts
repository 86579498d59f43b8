/**
 * Packet-level tests: the built program runs on crafted frames under
 * BPF_PROG_TEST_RUN, and each output is compared byte for byte with a frame
 * built independently with the expected port and a from-scratch checksum.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { SWITCH_LIMIT } from "../../src/compile/render.js";
import { LoadedProgram, testPolicy } from "../support/bpf.js";
import {
  buildFragments,
  buildPacket,
  fragmentsChecksumValid,
  parsePacket,
  type PacketSpec,
} from "../../lab/packets.js";

const TC_ACT_UNSPEC = -1;

const rewrite = "rewrite" as const;

const RULES = [
  { originalPort: 8000, port: 9000, strategy: rewrite }, // 0: tcp, any family
  { originalPort: 8000, port: 9053, protocol: "udp" as const }, // 1: same port, udp
  { originalPort: 7000, port: 7100, family: "ipv4" as const, strategy: rewrite }, // 2: tcp over IPv4 only
  { originalPort: 6000, port: 6100, protocol: "udp" as const, family: "ipv6" as const }, // 3: udp over IPv6 only
  { originalPort: 8443, port: 9443, enabled: false, strategy: rewrite }, // 4: disabled
];

/** The same rules padded past the switch limit, so the compiler picks lookup tables. */
const FILLER = Array.from({ length: SWITCH_LIMIT }, (_, i) => ({
  originalPort: 30_000 + i,
  port: 50_000 + i,
  strategy: rewrite,
}));

for (const [strategy, rules] of [
  ["switch", RULES],
  ["table", [...RULES, ...FILLER]],
] as const) {
  describe(`${strategy} strategy`, () => datapathSuite(testPolicy(`packets_${strategy}`, rules)));
}

function datapathSuite(policy: ReturnType<typeof testPolicy>) {
  let program: LoadedProgram;
  before(async () => {
    program = await LoadedProgram.load(policy);
  });
  after(async () => {
    await program?.close();
  });

  /** Runs @spec through @hook; asserts the frame came out exactly as @expected (or untouched). */
  async function expectRewrite(hook: "ingress" | "egress", spec: PacketSpec, expected: Partial<PacketSpec> | null) {
    const frame = buildPacket(spec);
    const result = await program.run(hook, frame);
    assert.equal(result.returnValue, TC_ACT_UNSPEC, "hands every packet on to the next filter");
    const want = expected ? buildPacket({ ...spec, ...expected }) : frame;
    assert.deepEqual(result.output.toString("hex"), want.toString("hex"));
    if (expected) assert.ok(parsePacket(result.output, spec).checksumValid, "checksum verifies from scratch");
    return result;
  }

  describe("ingress: destination port rewrite", () => {
    for (const family of ["ipv4", "ipv6"] as const) {
      test(`${family} tcp to an intercepted port goes to the rule's port`, async () => {
        await expectRewrite("ingress", { family, protocol: "tcp", sport: 40000, dport: 8000 }, { dport: 9000 });
      });
      test(`${family} udp to the same port follows the udp rule`, async () => {
        await expectRewrite("ingress", { family, protocol: "udp", sport: 40000, dport: 8000 }, { dport: 9053 });
      });
      test(`${family} tcp to a port no rule names passes untouched`, async () => {
        await expectRewrite("ingress", { family, protocol: "tcp", sport: 40000, dport: 8001 }, null);
      });
    }

    test("family ipv4 rule: IPv4 rewritten, IPv6 untouched", async () => {
      await expectRewrite("ingress", { family: "ipv4", protocol: "tcp", sport: 1234, dport: 7000 }, { dport: 7100 });
      await expectRewrite("ingress", { family: "ipv6", protocol: "tcp", sport: 1234, dport: 7000 }, null);
    });

    test("family ipv6 rule: IPv6 rewritten, IPv4 untouched", async () => {
      await expectRewrite("ingress", { family: "ipv6", protocol: "udp", sport: 1234, dport: 6000 }, { dport: 6100 });
      await expectRewrite("ingress", { family: "ipv4", protocol: "udp", sport: 1234, dport: 6000 }, null);
    });

    test("IPv4 options: the L4 header is found from IHL", async () => {
      for (const words of [1, 4, 10]) {
        const ipv4Options = Buffer.alloc(words * 4, 0x01); // NOP options
        await expectRewrite(
          "ingress",
          { family: "ipv4", protocol: "tcp", sport: 40000, dport: 8000, ipv4Options },
          { dport: 9000 },
        );
      }
    });

    test("UDP over IPv4 with checksum 0 keeps checksum 0", async () => {
      const result = await expectRewrite(
        "ingress",
        { family: "ipv4", protocol: "udp", sport: 1, dport: 8000, zeroUdpChecksum: true },
        { dport: 9053 },
      );
      assert.equal(parsePacket(result.output, { family: "ipv4", protocol: "udp" }).checksum, 0);
    });

    test("UDP over IPv6 keeps a valid non-zero checksum", async () => {
      const result = await expectRewrite(
        "ingress",
        { family: "ipv6", protocol: "udp", sport: 1, dport: 6000 },
        { dport: 6100 },
      );
      assert.notEqual(parsePacket(result.output, { family: "ipv6", protocol: "udp" }).checksum, 0);
    });

    test("first IPv4 fragment is rewritten, later fragments pass untouched", async () => {
      await expectRewrite(
        "ingress",
        { family: "ipv4", protocol: "tcp", sport: 1, dport: 8000, moreFragments: true },
        { dport: 9000 },
      );
      await expectRewrite(
        "ingress",
        { family: "ipv4", protocol: "tcp", sport: 1, dport: 8000, fragmentOffset: 185 },
        null,
      );
    });

    test("IPv6 hop-by-hop, routing and destination options are skipped", async () => {
      await expectRewrite(
        "ingress",
        { family: "ipv6", protocol: "tcp", sport: 1, dport: 8000, ipv6Extensions: [0, 43, 60] },
        { dport: 9000 },
      );
    });

    test("first IPv6 fragment is rewritten, later fragments pass untouched", async () => {
      await expectRewrite(
        "ingress",
        { family: "ipv6", protocol: "tcp", sport: 1, dport: 8000, ipv6Extensions: [44] },
        { dport: 9000 },
      );
      await expectRewrite(
        "ingress",
        { family: "ipv6", protocol: "udp", sport: 1, dport: 8000, ipv6Extensions: [44] },
        { dport: 9053 },
      );
      await expectRewrite(
        "ingress",
        { family: "ipv6", protocol: "tcp", sport: 1, dport: 8000, ipv6Extensions: [44], fragmentOffset: 185 },
        null,
      );
      await expectRewrite(
        "ingress",
        {
          family: "ipv6",
          protocol: "tcp",
          sport: 1,
          dport: 8000,
          ipv6Extensions: [44],
          fragmentOffset: 185,
          moreFragments: false,
        },
        null,
      );
    });

    test("IPv6 fragment header after other extension headers", async () => {
      await expectRewrite(
        "ingress",
        { family: "ipv6", protocol: "udp", sport: 1, dport: 8000, ipv6Extensions: [0, 60, 43, 44] },
        { dport: 9053 },
      );
      await expectRewrite(
        "ingress",
        { family: "ipv6", protocol: "udp", sport: 1, dport: 8000, ipv6Extensions: [0, 60, 43, 44, 60] },
        { dport: 9053 },
      );
      await expectRewrite(
        "ingress",
        { family: "ipv6", protocol: "udp", sport: 1, dport: 8000, ipv6Extensions: [0, 43, 44], fragmentOffset: 1 },
        null,
      );
    });

    for (const family of ["ipv4", "ipv6"] as const) {
      test(`${family} datagram in fragments: the first rewritten with a checksum over the whole datagram, the rest untouched`, async () => {
        const spec: PacketSpec = {
          family,
          protocol: "udp",
          sport: 40000,
          dport: 8000,
          payload: Buffer.alloc(3000, 0x5a),
          ipv6Extensions: family === "ipv6" ? [0] : undefined,
        };
        const sent = buildFragments(spec, 1232);
        const expected = buildFragments({ ...spec, dport: 9053 }, 1232);
        assert.equal(sent.length, 3);
        const received = [];
        for (const frame of sent) {
          const result = await program.run("ingress", frame);
          assert.equal(result.returnValue, TC_ACT_UNSPEC);
          received.push(result.output);
        }
        assert.deepEqual(
          received.map((frame) => frame.toString("hex")),
          expected.map((frame) => frame.toString("hex")),
        );
        assert.ok(fragmentsChecksumValid(received, spec), "the reassembled datagram's checksum verifies from scratch");
      });
    }

    test("over-long IPv6 extension chains pass untouched", async () => {
      await expectRewrite(
        "ingress",
        { family: "ipv6", protocol: "tcp", sport: 1, dport: 8000, ipv6Extensions: [0, 60, 43, 44, 60, 60] },
        null,
      );
    });

    test("truncated frames pass untouched", async () => {
      // BPF_PROG_TEST_RUN itself refuses frames shorter than the IP header, so cuts start there.
      const v4 = buildPacket({ family: "ipv4", protocol: "tcp", sport: 1, dport: 8000 });
      const v4Options = buildPacket({
        family: "ipv4",
        protocol: "tcp",
        sport: 1,
        dport: 8000,
        ipv4Options: Buffer.alloc(40, 1),
      });
      const v6 = buildPacket({ family: "ipv6", protocol: "udp", sport: 1, dport: 8000 });
      const cuts = [
        v4.subarray(0, 14 + 20),
        v4.subarray(0, 14 + 20 + 4),
        v4.subarray(0, 14 + 20 + 17),
        v4Options.subarray(0, 14 + 40),
        v6.subarray(0, 14 + 40 + 2),
        v6.subarray(0, 14 + 40 + 7),
      ];
      for (const truncated of cuts) {
        const result = await program.run("ingress", truncated);
        assert.deepEqual(result.output, truncated, `cut at ${truncated.length} bytes`);
      }
    });

    test("non-IP frames pass untouched", async () => {
      const arp = Buffer.concat([
        Buffer.from("ffffffffffff020000000002", "hex"),
        Buffer.from([0x08, 0x06]),
        Buffer.alloc(28, 0xaa),
      ]);
      assert.deepEqual((await program.run("ingress", arp)).output, arp);
    });

    test("a disabled rule passes untouched until enabled in the map, with no reload", async () => {
      const spec: PacketSpec = { family: "ipv4", protocol: "tcp", sport: 1, dport: 8443 };
      await expectRewrite("ingress", spec, null);
      await program.setRule(4, true);
      try {
        await expectRewrite("ingress", spec, { dport: 9443 });
      } finally {
        await program.setRule(4, false);
      }
      await expectRewrite("ingress", spec, null);
    });
  });

  describe("egress: source port rewrite of replies", () => {
    for (const family of ["ipv4", "ipv6"] as const) {
      test(`${family} tcp from the rule's port leaves from the original port`, async () => {
        await expectRewrite("egress", { family, protocol: "tcp", sport: 9000, dport: 40000 }, { sport: 8000 });
      });
      test(`${family} udp from the rule's port leaves from the original port`, async () => {
        await expectRewrite("egress", { family, protocol: "udp", sport: 9053, dport: 40000 }, { sport: 8000 });
      });
    }

    test("egress matches the source port only", async () => {
      await expectRewrite("egress", { family: "ipv4", protocol: "tcp", sport: 40000, dport: 9000 }, null);
    });

    test("egress does not rewrite the original port's own traffic", async () => {
      await expectRewrite("egress", { family: "ipv4", protocol: "tcp", sport: 8000, dport: 40000 }, null);
    });
  });

  test("counters count rewritten packets and bytes per rule and direction", async () => {
    const before = await program.counters(2);
    const ingress = buildPacket({ family: "ipv4", protocol: "tcp", sport: 5, dport: 7000 });
    const egress = buildPacket({ family: "ipv4", protocol: "tcp", sport: 7100, dport: 5 });
    // One run per packet: `repeat` re-runs the already rewritten skb, which then misses.
    for (let i = 0; i < 3; i++) await program.run("ingress", ingress);
    for (let i = 0; i < 2; i++) await program.run("egress", egress);
    await program.run("ingress", buildPacket({ family: "ipv6", protocol: "tcp", sport: 5, dport: 7000 })); // not rule 2's family
    const after = await program.counters(2);
    assert.deepEqual(after.rewrittenIngress, {
      packets: before.rewrittenIngress.packets + 3,
      bytes: before.rewrittenIngress.bytes + 3 * ingress.length,
    });
    assert.deepEqual(after.rewrittenEgress, {
      packets: before.rewrittenEgress.packets + 2,
      bytes: before.rewrittenEgress.bytes + 2 * egress.length,
    });
  });
}

test("10,000 rules compile, pass the verifier and rewrite", async () => {
  const rules = Array.from({ length: 10_000 }, (_, i) => ({
    originalPort: 10_000 + i,
    port: 30_000 + i,
    strategy: rewrite,
  }));
  const large = await LoadedProgram.load(testPolicy("packets_large", rules));
  try {
    for (const index of [0, 4_321, 9_999]) {
      const spec: PacketSpec = { family: "ipv4", protocol: "tcp", sport: 5, dport: 10_000 + index };
      const result = await large.run("ingress", buildPacket(spec));
      assert.deepEqual(result.output, buildPacket({ ...spec, dport: 30_000 + index }));
    }
  } finally {
    await large.close();
  }
});
