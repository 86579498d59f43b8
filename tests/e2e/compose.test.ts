/**
 * Issue 20 on the real kernel: three teams' policy files in one namespace.
 * web (8000 → 9000) and db (5432 → 15432) both select the lab's link, so
 * they compose into one program there; a mesh-style policy (every port but
 * 22 → 15006) selects every link but that one, and runs alone on a second
 * link. Traffic goes where each file says; a db connection stays open while
 * web changes three times (each change replaces the composed program);
 * destroy leaves nothing.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { execa } from "execa";
import { intercept, Lab, SERVER_ADDRESS } from "../../lab/network.js";

const MESH_SERVER = "198.19.0.1";
const MESH_CLIENT = "198.19.0.2";

/** Backends and proxies, each answering every line with its name and the port it was asked for. */
const SERVERS = `
import net from "node:net";
const serve = (port, name) => new Promise((resolve) => net.createServer((socket) => {
  let buffered = "";
  socket.on("data", (chunk) => {
    buffered += chunk;
    let end;
    while ((end = buffered.indexOf("\\n")) >= 0) {
      buffered = buffered.slice(end + 1);
      socket.write(name + " " + socket.localPort + "\\n");
    }
  });
  socket.on("error", () => socket.destroy());
}).listen(port, resolve));
await Promise.all([
  serve(8000, "backend"), serve(5432, "backend"), serve(22, "backend"),
  serve(9000, "web9000"), serve(9001, "web9001"), serve(15432, "db"), serve(15006, "mesh"),
]);
console.log("ready");
`;

/** One line to HOST:PORT, prints the answer (or the error's code). */
const ASK = `
import net from "node:net";
const [host, port] = process.argv.slice(1);
const socket = net.connect({ host, port: Number(port) }, () => socket.write("hi\\n"));
socket.setTimeout(3000, () => { console.log("timeout"); socket.destroy(); });
socket.on("data", (chunk) => { console.log(String(chunk).trim()); socket.end(); });
socket.on("error", (error) => console.log(error.code));
`;

/** A long-lived connection: a line each time stdin gives one, each answer printed; exits on stdin's end. */
const HOLD = `
import net from "node:net";
import readline from "node:readline";
const [host, port] = process.argv.slice(1);
const socket = net.connect({ host, port: Number(port) });
socket.on("data", (chunk) => process.stdout.write(chunk));
socket.on("error", (error) => { console.log("error " + error.code); process.exit(1); });
socket.on("close", () => { console.log("closed"); process.exit(0); });
readline.createInterface({ input: process.stdin }).on("line", (line) => socket.write(line + "\\n")).on("close", () => socket.end());
`;

let lab: Lab;
let scratch: string;
let meshServerLink: string;

before(async () => {
  lab = await Lab.create();
  scratch = await mkdtemp(path.join(tmpdir(), "intercept-compose-"));
  meshServerLink = `${lab.id}m`;
  const ip = (...args: string[]) => execa("ip", args);
  await ip(
    "link",
    "add",
    meshServerLink,
    "netns",
    lab.serverNs,
    "type",
    "veth",
    "peer",
    "name",
    `${lab.id}n`,
    "netns",
    lab.clientNs,
  );
  await ip("-n", lab.serverNs, "addr", "add", `${MESH_SERVER}/24`, "dev", meshServerLink);
  await ip("-n", lab.serverNs, "link", "set", meshServerLink, "up");
  await ip("-n", lab.clientNs, "addr", "add", `${MESH_CLIENT}/24`, "dev", `${lab.id}n`);
  await ip("-n", lab.clientNs, "link", "set", `${lab.id}n`, "up");
  await lab.startInServer(["node", "--input-type=module", "-e", SERVERS], /ready/);
  await mkdir(path.join(scratch, "policies"));
});

after(async () => {
  await lab?.destroy();
  await rm(scratch, { recursive: true, force: true });
});

const policies = () => path.join(scratch, "policies");

async function write(name: string, text: string): Promise<void> {
  await writeFile(path.join(policies(), `${name}.yaml`), text);
}

async function ask(host: string, port: number): Promise<string> {
  const run = await lab.runInClient(["node", "--input-type=module", "-e", ASK, host, String(port)]);
  assert.equal(run.exitCode, 0, String(run.stderr));
  return String(run.stdout).trim();
}

async function apply(): Promise<string> {
  const applied = await intercept("apply", policies(), "--netns", lab.serverNs, "--yes", "--no-color");
  assert.equal(applied.exitCode, 0, applied.stdout + applied.stderr);
  return applied.stdout;
}

