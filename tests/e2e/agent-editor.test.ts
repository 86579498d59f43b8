/**
 * The editor torture test: an agent on a policy folder that is
 * edited 500 times in 10 s — in-place writes, rename-saves, `..data` swaps
 * between existing folders, the folder deleted and created again, the
 * folder's own symlink swapped — matches the final content in the kernel
 * within 2 s of the last edit, its metrics say so, and SIGTERM then ends it
 * within 2 s, leaving nothing. Real kernel, in namespaces this test creates.
 * The load suite runs it three times harder (tests/load/agent-editor.test.ts).
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

describe("agent under an editor", { concurrency: false }, () => {
  for (const run of [1]) {
    test(`run ${run}: 500 edits in 10 s of every kind; the kernel and the metrics match the last one within 2 s`, async (t) => {
      const result = await tortureAgent(lab, 500, 10_000);
      t.diagnostic(
        `edits ${JSON.stringify(result.edits)}; settled ${result.settledMs.toFixed(0)} ms after the last edit; SIGTERM → exit ${result.stopMs.toFixed(0)} ms`,
      );
    });
  }
});
