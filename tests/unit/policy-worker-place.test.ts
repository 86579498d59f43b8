/**
 * How the policy worker says where it is (src/reconcile/policy-worker):
 * its clock gives each file, and each policy's validation, an allowance of
 * its own, paused while intercept loads its own parser or compiler; the
 * register carries where it is and until when, whole, between threads.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { StepClock } from "../../src/reconcile/policy-worker/clock.js";
import { monotonicMs, PlaceRegister, type PlaceState } from "../../src/reconcile/policy-worker/protocol.js";

test("each file's steps share one allowance from its first step; the next file, and validation, start their own", () => {
  const clock = new StepClock(100, { phase: "finding", index: -1 });
  assert.deepEqual(clock.step("finding", -1, 1_000).allowance, { running: true, until: 1_100 });
  assert.deepEqual(clock.step("reading", 0, 1_010).allowance, { running: true, until: 1_110 });
  assert.deepEqual(clock.step("evaluating", 0, 1_050).allowance, { running: true, until: 1_110 });
  assert.deepEqual(clock.step("reading", 1, 1_060).allowance, { running: true, until: 1_160 });
  assert.deepEqual(clock.step("validating", 1, 1_070).allowance, { running: true, until: 1_170 });
  assert.deepEqual(clock.step("validating", 0, 1_080), {
    phase: "validating",
    index: 0,
    allowance: { running: true, until: 1_180 },
  });
});

test("loading intercept's own parser pauses the file's allowance, which resumes with what was left", () => {
  const clock = new StepClock(100, { phase: "reading", index: 2 });
  assert.deepEqual(clock.step("reading", 2, 1_000).allowance, { running: true, until: 1_100 });
  assert.deepEqual(clock.step("loading the YAML parser for", 2, 1_030).allowance, { running: false, leftMs: 70 });
  // Seconds later (a busy machine), evaluation has the 70 ms the file had left.
  assert.deepEqual(clock.step("evaluating", 2, 5_000).allowance, { running: true, until: 5_070 });
});

test("a register read in another view of its memory gives what was written, whole", () => {
  const written: PlaceState = { phase: "type-checking", index: 7, allowance: { running: true, until: 0 } };
  const register = PlaceRegister.create({ phase: "finding", index: -1, allowance: { running: false, leftMs: 5_000 } });
  const other = PlaceRegister.attach(register.buffer);
  assert.deepEqual(other.read(), { phase: "finding", index: -1, allowance: { running: false, leftMs: 5_000 } });
  const until = Math.ceil(monotonicMs()) + 250;
  register.write({ ...written, allowance: { running: true, until } });
  assert.deepEqual(other.read(), { ...written, allowance: { running: true, until } });
  register.write({ phase: "validating", index: 3, allowance: { running: false, leftMs: 12.2 } });
  assert.deepEqual(other.read(), { phase: "validating", index: 3, allowance: { running: false, leftMs: 13 } });
});

test("an allowance too long for the register is kept as the longest it holds (weeks), never as none", () => {
  const register = PlaceRegister.create({ phase: "reading", index: 0, allowance: { running: false, leftMs: 1e15 } });
  const { allowance } = register.read();
  assert.equal(allowance.running, false);
  assert.ok(!allowance.running && allowance.leftMs > 20 * 24 * 3600 * 1000);
});
