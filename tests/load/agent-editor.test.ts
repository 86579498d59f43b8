/**
 * The editor torture test, harder: 2,000 edits in 20 s (100 a second) of
 * every kind, three times; the kernel and the metrics match the last edit
 * within 2 s of it, and SIGTERM ends the agent within 2 s.
 */
import { after, before, describe, test } from "node:test";
import { tortureAgent } from "../../lab/editor-torture.js";
import { Lab } from "../../lab/network.js";

let lab: Lab;

before(async () => {
  lab = await Lab.create();
});

after(async () => {
  await lab?.destroy();
});

describe("agent under a fast editor", { concurrency: false }, () => {
  for (const run of [1, 2, 3]) {
    test(`run ${run}: 2,000 edits in 20 s; matched within 2 s of the last`, async (t) => {
      const result = await tortureAgent(lab, 2_000, 20_000);
      t.diagnostic(
        `edits ${JSON.stringify(result.edits)}; settled ${result.settledMs.toFixed(0)} ms after the last edit; SIGTERM → exit ${result.stopMs.toFixed(0)} ms`,
      );
    });
  }
});
