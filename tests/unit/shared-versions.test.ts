/**
 * Load once (src/datapath/shared-versions.ts): the turns a burst of
 * namespaces takes on one version, so that each version is loaded once
 * and no two namespaces wait on each other. The pin root is an empty
 * folder of the test's: no namespace holds anything to share, so every
 * turn ends in a load, and nothing reaches the kernel.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { setImmediate } from "node:timers/promises";
import { isShareable, shareLoads } from "../../src/datapath/shared-versions.js";
import type { ProgramLoad } from "../../src/datapath/types.js";
import { PinLayout } from "../../src/kernel/pins.js";

let root: string;
const pins = (inode: number) => new PinLayout(`ns${inode}`, root);

function load(version: string, outbound = false): ProgramLoad {
  return {
    ref: { policy: "demo", version },
    contentHash: version.repeat(4),
    objectPath: "/nonexistent.o",
    hooks: ["ingress"],
    enabled: [true],
    prefixes: [],
    ...(outbound && { cgroupHooks: ["connect4" as const] }),
  };
}

/** Whether @promise has settled by the time the event loop has run what is ready. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  void promise.then(() => (done = true));
  await setImmediate();
  return done;
}

describe("load once: turns on a version", () => {
  before(async () => {
    root = await mkdtemp(path.join(tmpdir(), "intercept-share-"));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test("a version only tc programs use is shareable; one with cgroup programs is not", () => {
    assert.equal(isShareable(load("aaaa")), true);
    assert.equal(isShareable(load("aaaa", true)), false);
  });

  test("a namespace needing a version another is loading waits for that load, then looks again", async () => {
    const first = await shareLoads(pins(1), [load("aaaa")]);
    assert.deepEqual(
      first.toLoad.map((l) => l.ref.version),
      ["aaaa"],
    );
    const second = shareLoads(pins(2), [load("aaaa")]);
    assert.equal(await settled(second), false, "waits while the first loads");
    first.release();
    const turn = await second;
    assert.deepEqual(
      turn.toLoad.map((l) => l.ref.version),
      ["aaaa"],
      "nothing to share here: it loads",
    );
    turn.release();
  });

  test("other versions, and versions with cgroup programs, never wait", async () => {
    const first = await shareLoads(pins(1), [load("aaaa"), load("bbbb", true)]);
    const other = await shareLoads(pins(2), [load("cccc"), load("bbbb", true)]);
    assert.deepEqual(other.shared, []);
    assert.equal(other.toLoad.length, 2);
    first.release();
    other.release();
  });

  test("a namespace waits for every version it needs before taking any turn, so two never wait on each other", async () => {
    const holdsA = await shareLoads(pins(1), [load("aaaa")]);
    const holdsB = await shareLoads(pins(2), [load("bbbb")]);
    const needsBoth = shareLoads(pins(3), [load("aaaa"), load("bbbb")]);
    holdsA.release();
    assert.equal(await settled(needsBoth), false, "bbbb is still being loaded");
    const again = shareLoads(pins(4), [load("aaaa")]);
    assert.equal(await settled(again), true, "it took no turn on aaaa while it waited for bbbb");
    (await again).release();
    holdsB.release();
    (await needsBoth).release();
  });

  test("a turn is released once: releasing again does not end the next namespace's turn", async () => {
    const first = await shareLoads(pins(1), [load("dddd")]);
    first.release();
    const second = await shareLoads(pins(2), [load("dddd")]);
    first.release();
    const third = shareLoads(pins(3), [load("dddd")]);
    assert.equal(await settled(third), false, "the second's turn still holds");
    second.release();
    (await third).release();
  });
});
