/**
 * Selectors from policy to program data: the normal form a Rule holds, the
 * sets a rule matches, overlaps and the packet they name, the one-line
 * summary plan, status and metrics show, and what the compiler makes of
 * them (port segments, prefix constants, trie entries and their keys).
 * The refusals with their locations are golden (tests/golden/invalid/selector-*).
 */
import assert from "node:assert/strict";
import { endianness } from "node:os";
import { describe, test } from "node:test";
import type { Interceptor } from "../../src/api.js";
import { chooseMatchLayout, PREFIX_CONSTANT_LIMIT, SWITCH_LIMIT } from "../../src/compile/match.js";
import { prefixBytes, prefixMap } from "../../src/model/bpf-abi.js";
import { AgentMetrics } from "../../src/agent/metrics.js";
import { COUNTER_SLOTS } from "../../src/compile/counters.js";
import type { RuleCounters } from "../../src/datapath/types.js";
import { applyRun, executePlan, makePlan, planRun } from "../../src/reconcile/index.js";
import type { StatusReport } from "../../src/reconcile/inspect.js";
import { cidrsOf, readCidr } from "../../src/validate/addresses.js";
import { normalSet, subtract } from "../../src/validate/intervals.js";
import { findOverlaps } from "../../src/validate/overlap.js";
import { readSelector, selectedPorts, selectedSources } from "../../src/validate/selectors.js";
import { ruleSummary, toRule, type Rule } from "../../src/validate/index.js";
import { desiredPolicy } from "../support/desired.js";
import { FakeDatapath } from "../support/fake-datapath.js";

const rules = (...interceptors: Interceptor[]): Rule[] =>
  interceptors.map((interceptor, index) => toRule(interceptor, index));
const first = (interceptor: Interceptor): Rule => rules(interceptor)[0]!;

describe("normal form", () => {
  test("originalPort and a one-port list are the same rule; lists are sorted and merged", () => {
    const single = first({ originalPort: 8000, port: 9000 });
    const list = first({ originalPorts: [8000], port: 9000 });
    assert.deepEqual(single, list);
    const merged = first({
      originalPorts: ["9050-9100", 8000, "9000-9049", 8001, "9080-9200"],
      exceptPorts: [9150, "9140-9160"],
      port: 15001,
    });
    assert.deepEqual(merged.originalPorts, [
      { first: 8000, last: 8001 },
      { first: 9000, last: 9200 },
    ]);
    assert.deepEqual(merged.exceptPorts, [{ first: 9140, last: 9160 }]);
    assert.deepEqual(first({ originalPorts: "*", port: 15006 }).originalPorts, [{ first: 1, last: 65535 }]);
  });

  test("CIDR lists: siblings joined, contained ones dropped, IPv4 first; an address alone is a /32 or /128", () => {
    const rule = first({
      originalPort: 8000,
      port: 9000,
      sources: ["fd00::/9", "10.128.0.0/9", "198.18.0.1", "10.0.0.0/9", "10.1.0.0/16", "fd00:1::1", "fd80::/9"],
    });
    assert.deepEqual(
      rule.sources.map(({ address, prefixLength }) => `${address}/${prefixLength}`),
      ["10.0.0.0/8", "198.18.0.1/32", "fd00::/8"],
    );
    assert.equal(rule.family, "any");
  });

  test("a rule's family follows from its address lists", () => {
    assert.equal(first({ originalPort: 8000, port: 9000, sources: ["10.0.0.0/8"] }).family, "ipv4");
    assert.equal(
      first({ originalPort: 8000, port: 9000, destinations: ["fd00::1"], sources: ["fd00::/8"] }).family,
      "ipv6",
    );
    assert.equal(first({ originalPort: 8000, port: 9000, sources: ["fd00::/8", "10.0.0.0/8"] }).family, "any");
    assert.equal(
      first({ originalPort: 8000, port: 9000, exceptSources: ["10.0.0.0/8"] }).family,
      "any",
      "an exception narrows nothing",
    );
  });

  test("the rule's own port is left out of what it selects, listed or not", () => {
    assert.deepEqual(selectedPorts(first({ originalPorts: "*", exceptPorts: [22, 15020, 15021], port: 15006 })), [
      { first: 1, last: 21 },
      { first: 23, last: 15005 },
      { first: 15007, last: 15019 },
      { first: 15022, last: 65535 },
    ]);
  });

  test("sources less exceptions, per family", () => {
    const rule = first({
      originalPort: 8000,
      port: 9000,
      sources: ["198.18.0.0/24"],
      exceptSources: ["198.18.0.128/25"],
    });
    assert.deepEqual(
      cidrsOf(selectedSources(rule, "ipv4"), "ipv4").map(({ address, prefixLength }) => `${address}/${prefixLength}`),
      ["198.18.0.0/25"],
    );
    assert.deepEqual(selectedSources(first({ originalPort: 8000, port: 9000, exceptSources: ["0.0.0.0/1"] }), "ipv4"), [
      { first: 2n ** 31n, last: 2n ** 32n - 1n },
    ]);
  });

  test("problems come with the field they are at; a problem in ports hides none in addresses", () => {
    const { selector, problems } = readSelector(
      { originalPorts: ["9100-9000"], port: 15001, sources: ["10.1.2.3/8"], destinations: ["fd00::1"] },
      3,
    );
    assert.equal(selector, undefined);
    assert.deepEqual(
      problems.map(({ field, code, suggestion }) => ({ field, code, suggestion })),
      [
        { field: "originalPorts/0", code: "rule/backwards-range", suggestion: '"9000-9100"' },
        { field: "sources/0", code: "rule/cidr-host-bits", suggestion: '"10.0.0.0/8"' },
      ],
    );
  });
});

