/**
 * Selectors on the real kernel, with Istio's inbound rule: every port but
 * 22, 15020 and 15021 goes to one proxy on 15006, which sees the port each
 * client asked for (its socket's local port), while 22 reaches its own
 * server; and a client address left out by exceptSources reaches the
 * backends directly.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { CLIENT_ADDRESS, intercept, Lab, SERVER_ADDRESS } from "../../lab/network.js";

const PROXY_PORT = 15006;
const BACKEND_PORTS = [22, 8000, 8080, 9999];

/**
 * A backend on each port of BACKEND_PORTS, answering "backend PORT", and a
 * proxy on PROXY_PORT answering "proxy PORT" with the port its accepted
 * socket was asked for (socket.localPort: the original destination).
 */
const SERVERS = `
import net from "node:net";
const serve = (port, name) => new Promise((resolve) => net.createServer((socket) => {
  socket.end(name + " " + socket.localPort + "\\n");
}).listen(port, resolve));
await Promise.all([${BACKEND_PORTS.join(", ")}].map((port) => serve(port, "backend")));
await serve(${PROXY_PORT}, "proxy");
console.log("ready");
`;

/** Connects from LOCAL to HOST:PORT and prints the line the server answers (or the error's code). */
const CLIENT = `
import net from "node:net";
const [host, port, localAddress] = process.argv.slice(1);
const socket = net.connect({ host, port: Number(port), localAddress });
socket.setTimeout(3000, () => { console.log("timeout"); socket.destroy(); });
let answer = "";
socket.on("data", (chunk) => (answer += chunk));
socket.on("end", () => console.log(answer.trim()));
socket.on("error", (error) => console.log(error.code));
`;

let lab: Lab;
let scratch: string;
let excluded: string;

before(async () => {
  lab = await Lab.create();
  scratch = await mkdtemp(path.join(tmpdir(), "intercept-selectors-"));
  excluded = await lab.addClientAddress();
  await lab.startInServer(["node", "--input-type=module", "-e", SERVERS], /ready/);
});

after(async () => {
  await lab?.destroy();
  await rm(scratch, { recursive: true, force: true });
});

/** What the server namespace answers on @port to a client at @from. */
async function ask(port: number, from = CLIENT_ADDRESS): Promise<string> {
  const run = await lab.runInClient(["node", "--input-type=module", "-e", CLIENT, SERVER_ADDRESS, String(port), from]);
  assert.equal(run.exitCode, 0, String(run.stderr));
  return String(run.stdout).trim();
}

describe("Istio's inbound rule, with one client left out", { concurrency: false }, () => {
  test("before apply, every port reaches its backend", async () => {
    for (const port of BACKEND_PORTS) assert.equal(await ask(port), `backend ${port}`);
  });

  test("apply: every port but 22, 15020 and 15021 to the proxy on 15006, except from one address", async () => {
    const policy = path.join(scratch, "istio.yaml");
    await writeFile(
      policy,
      [
        "interceptors:",
        `  - { originalPorts: "*", exceptPorts: [22, 15020, 15021], port: ${PROXY_PORT}, exceptSources: ["${excluded}"] }`,
        "",
      ].join("\n"),
    );
    const applied = await intercept("apply", policy, "--netns", lab.serverNs, "--yes", "--no-color");
    assert.equal(applied.exitCode, 0, applied.stdout + applied.stderr);
    const status = await intercept("status", policy, "--netns", lab.serverNs, "--json");
    assert.equal(status.exitCode, 0, status.stderr);
    const [rule] = JSON.parse(status.stdout).programs[0].rules;
    assert.equal(rule.selector, `tcp *:!22,15020-15021 from !${excluded} → ${PROXY_PORT}`);
  });

  test("8000, 8080 and 9999 reach the one proxy, which sees each original port", async () => {
    for (const port of [8000, 8080, 9999]) assert.equal(await ask(port), `proxy ${port}`);
  });

  test("22 reaches its own server, and the proxy's own port is the proxy's", async () => {
    assert.equal(await ask(22), "backend 22");
    assert.equal(await ask(PROXY_PORT), `proxy ${PROXY_PORT}`);
  });

  test("a client address in exceptSources reaches the backends directly", async () => {
    for (const port of [8000, 8080, 9999]) assert.equal(await ask(port, excluded), `backend ${port}`);
    assert.equal(await ask(8000), "proxy 8000", "while the other client is still steered");
  });

  test("after destroy, every port reaches its backend again", async () => {
    const destroyed = await intercept("destroy", "--netns", lab.serverNs, "--yes", "--no-color");
    assert.equal(destroyed.exitCode, 0, destroyed.stdout + destroyed.stderr);
    for (const port of BACKEND_PORTS) assert.equal(await ask(port), `backend ${port}`);
  });
});
