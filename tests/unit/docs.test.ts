/**
 * The plan examples in README.md and docs/gitops.md are not written by
 * hand: they are rendered here from scenarios over the fake datapath, so
 * they show only plans intercept produces, and cannot drift.
 * `npm run test:update-golden` rewrites them on purpose.
 */
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { test } from "node:test";
import { renderPlan } from "../../src/plan/index.js";
import { executePlan, makePlan, type DesiredPolicy } from "../../src/reconcile/index.js";
import { desiredPolicy } from "../support/desired.js";
import { FakeDatapath } from "../support/fake-datapath.js";
import { UPDATE_GOLDEN } from "../support/golden.js";

const MARKER = "<!-- plan example: produced by tests/unit/docs.test.ts (npm run test:update-golden) -->";

/** The kernel of namespace "edge" with @live applied, and the plan that takes it to @wanted. */
async function planFrom(live: DesiredPolicy[], wanted: DesiredPolicy[], links: string[]): Promise<string> {
  const fake = new FakeDatapath({ name: "edge" });
  for (const link of links) fake.addLink(link);
  await executePlan(makePlan(live, await fake.observe()), fake, { objectFor: (hash) => ({ objectPath: `${hash}.o`, prefixes: [] }) });
  return renderPlan(makePlan(wanted, await fake.observe()), { colour: false });
}

/** Checks (or, updating golden files, rewrites) the fenced block after the marker in @file. */
async function assertExample(file: string, rendered: string): Promise<void> {
  const text = await readFile(file, "utf8");
  const start = text.indexOf(MARKER);
  assert.ok(start >= 0, `${file} has the plan example marker`);
  const open = text.indexOf("```\n", start) + 4;
  const close = text.indexOf("```\n", open);
  const expected = `${rendered.trimEnd()}\n`;
  if (UPDATE_GOLDEN) {
    await writeFile(file, text.slice(0, open) + expected + text.slice(close));
    return;
  }
  assert.equal(text.slice(open, close), expected, `${file}'s plan example differs (intended? run \`npm run test:update-golden\`)`);
}

const web = (enabled: boolean) => desiredPolicy("web", [{ originalPort: 8080, port: 15006 }, { originalPort: 8443, port: 15006, enabled }], { include: ["eth0", "eth1"], exclude: [] });

test("README: a policy that grows a rule is replaced, and each link switched to the new version", async () => {
  const grown = desiredPolicy("web", [{ originalPort: 8080, port: 15006 }, { originalPort: 8443, port: 15006 }, { originalPort: 9090, port: 15006 }], { include: ["eth0", "eth1"], exclude: [] });
  await assertExample("README.md", await planFrom([web(true)], [grown], ["eth0", "eth1"]));
});

test("docs/gitops.md: a live edit and a new policy on another link", async () => {
  const dns = desiredPolicy("dns", [{ originalPort: 53, port: 5353, protocol: "udp" }], { include: ["eth2"], exclude: [] });
  await assertExample("docs/gitops.md", await planFrom([web(true)], [web(false), dns], ["eth0", "eth1", "eth2"]));
});