const web = (port: number) =>
  `interfaces: { include: [${lab.serverLink}] }\ninterceptors:\n  - { originalPort: 8000, port: ${port} }\n`;

describe("three teams' files in one namespace", { concurrency: false }, () => {
  test("apply: web and db compose on the lab's link, mesh runs alone on the other", async () => {
    await write("web", web(9000));
    await write(
      "db",
      `interfaces: { include: [${lab.serverLink}] }\ninterceptors:\n  - { originalPort: 5432, port: 15432 }\n`,
    );
    await write(
      "mesh",
      `interfaces: { exclude: [${lab.serverLink}] }\ninterceptors:\n  - { originalPorts: "*", exceptPorts: [22], port: 15006 }\n`,
    );
    const output = await apply();
    assert.match(output, /program\.db\+web/);
    assert.match(output, /attachment\.\S+\s+create: attach db\+web/);
    assert.match(output, new RegExp(`attachment\\.${meshServerLink}\\s+create: attach mesh`));
    const status = await intercept("status", policies(), "--netns", lab.serverNs, "--json");
    assert.equal(status.exitCode, 0, status.stderr);
    const report = JSON.parse(status.stdout);
    assert.deepEqual(
      report.links.map((link: { link: string; policy: string }) => `${link.link} ${link.policy}`).sort(),
      [`${lab.serverLink} db+web`, `${meshServerLink} mesh`].sort(),
    );
    const composed = report.programs.find((program: { policy: string }) => program.policy === "db+web");
    assert.deepEqual(
      composed.rules.map((rule: { address: string }) => rule.address),
      ["rule.db[0]", "rule.web[0]"],
    );
  });

  test("traffic goes where each file says", async () => {
    assert.equal(await ask(SERVER_ADDRESS, 8000), "web9000 8000");
    assert.equal(await ask(SERVER_ADDRESS, 5432), "db 5432");
    assert.equal(await ask(SERVER_ADDRESS, 22), "backend 22");
    assert.equal(await ask(MESH_SERVER, 8000), "mesh 8000", "the mesh's link: its own rule, not web's");
    assert.equal(await ask(MESH_SERVER, 5432), "mesh 5432");
    assert.equal(await ask(MESH_SERVER, 22), "backend 22");
  });

  test("a db connection stays open while web changes three times", async () => {
    const hold = lab.runInClient(["node", "--input-type=module", "-e", HOLD, SERVER_ADDRESS, "5432"]);
    let seen = "";
    let waiting: { count: number; resolve: () => void } | undefined;
    hold.stdout?.on("data", (chunk: Buffer) => {
      seen += String(chunk);
      if (waiting && seen.split("\n").filter((line) => line === "db 5432").length >= waiting.count) waiting.resolve();
    });
    /** Sends a line on the held connection and waits for the @count-th answer. */
    const roundTrip = (count: number) =>
      new Promise<void>((resolve, reject) => {
        waiting = { count, resolve };
        void hold.then(() => reject(new Error(`the held connection ended: ${seen}`)));
        hold.stdin?.write("ping\n");
      });
    await roundTrip(1);
    for (const [change, port] of [9001, 9000, 9001].entries()) {
      await write("web", web(port));
      const output = await apply();
      assert.match(output, /program\.db\+web\s+replace: program changed .*shared by db and web/);
      assert.equal(await ask(SERVER_ADDRESS, 8000), `web${port} 8000`);
      await roundTrip(change + 2);
    }
    hold.stdin?.end();
    const ended = await hold;
    assert.equal(ended.exitCode, 0, String(ended.stdout));
    assert.doesNotMatch(String(ended.stdout), /error/);
    assert.equal(
      String(ended.stdout)
        .trim()
        .split("\n")
        .filter((line) => line === "db 5432").length,
      4,
    );
  });

  test("destroy leaves nothing: no filter, no pin, every port reaches its backend", async () => {
    const destroyed = await intercept("destroy", "--netns", lab.serverNs, "--yes", "--no-color");
    assert.equal(destroyed.exitCode, 0, destroyed.stdout + destroyed.stderr);
    assert.equal(existsSync(`/sys/fs/bpf/intercept/${lab.pinKey}`), false);
    for (const link of [lab.serverLink, meshServerLink]) {
      for (const hook of ["ingress", "egress"]) {
        const filters = await execa("tc", ["-n", lab.serverNs, "filter", "show", "dev", link, hook], { reject: false });
        assert.equal(String(filters.stdout).trim(), "", `${link} ${hook}`);
      }
    }
    assert.equal(await ask(SERVER_ADDRESS, 8000), "backend 8000");
    assert.equal(await ask(MESH_SERVER, 5432), "backend 5432");
  });
});
