/**
 * `intercept explain` without the kernel: the rules that came close and
 * why, links without a program and why, the outbound verdicts, the
 * options, the first packet's bytes and the JSON schema. Every text is
 * asserted exactly: these lines are what a user debugging reads.
 */
import "../support/temporary-cache.js";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { Ajv2020 } from "ajv/dist/2020.js";
import { readQuery, renderInbound } from "../../src/commands/explain.js";
import { UsageError } from "../../src/errors.js";
import {
  inboundMatches,
  inboundMisses,
  noProgramReason,
  outboundVerdict,
  parseEndpoint,
  type Endpoint,
  type InboundConnection,
} from "../../src/flows/explain-rules.js";
import { noProgramReasons, type InboundExplanation } from "../../src/flows/explain.js";
import { firstPacket } from "../../src/flows/test-packet.js";
import { outputHeader } from "../../src/model/output-format.js";
import { validPolicies } from "../../src/reconcile/index.js";
import type { ValidPolicy } from "../../src/validate/index.js";
import { buildPacket } from "../../lab/packets.js";

let scratch: string;
let web: ValidPolicy;
let edge: ValidPolicy;
let out: ValidPolicy;

before(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), "intercept-explain-unit-"));
  const write = async (name: string, lines: string[]) => {
    const file = path.join(scratch, `${name}.yaml`);
    await writeFile(file, [...lines, ""].join("\n"));
    return file;
  };
  const files = [
    await write("web", [
      'interfaces: { include: ["web*"] }',
      "interceptors:",
      '  - { originalPorts: ["8000-8080"], exceptPorts: [8042], port: 9000, exceptSources: ["10.1.0.0/16"] }',
      '  - { originalPorts: ["7000-7010"], port: 9001, sources: ["10.0.0.0/8"], destinations: ["198.18.0.3"] }',
      "  - { originalPort: 53, port: 5353, protocol: udp }",
      "  - { originalPort: 6000, port: 9002, family: ipv6 }",
    ]),
    await write("edge", [
      'namespaces: ["pod-*"]',
      'interfaces: { include: ["eth*"], exclude: ["eth9"] }',
      "interceptors:",
      "  - { originalPort: 8443, port: 9443 }",
    ]),
    await write("out", [
      'interfaces: { include: ["out*"] }',
      "outbound:",
      '  cgroups: ["app.slice"]',
      '  exempt: { uids: [1337], cgroups: ["app.slice/proxy"], marks: [7] }',
      "  rules:",
      '    - { originalPort: 443, port: 15001, cidrs: ["198.18.0.0/24"] }',
      "    - { originalPort: 80, port: 15001 }",
    ]),
  ];
  const { policies } = await validPolicies(files);
  [web, edge, out] = ["web", "edge", "out"].map((name) => policies.find((policy) => policy.name === name)!) as [
    ValidPolicy,
    ValidPolicy,
    ValidPolicy,
  ];
});

after(async () => {
  await rm(scratch, { recursive: true, force: true });
});

function endpoint(text: string): Endpoint {
  const read = parseEndpoint(text);
  assert.notEqual(typeof read, "string", String(read));
  return read as Endpoint;
}

function tcp(from: string, to: string): InboundConnection {
  return { protocol: "tcp", source: endpoint(from), destination: endpoint(to) };
}

test("a connection a rule selects: that rule, and the rules one check away", () => {
  const { selected, nearMisses } = inboundMatches(web.rules, tcp("10.2.0.1:40000", "198.18.0.1:8010"));
  assert.equal(selected?.index, 0);
  assert.deepEqual(nearMisses, [], "every other rule is two or more checks away: no near miss");
});

