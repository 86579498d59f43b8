/**
 * Under a steady wrk load to the intercepted port: 100 live edits (another
 * rule toggled through the agent), then 10 program replaces (a third rule
 * added and removed) — and not one socket error or non-2xx response.
 * Bounded: wrk stops as soon as the edits are done (2 minutes at most).
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { execa } from "execa";
import { Lab, SERVER_ADDRESS } from "../../lab/network.js";
import { parseWrk } from "../../lab/wrk.js";
import { AgentProcess } from "../../lab/agent-process.js";

const LIVE_EDITS = 100;
const REPLACES = 10;

let lab: Lab;
let scratch: string;
let agent: AgentProcess | undefined;

before(async () => {
  lab = await Lab.create();
  scratch = await mkdtemp(path.join(tmpdir(), "intercept-load-"));
  await lab.startInServer(["node", "dist/bench/http-server.js", "9000"], /ready/);
});

after(async () => {
  agent?.kill();
  await lab?.destroy();
  await rm(scratch, { recursive: true, force: true });
});

function policy(toggled: boolean, extraRule: boolean): string {
  return [
    "interceptors:",
    "  - { port: 9000, originalPort: 8000 }",
    `  - { port: 9443, originalPort: 8443, enabled: ${toggled} }`,
    ...(extraRule ? ["  - { port: 7100, originalPort: 7000 }"] : []),
    "",
  ].join("\n");
}

test(`${LIVE_EDITS} live edits and ${REPLACES} replaces under load: zero errors`, async (t) => {
  const file = path.join(scratch, "load.yaml");
  await writeFile(file, policy(true, false));
  agent = new AgentProcess([file, "--netns", lab.serverNs]);
  await agent.waitFor((l) => /policies applied/.test(String(l.message)));

  const wrk = execa(
    "ip",
    ["netns", "exec", lab.clientNs, "wrk", "-t1", "-c20", "-d120s", `http://${SERVER_ADDRESS}:8000/`],
    { reject: false },
  );
  await new Promise((resolve) => setTimeout(resolve, 500));
  try {
    for (let i = 1; i <= LIVE_EDITS; i++) {
      const from = agent.lines.length;
      const toggled = i % 2 === 0;
      await writeFile(file, policy(toggled, false));
      await agent.waitFor((l) => l.message === `rule.load[1]: ${toggled ? "enabled" : "disabled"}`, from);
    }
    for (let i = 1; i <= REPLACES; i++) {
      const from = agent.lines.length;
      await writeFile(file, policy(true, i % 2 === 1));
      await agent.waitFor((l) => l.message === "program.load: replaced", from);
    }
  } finally {
    wrk.kill("SIGINT"); // wrk reports what it measured when interrupted
  }
  const report = parseWrk(String((await wrk).stdout));
  t.diagnostic(
    `${report.requests} requests (${report.requestsPerSecond.toFixed(0)} req/s) across ${LIVE_EDITS} live edits and ${REPLACES} replaces; socket errors ${report.socketErrors}, non-2xx ${report.non2xx}`,
  );
  assert.ok(report.requests > 1000, String((await wrk).stdout));
  assert.equal(report.socketErrors, 0);
  assert.equal(report.non2xx, 0);
  const errors = agent.lines.filter((l) => l.event === "error").map((l) => String(l.message));
  assert.deepEqual(errors, [], "the agent logged no error");
  assert.equal(await agent.stop(), 0);
});