describe("CIDRs", () => {
  test("read strictly: no leading zeros, no zone, no prefix past the family's bits", () => {
    for (const text of [
      "010.0.0.1",
      "10.0.0.1/033",
      "fe80::1%eth0",
      "10.0.0.0/33",
      "fd00::/129",
      "10.0.0.0/",
      "::ffff:10.0.0.1/200",
    ]) {
      assert.equal(readCidr(text).ok, false, text);
    }
    const reading = readCidr("FD00:0::1/8");
    assert.ok(reading.ok);
    assert.deepEqual(reading.cidr, { family: "ipv6", address: "fd00::", prefixLength: 8 });
    assert.equal(reading.hostBits, true);
  });

  test("sets back to the fewest CIDRs", () => {
    const set = subtract(normalSet([{ first: 0n, last: 255n }]), [{ first: 100n, last: 100n }]);
    assert.deepEqual(
      cidrsOf(set, "ipv4").map(({ address, prefixLength }) => `${address}/${prefixLength}`),
      [
        "0.0.0.0/26",
        "0.0.0.64/27",
        "0.0.0.96/30",
        "0.0.0.101/32",
        "0.0.0.102/31",
        "0.0.0.104/29",
        "0.0.0.112/28",
        "0.0.0.128/25",
      ],
    );
  });
});

