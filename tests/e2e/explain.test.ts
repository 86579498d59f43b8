/**
 * `intercept explain` against the real kernel: its verdicts agree with
 * what 200 real connections do (random ports, sources and destinations
 * against a policy with ranges, excepts, CIDRs and both onProxyDown
 * choices), it leaves the live state as it was (every map of the live
 * version, and no flow record), and it refuses a tuple in TIME_WAIT.
 */
import assert from "node:assert/strict";
import { randomInt } from "node:crypto";
import { readdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { execa } from "execa";
import { programBuilder } from "../../src/commands/objects.js";
import { KernelDatapath } from "../../src/datapath/kernel.js";
import { explainMany, type InboundExplanation } from "../../src/flows/explain.js";
import type { InboundConnection } from "../../src/flows/explain-rules.js";
import { desiredState, validPolicies } from "../../src/reconcile/index.js";
import { LabCgroup } from "../../lab/cgroup.js";
import { CLIENT_ADDRESS, intercept, Lab, SERVER_ADDRESS } from "../../lab/network.js";

const SECOND_SERVER_ADDRESS = "198.18.0.3";
const PROXIES = [9000, 9001]; // 9002 is a rule's port where nothing listens
const BACKENDS = [4000, 5000, ...range(6000, 6005), ...range(7000, 7010), ...range(8000, 8020)];
/** Ports the cases ask for: the backends, ports nothing listens on, and the proxies' own. */
const PORTS = [...BACKENDS, 4001, 6006, 7011, 8021, 9000, 9001, 9002];
const CASES = 200;
const DROP_TIMEOUT_MS = 1500;

function range(first: number, last: number): number[] {
  return Array.from({ length: last - first + 1 }, (_, i) => first + i);
}

/** Listens on every port of BACKENDS and PROXIES; each answers "NAME PORT-ASKED-FOR" and closes first. */
const SERVERS = `
import net from "node:net";
const serve = (port, name) => new Promise((resolve) => net.createServer((socket) => {
  socket.end(name + " " + socket.localPort + "\\n");
}).listen(port, "0.0.0.0", resolve));
await Promise.all([${BACKENDS.join(", ")}].map((port) => serve(port, "backend")));
await Promise.all([${PROXIES.join(", ")}].map((port) => serve(port, "proxy" + port)));
console.log("ready");
`;

/** Makes every connection of a JSON list at once, from its own address and port; prints what each got. */
const CLIENT = `
import net from "node:net";
const cases = JSON.parse(process.argv[1]);
const one = ({ from, sport, host, port }) => new Promise((resolve) => {
  const socket = net.connect({ host, port, localAddress: from, localPort: sport });
  socket.setTimeout(${DROP_TIMEOUT_MS}, () => { socket.destroy(); resolve("timeout"); });
  let answer = "";
  socket.on("data", (chunk) => (answer += chunk));
  socket.on("end", () => resolve(answer.trim()));
  socket.on("error", (error) => resolve(error.code));
});
console.log(JSON.stringify(await Promise.all(cases.map(one))));
`;

let lab: Lab;
let scratch: string;
let policyFile: string;
let clients: string[];
let cgroup: LabCgroup;
let outboundFile: string;

before(async () => {
  lab = await Lab.create();
  scratch = await mkdtemp(path.join(tmpdir(), "intercept-explain-"));
  await execa("ip", ["-n", lab.serverNs, "addr", "add", `${SECOND_SERVER_ADDRESS}/24`, "dev", lab.serverLink]);
  clients = [CLIENT_ADDRESS, await lab.addClientAddress(), await lab.addClientAddress(), await lab.addClientAddress()];
  const [, excepted, inPair, alsoInPair] = clients as [string, string, string, string];
  assert.deepEqual([excepted, inPair, alsoInPair], ["198.18.0.101", "198.18.0.102", "198.18.0.103"]);
  await lab.startInServer(["node", "--input-type=module", "-e", SERVERS], /ready/);
  policyFile = path.join(scratch, "web.yaml");
  await writeFile(
    policyFile,
    [
      "interceptors:",
      '  - { originalPorts: ["8000-8020"], exceptPorts: [8010], port: 9000, exceptSources: ["198.18.0.101"] }',
      '  - { originalPorts: ["7000-7010"], port: 9001, sources: ["198.18.0.102/31"], destinations: ["198.18.0.3"] }',
      '  - { originalPorts: ["6000-6005"], port: 9002, onProxyDown: pass, exceptSources: ["198.18.0.103"] }',
      '  - { originalPort: 5000, port: 9002, sources: ["198.18.0.2"] }',
      "",
    ].join("\n"),
  );
  cgroup = await LabCgroup.create(["app", "app/sidecar", "other"]);
  outboundFile = path.join(scratch, "out.yaml");
  await writeFile(
    outboundFile,
    [
      "outbound:",
      `  cgroups: ["${cgroup.path("app")}"]`,
      `  exempt: { uids: [4242], cgroups: ["${cgroup.path("app/sidecar")}"] }`,
      "  rules:",
      '    - { originalPort: 443, port: 15001, cidrs: ["198.18.0.0/24"] }',
      "",
    ].join("\n"),
  );
  const applied = await intercept("apply", policyFile, outboundFile, "--netns", lab.serverNs, "--yes", "--no-color");
  assert.equal(applied.exitCode, 0, applied.stdout + applied.stderr);
});

after(async () => {
  await lab?.destroy();
  await cgroup?.destroy();
  await rm(scratch, { recursive: true, force: true });
  const left = (await readdir("/sys/fs/bpf")).filter((name) => name.startsWith(`intercept-explain-${process.pid}-`));
  assert.deepEqual(left, [], "no side copy is left pinned");
});

/** What a real connection gets when the program does what @explanation says. */
function expected(explanation: InboundExplanation): string {
  const [link] = explanation.links;
  assert.ok(link, "the server's link runs the program");
  const port = explanation.connection.destination.port;
  switch (link.verdict) {
    case "steered":
      return `proxy${link.target!.port} ${port}`;
    case "proxy-down-dropped":
      return "timeout";
    case "proxy-down-passed":
    case "no-rule":
    case "rule-disabled":
      return BACKENDS.includes(port)
        ? `backend ${port}`
        : PROXIES.includes(port)
          ? `proxy${port} ${port}`
          : "ECONNREFUSED";
    default:
      throw new Error(`unexpected verdict ${link.verdict}: ${link.reason}`);
  }
}

test(`explain agrees with ${CASES} real connections`, async () => {
  const sourcePorts = new Set<number>();
  while (sourcePorts.size < CASES) sourcePorts.add(randomInt(20_000, 60_000));
  // A few cases of each rule's edge first, so every verdict is met; the rest at random.
  const chosen: [string, string, number][] = [
    [CLIENT_ADDRESS, SERVER_ADDRESS, 5000], // rule 3's source, nothing on 9002: dropped
    ["198.18.0.101", SERVER_ADDRESS, 5000], // not rule 3's source: the backend
    [CLIENT_ADDRESS, SECOND_SERVER_ADDRESS, 8010], // exceptPorts
    ["198.18.0.101", SERVER_ADDRESS, 8005], // exceptSources
    ["198.18.0.102", SECOND_SERVER_ADDRESS, 7003], // rule 1's sources and destinations: steered to 9001
    ["198.18.0.103", SERVER_ADDRESS, 7003], // not rule 1's destination
    [CLIENT_ADDRESS, SECOND_SERVER_ADDRESS, 7003], // not rule 1's sources
    [CLIENT_ADDRESS, SERVER_ADDRESS, 6002], // nothing on 9002, passed
    ["198.18.0.103", SERVER_ADDRESS, 6002], // exceptSources of rule 2
  ];
  const connections: InboundConnection[] = [...sourcePorts].map((sport, i) => {
    const [from, to, port] = chosen[i] ?? [
      clients[randomInt(clients.length)]!,
      randomInt(2) === 0 ? SERVER_ADDRESS : SECOND_SERVER_ADDRESS,
      PORTS[randomInt(PORTS.length)]!,
    ];
    return {
      protocol: "tcp",
      source: { family: "ipv4", address: from, port: sport },
      destination: { family: "ipv4", address: to, port },
    };
  });
  const builder = await programBuilder(undefined);
  const { loaded, policies } = await validPolicies([policyFile, outboundFile]);
  const netns = { name: lab.serverNs };
  const explained = await explainMany(
    {
      netns,
      datapath: await KernelDatapath.open(netns, "explain"),
      desired: await desiredState(loaded, policies, builder),
      loaded,
      builder,
    },
    connections,
  );
  const run = await lab.runInClient([
    "node",
    "--input-type=module",
    "-e",
    CLIENT,
    JSON.stringify(
      connections.map(({ source, destination }) => ({
        from: source.address,
        sport: source.port,
        host: destination.address,
        port: destination.port,
      })),
    ),
  ]);
  assert.equal(run.exitCode, 0, String(run.stderr));
  const real = JSON.parse(String(run.stdout)) as string[];
  const disagreements = explained
    .map((explanation, i) => ({ explanation, want: expected(explanation), got: real[i] }))
    .filter(({ want, got }) => want !== got)
    .map(({ explanation, want, got }) => {
      const { source, destination } = explanation.connection;
      return `${source.address}:${source.port} → ${destination.address}:${destination.port}: explain ${explanation.links[0]!.verdict} (${want}), real ${got}`;
    });
  assert.deepEqual(disagreements, []);
  const verdicts = new Set(explained.map((explanation) => explanation.links[0]!.verdict));
  for (const verdict of ["steered", "no-rule", "proxy-down-passed", "proxy-down-dropped"])
    assert.ok(verdicts.has(verdict as never), `the cases cover ${verdict}: ${[...verdicts].join(", ")}`);
});

/** Every map of the live version that bpftool can dump (not the ring buffer), as text. */
async function liveMaps(): Promise<Record<string, string>> {
  const root = `/sys/fs/bpf/intercept/${lab.pinKey}/web`;
  const [version] = await readdir(root);
  const maps = path.join(root, version!, "maps");
  const dumps: Record<string, string> = {};
  for (const name of (await readdir(maps)).sort()) {
    const dump = await execa("bpftool", ["map", "dump", "pinned", path.join(maps, name)], { reject: false });
    if (dump.exitCode === 0) dumps[name] = dump.stdout;
  }
  return dumps;
}

test("explain leaves the live state as it was: counters, TIME_WAIT tries, switches, records", async () => {
  const watch = execa(
    "node",
    ["bin/intercept.js", "watch", policyFile, "--netns", lab.serverNs, "--enable", "--json"],
    {
      reject: false,
      stdin: "ignore",
    },
  );
  const records: string[] = [];
  createInterface({ input: watch.stdout! }).on("line", (line) => records.push(line));
  try {
    await new Promise<void>((resolve, reject) => {
      watch.stderr!.on("data", (chunk: Buffer) => chunk.toString().includes("watching") && resolve());
      void watch.then((ended) => reject(new Error(`watch ended: ${String(ended.stderr)}`)));
    });
    const before = await liveMaps();
    assert.ok(
      ["rule_counters", "rule_state", "rule_events"].every((name) => name in before),
      Object.keys(before).join(),
    );
    for (const [to, from, verdict] of [
      [`${SERVER_ADDRESS}:8005`, CLIENT_ADDRESS, "steered"],
      [`${SERVER_ADDRESS}:5000`, CLIENT_ADDRESS, "proxy-down-dropped"],
      [`${SERVER_ADDRESS}:6001`, CLIENT_ADDRESS, "proxy-down-passed"],
      [`${SERVER_ADDRESS}:8010`, CLIENT_ADDRESS, "no-rule"],
    ] as const) {
      const explained = await intercept(
        "explain",
        policyFile,
        "--netns",
        lab.serverNs,
        "--to",
        to,
        "--from",
        from,
        "--json",
      );
      assert.equal(explained.exitCode, 0, explained.stderr);
      assert.equal(JSON.parse(explained.stdout).links[0].verdict, verdict, to);
    }
    assert.deepEqual(await liveMaps(), before);
    // A real connection now is recorded: watch was reading all along, and saw nothing of explain's.
    const real = await lab.runInClient([
      "node",
      "--input-type=module",
      "-e",
      CLIENT,
      JSON.stringify([{ from: CLIENT_ADDRESS, sport: 12345, host: SERVER_ADDRESS, port: 8005 }]),
    ]);
    assert.equal(String(real.stdout).trim(), JSON.stringify(["proxy9000 8005"]));
    const deadline = Date.now() + 15_000;
    while (records.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(records.length, 1, records.join("\n"));
    assert.equal(JSON.parse(records[0]!).source.port, 12345);
  } finally {
    watch.kill("SIGTERM");
    await watch;
  }
});

test("a tuple the server holds in TIME_WAIT is refused, and nothing is loaded", async () => {
  // The servers close first, so the server's side of the last test's connection is in TIME_WAIT.
  const refused = await intercept(
    "explain",
    policyFile,
    "--netns",
    lab.serverNs,
    "--to",
    `${SERVER_ADDRESS}:8005`,
    "--from",
    `${CLIENT_ADDRESS}:12345`,
  );
  assert.equal(refused.exitCode, 1);
  assert.equal(
    refused.stderr.trim(),
    `intercept: ${CLIENT_ADDRESS}:12345 → ${SERVER_ADDRESS}:8005 is in TIME_WAIT: a SYN for it would end that TIME_WAIT for real; give another --from port`,
  );
});

test("outbound: the live rule set for a cgroup and uid, against the loaded version", async () => {
  const cases = [
    ["app", "1000", "198.18.0.9:443", "redirected", "to the local proxy on port 15001"],
    ["app", "4242", "198.18.0.9:443", "exempt", "uid 4242 is in exempt.uids"],
    [
      "app/sidecar",
      "0",
      "198.18.0.9:443",
      "exempt",
      `cgroup /${cgroup.path("app/sidecar")} is exempt cgroup /${cgroup.path("app/sidecar")}`,
    ],
    [
      "other",
      "0",
      "198.18.0.9:443",
      "not-captured",
      `cgroup /${cgroup.path("other")} is not in or below a captured cgroup (/${cgroup.path("app")})`,
    ],
    ["app", "0", "203.0.113.1:443", "no-rule", "no outbound rule selects 203.0.113.1:443"],
  ] as const;
  for (const [child, uid, to, verdict, reason] of cases) {
    const explained = await intercept(
      "explain",
      policyFile,
      outboundFile,
      "--netns",
      lab.serverNs,
      "--to",
      to,
      "--cgroup",
      cgroup.path(child),
      "--uid",
      uid,
      "--json",
    );
    assert.equal(explained.exitCode, 0, explained.stderr);
    const [policy] = JSON.parse(explained.stdout).policies;
    assert.deepEqual([policy.policy, policy.verdict, policy.reason], ["out", verdict, reason], `${child} ${uid} ${to}`);
  }
});

test("a composed program (two policies on one link): each rule by its own policy, slot and file:line", async () => {
  const dbFile = path.join(scratch, "db.yaml");
  await writeFile(
    dbFile,
    `interfaces: { include: [${lab.serverLink}] }\ninterceptors:\n  - { originalPort: 5432, port: 15432 }\n`,
  );
  const files = [policyFile, outboundFile, dbFile];
  const applied = await intercept("apply", ...files, "--netns", lab.serverNs, "--yes", "--no-color");
  assert.equal(applied.exitCode, 0, applied.stdout + applied.stderr);
  const explain = async (to: string) => {
    const explained = await intercept(
      "explain",
      ...files,
      "--netns",
      lab.serverNs,
      "--to",
      to,
      "--from",
      CLIENT_ADDRESS,
      "--json",
    );
    assert.equal(explained.exitCode, 0, explained.stderr);
    const [link] = JSON.parse(explained.stdout).links;
    return [
      link.policy.includes("db") && link.policy.includes("web"),
      link.verdict,
      link.rule?.label,
      link.rule?.location,
    ];
  };
  assert.deepEqual(await explain(`${SERVER_ADDRESS}:5432`), [true, "proxy-down-dropped", "db[0]", `${dbFile}:3`]);
  assert.deepEqual(await explain(`${SERVER_ADDRESS}:8005`), [true, "steered", "web[0]", `${policyFile}:2`]);
  assert.deepEqual(await explain(`${SERVER_ADDRESS}:5000`), [true, "proxy-down-dropped", "web[3]", `${policyFile}:5`]);
});