test("near misses: each reason, word for word", () => {
  const misses = (index: number, connection: InboundConnection) => inboundMisses(web.rules[index]!, connection);
  assert.deepEqual(misses(0, tcp("10.2.0.1:1", "198.18.0.1:8042")), ["it selects 8000-8080 except 8042"]);
  assert.deepEqual(misses(0, tcp("10.2.0.1:1", "198.18.0.1:8081")), ["it selects 8000-8080, not 8081"]);
  assert.deepEqual(misses(0, tcp("10.1.2.3:1", "198.18.0.1:8000")), [
    "source 10.1.2.3 is in exceptSources (10.1.0.0/16)",
  ]);
  assert.deepEqual(misses(1, tcp("192.168.0.1:1", "198.18.0.3:7005")), [
    "source 192.168.0.1 is not in sources (10.0.0.0/8)",
  ]);
  assert.deepEqual(misses(1, tcp("10.0.0.1:1", "198.18.0.1:7005")), [
    "destination 198.18.0.1 is not in destinations (198.18.0.3)",
  ]);
  assert.deepEqual(misses(2, tcp("10.0.0.1:1", "198.18.0.1:53")), ["it is a udp rule, the connection is tcp"]);
  assert.deepEqual(misses(3, tcp("10.0.0.1:1", "198.18.0.1:6000")), ["it matches IPv6 only, the connection is IPv4"]);
  assert.deepEqual(misses(3, tcp("[fd00::1]:1", "[fd00::2]:9002")), [
    "port 9002 is its own proxy port, never intercepted",
  ]);
  assert.deepEqual(misses(0, tcp("10.1.0.9:1", "198.18.0.1:9999")), [
    "it selects 8000-8080, not 9999",
    "source 10.1.0.9 is in exceptSources (10.1.0.0/16)",
  ]);
});

test("a connection no rule selects: the near misses are the rules one check away", () => {
  const { selected, nearMisses } = inboundMatches(web.rules, tcp("10.1.2.3:40000", "198.18.0.1:8000"));
  assert.equal(selected, undefined);
  assert.deepEqual(
    nearMisses.map((miss) => [miss.rule.index, miss.misses[0]]),
    [[0, "source 10.1.2.3 is in exceptSources (10.1.0.0/16)"]],
  );
});

test("a rule that does not list the port is no near miss: only the port's rules, one check away", () => {
  const { nearMisses } = inboundMatches(web.rules, tcp("10.1.2.3:40000", "198.18.0.1:7005"));
  assert.deepEqual(
    nearMisses.map((miss) => [miss.rule.index, miss.misses[0]]),
    [[1, "destination 198.18.0.1 is not in destinations (198.18.0.3)"]],
  );
  assert.deepEqual(inboundMisses(web.rules[0]!, tcp("10.2.0.1:1", "198.18.0.1:7005")), [
    "it selects 8000-8080, not 7005",
  ]);
  assert.deepEqual(inboundMatches(web.rules, tcp("10.2.0.1:1", "198.18.0.1:9999")).nearMisses, []);
});

test("a disabled rule still selects: explain says it is switched off", () => {
  const { selected, selectedEnabled } = inboundMatches(web.rules, tcp("10.2.0.1:1", "198.18.0.1:8000"), () => false);
  assert.equal(selected?.index, 0);
  assert.equal(selectedEnabled, false);
});

test("links without a program: each reason, word for word", () => {
  const ether = (name: string) => ({ name, loopback: false, linkType: "ether" });
  assert.equal(
    noProgramReason(edge, ether("eth0"), "edge-1"),
    'policy edge applies in namespaces "pod-*" only, not in "edge-1"',
  );
  assert.equal(
    noProgramReason(edge, ether("eth0"), undefined),
    `policy edge applies in namespaces "pod-*" only, not in the host's own namespace`,
  );
  assert.equal(noProgramReason(edge, ether("veth3"), "pod-1"), `policy edge's interfaces "eth*" do not match veth3`);
  assert.equal(noProgramReason(edge, ether("eth9"), "pod-1"), 'policy edge excludes eth9 by "eth9"');
  assert.equal(
    noProgramReason(edge, ether("eth0"), "pod-1"),
    "policy edge selects eth0, but is not applied here (see `intercept plan`)",
  );
  assert.equal(
    noProgramReason(web, { name: "lo", loopback: true, linkType: "loopback" }, "pod-1"),
    "lo is a loopback link: programs attach to Ethernet links only",
  );
  assert.equal(
    noProgramReason(web, { name: "wg0", loopback: false, linkType: "none" }, "pod-1"),
    "wg0 is a none link: programs attach to Ethernet links only",
  );
  assert.equal(noProgramReason(out, ether("eth0"), "pod-1"), "policy out has no interceptors, only outbound capture");
  const reasons = (policies: ValidPolicy[], link = ether("veth3")) =>
    noProgramReasons(
      policies.map((policy) => ({ policy })),
      link,
      "pod-1",
    );
  assert.deepEqual(
    reasons([edge, out]),
    [`policy edge's interfaces "eth*" do not match veth3`],
    "outbound-only policies are not named",
  );
  assert.deepEqual(reasons([out]), ["no policy given has interceptors: they capture outbound only"]);
  assert.deepEqual(reasons([]), ["no policies were given to say why (give the policies' paths)"]);
  assert.deepEqual(reasons([web, edge], { name: "lo", loopback: true, linkType: "loopback" }), [
    "lo is a loopback link: programs attach to Ethernet links only",
  ]);
});