describe("overlaps", () => {
  test("the classic duplicate keeps its own code; a selector overlap names a packet both match", () => {
    const [classic] = findOverlaps(rules({ originalPort: 8000, port: 9000 }, { originalPort: 8000, port: 9001 }));
    assert.equal(classic!.samePort, 8000);
    const [ranged] = findOverlaps(
      rules(
        { originalPorts: ["8000-8100"], port: 9000 },
        { originalPorts: ["8050-9000"], exceptPorts: [8050], port: 9001, sources: ["10.2.0.0/16", "10.1.0.0/16"] },
      ),
    );
    assert.equal(ranged!.samePort, undefined);
    assert.equal(ranged!.packet, "a tcp packet from 10.1.0.0 to port 8051");
  });

  test("rules apart by protocol, family, port, source or destination do not overlap", () => {
    assert.deepEqual(
      findOverlaps(
        rules(
          { originalPorts: "*", exceptPorts: [8000], port: 15006 },
          { originalPort: 8000, port: 9000, family: "ipv4" },
          { originalPort: 8000, port: 9001, family: "ipv6", sources: ["fd00::/16"] },
          { originalPort: 8000, port: 9002, sources: ["fd01::/16"], destinations: ["fd00::1"] },
          { originalPort: 8000, port: 9003, protocol: "udp" },
        ),
      ),
      [],
    );
  });

  test("each rule is reported against the first it overlaps, and thousands of one-port rules are not compared in pairs", () => {
    const found = findOverlaps(
      rules({ originalPort: 8000, port: 9000 }, { originalPort: 8000, port: 9001 }, { originalPort: 8000, port: 9002 }),
    );
    assert.deepEqual(
      found.map(({ earlier, later }) => [later.index, earlier.index]),
      [
        [1, 0],
        [2, 0],
      ],
    );
    // Counted in reads of the rules, not timed: a sweep reads each rule a few times per
    // comparison of the sort; pairs would read them 200 million times.
    const many = Array.from({ length: 20_000 }, (_, i): Interceptor => ({ originalPort: 10_000 + i, port: 9000 }));
    let reads = 0;
    const counted = rules(...many).map(
      (rule) =>
        new Proxy(rule, {
          get: (target, key, receiver) => {
            reads++;
            return Reflect.get(target, key, receiver);
          },
        }),
    );
    assert.deepEqual(findOverlaps(counted), []);
    assert.ok(reads > many.length, `the rules were read (${reads} reads)`);
    assert.ok(reads < 100 * many.length, `a sweep, not 200 million pairs (${reads} reads)`);
  });
});

describe("summary", () => {
  for (const [interceptor, summary] of [
    [{ originalPort: 8000, port: 9000 }, "tcp 8000 → 9000"],
    [{ originalPorts: "*", exceptPorts: [22, 15020, 15021], port: 15006 }, "tcp *:!22,15020-15021 → 15006"],
    [
      { originalPorts: ["9000-9100", 8000], exceptPorts: [9050], port: 9443, destinations: ["198.18.0.1"] },
      "tcp 8000,9000-9100:!9050 to 198.18.0.1 → 9443",
    ],
    [{ originalPort: 53, port: 5353, protocol: "udp", family: "ipv6" }, "udp ipv6 53 → 5353"],
    [
      { originalPort: 53, port: 5353, protocol: "udp", sources: ["10.0.0.0/8"], exceptSources: ["10.1.0.0/16"] },
      "udp 53 from 10.0.0.0/8,!10.1.0.0/16 → 5353",
    ],
    [
      {
        originalPort: 80,
        port: 8080,
        sources: ["198.18.0.0/24", "198.18.2.0/24", "198.18.4.0/24", "198.18.6.0/24", "198.18.8.0/24"],
      },
      "tcp 80 from 198.18.0.0/24,198.18.2.0/24,198.18.4.0/24,…(+2) → 8080",
    ],
  ] as [Interceptor, string][]) {
    test(summary, () => assert.equal(ruleSummary(first(interceptor)), summary));
  }

  test("plan names a live edit by the rule's summary", async () => {
    const on = desiredPolicy("istio", [{ originalPorts: "*", exceptPorts: [22, 15020, 15021], port: 15006 }]);
    const off = desiredPolicy("istio", [
      { originalPorts: "*", exceptPorts: [22, 15020, 15021], port: 15006, enabled: false },
    ]);
    const fake = new FakeDatapath();
    fake.addLink("eth0");
    await executePlan(makePlan([on], await fake.observe()), fake, {
      objectFor: () => ({ objectPath: "istio.bpf.o", prefixes: [] }),
    });
    const [edit] = makePlan([off], await fake.observe()).changes;
    assert.equal(edit?.reason, "tcp *:!22,15020-15021 → 15006: disable (live edit, no reload)");
  });

  test("metrics label each rule with its summary; original_port only when the rule has one port", async () => {
    const counters = Object.fromEntries(
      COUNTER_SLOTS.map((slot) => [slot, { packets: 3, bytes: 180 }]),
    ) as RuleCounters;
    const selected = rules(
      { originalPorts: "*", exceptPorts: [22], port: 15006 },
      { originalPort: 53, port: 5353, protocol: "udp" },
    );
    const report = {
      observed: { netns: { name: null }, namespaceKey: "ns1", links: [], programs: [], ownedQdiscs: [] },
      programs: [
        {
          program: {
            ref: { policy: "mesh", version: "0123456789abcdef" },
            contentHash: "x",
            programIds: {},
            enabled: [true, true],
          },
          desired: undefined,
          countersError: undefined,
          rules: selected.map((rule) => ({ index: rule.index, rule, enabled: true, counters })),
        },
      ],
      links: [],
      cgroups: [],
      drift: [],
    } as unknown as StatusReport;
    const text = await new AgentMetrics(async () => [{ namespace: "edge", report }]).registry.metrics();
    assert.match(
      text,
      /intercept_rule_connections_steered_total\{namespace="edge",policy="mesh",rule="0",selector="tcp \*:!22 → 15006",protocol="tcp",original_port="",port="15006"\} 3/,
    );
    assert.match(
      text,
      /intercept_rule_packets_total\{namespace="edge",policy="mesh",rule="1",selector="udp 53 → 5353",protocol="udp",original_port="53",port="5353",direction="ingress"\} 3/,
    );
  });
});

