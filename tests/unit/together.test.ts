/**
 * Together: requests of many callers served by one run for many (a burst
 * of namespaces' bpftool loads, their link lists), one run at a time.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Together } from "../../src/kernel/together.js";

/** A runAll whose runs the test lets finish one by one, recording each batch. */
function gated(concurrency = 1) {
  const batches: number[][] = [];
  const gates: (() => void)[] = [];
  const failing = new Set<number>();
  const together = new Together<number, string>(async (requests) => {
    batches.push(requests);
    await new Promise<void>((release) => gates.push(release));
    if (requests.some((request) => failing.has(request))) throw new Error(`batch ${requests.join(",")} failed`);
    return requests.map((request) => `done ${request}`);
  }, concurrency);
  /** Lets the oldest run still going finish, once it has started. */
  const release = async () => {
    while (gates.length === 0) await new Promise((resolve) => setImmediate(resolve));
    gates.shift()!();
  };
  return { together, batches, release, failing };
}

test("a lone request runs at once; those made while it runs go together in the next run, in order", async () => {
  const { together, batches, release } = gated();
  const first = together.run(1);
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(batches, [[1]], "the first runs alone, without waiting for company");
  const later = [together.run(2), together.run(3), together.run(4)];
  assert.deepEqual(batches, [[1]], "one run at a time");
  await release();
  assert.equal(await first, "done 1");
  await release();
  assert.deepEqual(await Promise.all(later), ["done 2", "done 3", "done 4"], "each caller gets its own answer");
  assert.deepEqual(batches, [[1], [2, 3, 4]]);
});

test("a failed run fails every request in it, and the next run goes on", async () => {
  const { together, batches, release, failing } = gated();
  failing.add(3);
  const first = together.run(1);
  await new Promise((resolve) => setImmediate(resolve));
  const failed = [together.run(2), together.run(3)].map((promise) =>
    promise.then(
      () => "answered",
      (error: Error) => error.message,
    ),
  );
  await release();
  await first;
  while (batches.length < 2) await new Promise((resolve) => setImmediate(resolve)); // 2 and 3 have started
  const after = together.run(5);
  await release();
  assert.deepEqual(await Promise.all(failed), ["batch 2,3 failed", "batch 2,3 failed"]);
  await release();
  assert.equal(await after, "done 5");
  assert.deepEqual(batches, [[1], [2, 3], [5]]);
});

test("two runs at a time: a second request starts beside the first; the rest wait for either, together", async () => {
  const { together, batches, release } = gated(2);
  const first = together.run(1);
  const second = together.run(2);
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(batches, [[1], [2]], "the second did not wait for the first");
  const later = [together.run(3), together.run(4)];
  assert.deepEqual(batches, [[1], [2]], "no third run while two go");
  await release();
  assert.equal(await first, "done 1");
  while (batches.length < 3) await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(batches, [[1], [2], [3, 4]], "the first to finish makes room for all who waited");
  await release();
  await release();
  assert.equal(await second, "done 2");
  assert.deepEqual(await Promise.all(later), ["done 3", "done 4"]);
});