test("outbound: redirected, exempt by uid or cgroup, no rule, not captured, disabled", () => {
  const outbound = out.outbound!;
  const to = endpoint("198.18.0.9:443");
  const verdict = (cgroup: string, uid: number, destination = to, enabled?: () => boolean) =>
    outboundVerdict(outbound, { cgroup, uid, destination }, enabled);
  assert.deepEqual(pick(verdict("app.slice/web", 1000)), [
    "redirected",
    0,
    "to the local proxy on port 15001 (unless the socket carries an exempt mark: 7)",
  ]);
  assert.deepEqual(pick(verdict("app.slice", 1337)), ["exempt", 0, "uid 1337 is in exempt.uids"]);
  assert.deepEqual(pick(verdict("app.slice/proxy/worker", 0)), [
    "exempt",
    0,
    "cgroup /app.slice/proxy/worker is below exempt cgroup /app.slice/proxy",
  ]);
  assert.deepEqual(pick(verdict("app.slice/proxy", 0)), [
    "exempt",
    0,
    "cgroup /app.slice/proxy is exempt cgroup /app.slice/proxy",
  ]);
  assert.deepEqual(pick(verdict("system.slice", 0)), [
    "not-captured",
    undefined,
    "cgroup /system.slice is not in or below a captured cgroup (/app.slice)",
  ]);
  const none = verdict("app.slice", 0, endpoint("203.0.113.1:443"));
  assert.deepEqual(pick(none), ["no-rule", undefined, "no outbound rule selects 203.0.113.1:443"]);
  assert.ok(none.verdict === "no-rule");
  assert.deepEqual(
    none.nearMisses.map((miss) => miss.miss),
    ["destination 203.0.113.1 is not in 198.18.0.0/24", "it selects port 80, not 443"],
  );
  assert.deepEqual(pick(verdict("app.slice", 0, endpoint("[fd00::1]:80"))), [
    "redirected",
    1,
    "to the local proxy on port 15001 (unless the socket carries an exempt mark: 7)",
  ]);
  assert.deepEqual(pick(verdict("app.slice", 0, to, () => false)), [
    "disabled",
    0,
    "the rule is disabled: the connection goes out as asked",
  ]);
});

function pick(verdict: ReturnType<typeof outboundVerdict>) {
  return [verdict.verdict, "rule" in verdict ? verdict.rule.position : undefined, verdict.reason];
}

test("options: addresses, ports, families, and what goes with what", () => {
  const base = { to: "198.18.0.1:8000", from: undefined, udp: false, cgroup: undefined, uid: undefined };
  assert.deepEqual(readQuery(base), {
    direction: "inbound",
    connection: {
      protocol: "tcp",
      source: { family: "ipv4", address: "198.18.255.254", port: 40000 },
      destination: { family: "ipv4", address: "198.18.0.1", port: 8000 },
    },
  });
  const v6 = readQuery({ ...base, to: "[fd00::0:1]:53", from: "fd00::2", udp: true });
  assert.deepEqual(v6.connection, {
    protocol: "udp",
    source: { family: "ipv6", address: "fd00::2", port: 40000 },
    destination: { family: "ipv6", address: "fd00::1", port: 53 },
  });
  const refused: [Record<string, unknown>, string][] = [
    [{ to: undefined }, "explain needs --to ADDR:PORT"],
    [{ to: "198.18.0.1" }, '--to: "198.18.0.1" has no port'],
    [{ to: "198.18.0.1:0" }, "--to: port 0 is not 1–65535"],
    [{ to: "fd00::1:80" }, '--to: "fd00::1:80" has no port'],
    [{ to: "host:80" }, '--to: "host" is not an IPv4 or IPv6 address'],
    [{ from: "fd00::2" }, "--from fd00::2 and --to 198.18.0.1:8000 are of different families"],
    [{ cgroup: "app.slice" }, "--cgroup and --uid go together: the connecting task's cgroup and uid"],
    [{ cgroup: "app.slice", uid: "x" }, "--uid x is not a uid"],
    [{ cgroup: "app.slice", uid: "1", udp: true }, "outbound capture is TCP only: --udp does not go with --cgroup"],
  ];
  for (const [change, message] of refused)
    assert.throws(
      () => readQuery({ ...base, ...change } as typeof base),
      (error: unknown) => {
        assert.ok(error instanceof UsageError);
        assert.equal(error.message, message);
        return true;
      },
    );
  assert.deepEqual(readQuery({ ...base, cgroup: "/app.slice", uid: "1000" }).connection, {
    cgroup: "app.slice",
    uid: 1000,
    destination: { family: "ipv4", address: "198.18.0.1", port: 8000 },
  });
});