describe("compiling selectors", () => {
  test("port segments: runs with the same rules, what the strategy is chosen by", () => {
    const plan = chooseMatchLayout(
      rules(
        { originalPorts: "*", exceptPorts: [22, 15020, 15021], port: 15006 },
        { originalPort: 53, port: 5353, protocol: "udp" },
      ),
    );
    assert.equal(plan.strategy, "switch");
    assert.deepEqual(
      plan.switch!.ingress.fallback.map((c) => c.rule),
      [0],
      "the * rule is the default",
    );
    assert.deepEqual(
      plan.switch!.ingress.cases.map((c) => [
        c.ranges.map((r) => `${r.first}-${r.last}`).join(" "),
        c.candidates.map((x) => x.rule).join(),
      ]),
      [
        ["22-22 15006-15006 15020-15021", ""],
        ["53-53", "0,1"],
      ],
    );
    const ranges = Array.from(
      { length: SWITCH_LIMIT + 1 },
      (_, i): Interceptor => ({ originalPorts: [`${1000 + 10 * i}-${1005 + 10 * i}`], port: 9000 }),
    );
    assert.equal(chooseMatchLayout(rules(...ranges)).strategy, "table");
  });

  test("a prefix as constants: net and mask words, zero words where the prefix does not reach", () => {
    const rule = first({
      originalPort: 8000,
      port: 9000,
      sources: ["fd00:1::/33", "198.18.0.0/15"],
      destinations: ["10.0.0.0/8", "fd00::/64"],
    });
    const check = chooseMatchLayout([rule]).switch!.addressChecks[0]!;
    assert.deepEqual(check.anyAddress, []);
    const clauses = Object.fromEntries(check.families.map(({ family, clauses }) => [family, clauses]));
    assert.deepEqual(clauses.ipv4, [
      { kind: "include", address: "server", prefixes: [{ cidr: "10.0.0.0/8", words: [0x0a000000, 0xff000000] }] },
      { kind: "include", address: "client", prefixes: [{ cidr: "198.18.0.0/15", words: [0xc6120000, 0xfffe0000] }] },
    ]);
    assert.deepEqual(clauses.ipv6, [
      {
        kind: "include",
        address: "server",
        prefixes: [{ cidr: "fd00::/64", words: [0xfd000000, 0xffffffff, 0, 0xffffffff, 0, 0, 0, 0] }],
      },
      {
        kind: "include",
        address: "client",
        prefixes: [{ cidr: "fd00:1::/33", words: [0xfd000001, 0xffffffff, 0, 0x80000000, 0, 0, 0, 0] }],
      },
    ]);
  });

  test(`a list of more than ${PREFIX_CONSTANT_LIMIT} CIDRs is a prefix list: networks selected, exceptions nested in them left out`, () => {
    const sources = Array.from({ length: PREFIX_CONSTANT_LIMIT + 1 }, (_, i) => `198.19.${i}.0/25`);
    const plan = chooseMatchLayout(
      rules({ originalPort: 8000, port: 9000, sources, exceptSources: ["198.19.0.64/26"] }),
    );
    assert.deepEqual(plan.switch!.addressChecks[0]!.families[0]!.clauses, [
      { kind: "list", address: "client", list: 1 },
    ]);
    assert.equal(plan.prefixes.length, PREFIX_CONSTANT_LIMIT + 2);
    assert.deepEqual(
      plan.prefixes.filter((entry) => !entry.selected),
      [{ family: "ipv4", list: 1, prefixLength: 26, address: [198, 19, 0, 64], selected: false }],
    );
    assert.match(plan.prefixesDigest, /^[0-9a-f]{64}$/);
  });

  test("an exception taking a whole network takes the network out of the trie instead", () => {
    // Validation refuses such a rule; the compiler still makes the trie mean sources less exceptions.
    const sources = [
      "198.18.0.0/24",
      "198.18.2.0/24",
      ...Array.from({ length: PREFIX_CONSTANT_LIMIT }, (_, i) => `198.19.${i}.0/25`),
    ];
    const rule = {
      ...first({ originalPort: 8000, port: 9000, sources }),
      exceptSources: first({ originalPort: 1, port: 2, sources: ["198.18.2.0/23"] }).sources,
    };
    const plan = chooseMatchLayout([rule]);
    assert.ok(
      !plan.prefixes.some((entry) => entry.address[1] === 18 && entry.address[2] === 2),
      "198.18.2.0/24 is gone",
    );
    assert.ok(
      plan.prefixes.every((entry) => entry.selected),
      "and nothing is left to leave out",
    );
  });

  test("lookup tables put every address list in a trie, any-address as /0", () => {
    const plan = chooseMatchLayout(rules({ originalPort: 8000, port: 9000, exceptSources: ["fd00::/8"] }), "table");
    assert.deepEqual(plan.table!.prefixLists, [{ clientV4: 0, serverV4: 0, clientV6: 1, serverV6: 0 }]);
    assert.deepEqual(
      plan.prefixes.map(({ prefixLength, selected }) => [prefixLength, selected]),
      [
        [0, true],
        [8, false],
      ],
    );
  });

  test("trie keys: prefix length counting the list number, the list number, then the address", () => {
    const entry = {
      family: "ipv6" as const,
      list: 3,
      prefixLength: 8,
      address: [0xfd, ...Array(15).fill(0)],
      selected: true,
    };
    const { key, value } = prefixBytes(entry);
    const host = (n: number) => {
      const b = Buffer.alloc(4);
      if (endianness() === "LE") b.writeUInt32LE(n);
      else b.writeUInt32BE(n);
      return [...b];
    };
    assert.deepEqual(key, [...host(40), ...host(3), ...entry.address]);
    assert.deepEqual(value, [1]);
    assert.equal(prefixMap(entry), "prefixes_v6");
  });

  test("apply loads a version with its prefix lists: the datapath fills the tries before recording the content hash", async () => {
    const sources = Array.from({ length: PREFIX_CONSTANT_LIMIT + 1 }, (_, i) => `198.19.${i}.0/25`);
    const policy = desiredPolicy("lists", [{ originalPort: 8000, port: 9000, sources }]);
    const fake = new FakeDatapath();
    fake.addLink("eth0");
    await applyRun(await planRun([policy], fake), fake, {
      builder: { identify: async () => policy.contentHash, object: async () => "lists.bpf.o" },
    });
    const [version] = fake.history[fake.history.length - 1]!.after.versions;
    assert.equal(version!.contentHash, policy.contentHash);
    assert.deepEqual(version!.prefixes, policy.compiled.prefixes);
    assert.equal(version!.prefixes.length, PREFIX_CONSTANT_LIMIT + 1);
  });
});
