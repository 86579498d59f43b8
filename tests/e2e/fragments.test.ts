/**
 * Fragmented UDP through a rewrite rule, on the real kernel: 4000-byte
 * datagrams leave the client in three fragments (veth MTU 1500), the first
 * fragment's port is rewritten on the way in and the reply's on the way
 * out, and the client sees every datagram echoed from the port it asked
 * for — over IPv6 exactly as over IPv4.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { execa } from "execa";
import { intercept, Lab, SERVER_ADDRESS } from "../../lab/network.js";

const SERVER_ADDRESS_V6 = "fd00:198:18::1";
const CLIENT_ADDRESS_V6 = "fd00:198:18::2";
const ORIGINAL_PORT = 8000;
const ECHO_PORT = 9000;
const DATAGRAM_BYTES = 4000;

/** Echoes every datagram to its sender; one dual-stack socket serves IPv4 and IPv6. */
const ECHO_SERVER = `
import dgram from "node:dgram";
const socket = dgram.createSocket({ type: "udp6", ipv6Only: false });
socket.on("message", (message, peer) => socket.send(message, peer.port, peer.address));
socket.bind(${ECHO_PORT}, "::", () => console.log("ready"));
`;

/**
 * Sends COUNT datagrams of SIZE bytes to HOST:PORT one at a time and prints,
 * as JSON, how many came back intact and from which ports.
 */
const CLIENT = `
import dgram from "node:dgram";
const [host, port, size, count] = process.argv.slice(1);
const socket = dgram.createSocket(host.includes(":") ? "udp6" : "udp4");
const result = { intact: 0, ports: [] };
for (let i = 0; i < Number(count); i++) {
  const payload = Buffer.alloc(Number(size), i + 1);
  const reply = new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), 2000);
    socket.once("message", (message, peer) => { clearTimeout(timer); resolve({ message, peer }); });
  });
  socket.send(payload, Number(port), host);
  const answer = await reply;
  if (answer) {
    result.ports.push(answer.peer.port);
    if (answer.message.equals(payload)) result.intact++;
  }
}
console.log(JSON.stringify(result));
socket.close();
`;

let lab: Lab;
let scratch: string;

before(async () => {
  lab = await Lab.create();
  scratch = await mkdtemp(path.join(tmpdir(), "intercept-fragments-"));
  // IPv6 on the lab's veth pair, without duplicate address detection so it is usable at once.
  await execa("ip", ["-n", lab.serverNs, "addr", "add", `${SERVER_ADDRESS_V6}/64`, "dev", lab.serverLink, "nodad"]);
  await execa("ip", ["-n", lab.clientNs, "addr", "add", `${CLIENT_ADDRESS_V6}/64`, "dev", lab.clientLink, "nodad"]);
  await lab.startInServer(["node", "--input-type=module", "-e", ECHO_SERVER], /ready/);
});

after(async () => {
  await lab?.destroy();
  await rm(scratch, { recursive: true, force: true });
});

async function exchange(host: string, count: number): Promise<{ intact: number; ports: number[] }> {
  const run = await lab.runInClient([
    "node",
    "--input-type=module",
    "-e",
    CLIENT,
    host,
    String(ORIGINAL_PORT),
    String(DATAGRAM_BYTES),
    String(count),
  ]);
  assert.equal(run.exitCode, 0, String(run.stderr));
  return JSON.parse(String(run.stdout));
}

/** Fragments the client namespace's IP layer has made so far, per family. */
async function fragmentsCreated(family: "ipv4" | "ipv6"): Promise<number> {
  if (family === "ipv6") {
    const snmp6 = String((await lab.runInClient(["cat", "/proc/net/snmp6"])).stdout);
    return Number(/^Ip6FragCreates\s+(\d+)$/m.exec(snmp6)![1]);
  }
  const [names, values] = String((await lab.runInClient(["cat", "/proc/net/snmp"])).stdout)
    .split("\n")
    .filter((line) => line.startsWith("Ip:"));
  return Number(values!.split(/\s+/)[names!.split(/\s+/).indexOf("FragCreates")]);
}

const FAMILIES = [
  ["ipv4", SERVER_ADDRESS],
  ["ipv6", SERVER_ADDRESS_V6],
] as const;

describe("fragmented UDP through a rewrite rule", { concurrency: false }, () => {
  for (const [family, host] of FAMILIES) {
    test(`${family}: without intercept nothing answers on ${ORIGINAL_PORT}`, async () => {
      assert.deepEqual(await exchange(host, 1), { intact: 0, ports: [] });
    });
  }

  test("apply a udp rewrite rule", async () => {
    const policy = path.join(scratch, "fragments.yaml");
    await writeFile(
      policy,
      `interceptors:\n  - { originalPort: ${ORIGINAL_PORT}, port: ${ECHO_PORT}, protocol: udp }\n`,
    );
    const applied = await intercept("apply", policy, "--netns", lab.serverNs, "--yes", "--no-color");
    assert.equal(applied.exitCode, 0, applied.stdout + applied.stderr);
  });

  for (const [family, host] of FAMILIES) {
    test(`${family}: ${DATAGRAM_BYTES}-byte datagrams arrive in fragments and come back whole from ${ORIGINAL_PORT}`, async () => {
      const fragmentsBefore = await fragmentsCreated(family);
      const result = await exchange(host, 5);
      assert.deepEqual(result, { intact: 5, ports: Array(5).fill(ORIGINAL_PORT) });
      assert.ok((await fragmentsCreated(family)) - fragmentsBefore >= 5 * 3, "the client sent them as fragments");
    });
  }

  test("destroy leaves nothing of intercept in the namespace", async () => {
    const destroyed = await intercept("destroy", "--netns", lab.serverNs, "--yes", "--no-color");
    assert.equal(destroyed.exitCode, 0, destroyed.stdout + destroyed.stderr);
    for (const [, host] of FAMILIES) assert.deepEqual(await exchange(host, 1), { intact: 0, ports: [] });
  });
});