test("the first packet is the lab's independently built SYN or datagram, checksums included", () => {
  for (const [family, from, to] of [
    ["ipv4", "198.18.0.2", "198.18.0.1"],
    ["ipv6", "fd00::2", "fd00::1"],
  ] as const) {
    for (const protocol of ["tcp", "udp"] as const) {
      const ours = firstPacket({
        protocol,
        source: { family, address: from, port: 40000 },
        destination: { family, address: to, port: 8000 },
      });
      const lab = buildPacket({
        family,
        protocol,
        source: from,
        destination: to,
        sport: 40000,
        dport: 8000,
        ...(protocol === "tcp" && { tcpFlags: ["syn"] as const, seq: 0x1000 }),
        payload: Buffer.alloc(0),
      } as Parameters<typeof buildPacket>[0]);
      assert.equal(ours.subarray(14).toString("hex"), lab.subarray(14).toString("hex"), `${family} ${protocol}`);
    }
  }
});

test("explain --json matches schemas/explain-output.schema.json, and the text names rule, reason and near misses", async () => {
  const ajv = new Ajv2020({ allErrors: true, strict: true, allowUnionTypes: true });
  for (const name of ["validate-output", "explain-output"])
    ajv.addSchema(JSON.parse(await readFile(`schemas/${name}.schema.json`, "utf8")));
  const validate = ajv.getSchema("urn:intercept:explain-output")!;
  const explanation: InboundExplanation = {
    direction: "inbound",
    connection: tcp("10.2.0.1:40000", "198.18.0.1:8010"),
    links: [
      {
        link: "eth0",
        policy: "web",
        version: "0123456789abcdef",
        verdict: "steered",
        reason: "the SYN is assigned to the listener on port 9000",
        rule: { label: "web[0]", location: "policies/web.yaml:3", summary: "tcp 8000-8080:!8042 → 9000" },
        target: { port: 9000, listener: true },
        testRun: { returnValue: 2, slot: 0, counter: "proxyDown" },
        nearMisses: [
          {
            rule: { label: "web[1]", location: "policies/web.yaml:4", summary: null },
            reason: "it selects 7000-7010, not 8010",
          },
        ],
      },
    ],
    unattached: [{ link: "lo", reasons: ["lo is a loopback link: programs attach to Ethernet links only"] }],
  };
  const document = { ...outputHeader("explain"), namespace: "edge", ...explanation };
  assert.ok(validate(JSON.parse(JSON.stringify(document))), ajv.errorsText(validate.errors));
  assert.ok(
    !validate({ ...document, links: [{ ...explanation.links[0], verdict: "maybe" }] }),
    "a wrong verdict fails",
  );
  assert.equal(
    renderInbound(explanation, { name: "edge" }),
    [
      'tcp 10.2.0.1:40000 → 198.18.0.1:8010 in network namespace "edge"',
      "",
      "eth0: steered  (web@0123456789abcdef)",
      "  rule web[0] (policies/web.yaml:3): tcp 8000-8080:!8042 → 9000",
      "  the SYN is assigned to the listener on port 9000",
      "  not web[1] (policies/web.yaml:4): it selects 7000-7010, not 8010",
      "lo: no program",
      "  lo is a loopback link: programs attach to Ethernet links only",
      "",
    ].join("\n"),
  );
});
