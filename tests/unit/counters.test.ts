/**
 * The rule_counters layout is described twice — enum counter_slot in the C
 * (templates/bpf/lib/maps.h) and COUNTER_SLOTS in src/model/counters.ts,
 * which the readers import — and the two must say the same.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { compilePolicies } from "../../src/compile/index.js";
import {
  COUNTER_ENTRIES_BUDGET,
  COUNTER_SLOTS,
  counterKey,
  counterSlotConstant,
  LOADER_BLOCK,
  namespaceCapacity,
} from "../../src/model/counters.js";
import { NAMESPACE_SLOTS } from "../../src/model/namespace-slot.js";
import { TEMPLATE_DIR } from "../../src/compile/render.js";
import { loadPolicies } from "../../src/load/index.js";
import { validatePolicies } from "../../src/validate/index.js";
import { testPolicy } from "../support/bpf.js";

/** The enumerators of `enum counter_slot { … }` in @source, by name. */
function counterSlotsInC(source: string): Map<string, number> {
  const body = /enum counter_slot \{([^}]*)\}/.exec(source)?.[1];
  assert.ok(body, "enum counter_slot is defined");
  return new Map(
    [...body.matchAll(/^\s*(COUNTER_\w+)\s*=\s*(\d+),/gm)].map(([, name, value]) => [name!, Number(value)]),
  );
}

test("the C's counter slots are the TypeScript's, in the same order", async () => {
  const inC = counterSlotsInC(await readFile(path.join(TEMPLATE_DIR, "lib/maps.h"), "utf8"));
  const expected = new Map<string, number>(COUNTER_SLOTS.map((slot, index) => [counterSlotConstant(slot), index]));
  expected.set("COUNTER_SLOTS", COUNTER_SLOTS.length);
  assert.deepEqual(inC, expected);
});

test("the generated C keys counters as counterKey does, and sizes the map for every namespace slot", () => {
  const [compiled] = compilePolicies([testPolicy("counters", [{ originalPort: 8000, port: 9000 }])]);
  assert.deepEqual(counterSlotsInC(compiled!.source).get("COUNTER_SLOTS"), COUNTER_SLOTS.length);
  assert.match(compiled!.source, /__u32 key = \(ns_slot \* RULE_COUNT \+ rule\) \* COUNTER_SLOTS \+ counter;/);
  assert.match(compiled!.source, /__uint\(max_entries, COUNTER_NAMESPACES \* RULE_COUNT \* COUNTER_SLOTS\);/);
  assert.match(compiled!.source, new RegExp(`#define COUNTER_NAMESPACES ${namespaceCapacity(1)} `));
  assert.equal(counterKey(0, "rewrittenIngress"), 0);
  assert.equal(counterKey(3, "proxyDown"), 3 * COUNTER_SLOTS.length + 3);
  assert.equal(counterKey(3, "proxyDown", LOADER_BLOCK), counterKey(3, "proxyDown"), "slot 0: the keys of old");
  assert.equal(
    counterKey(3, "proxyDown", { namespaceSlot: 5, rules: 4 }),
    (5 * 4 + 3) * COUNTER_SLOTS.length + 3,
    "a namespace slot's block follows the slots before it",
  );
});

test("an object with cgroup programs only keeps the loader's slot alone, keyed the same way", async () => {
  const { policies, diagnostics } = validatePolicies(
    (await loadPolicies(["tests/golden/compile/outbound_plain.yaml"])).policies,
  );
  assert.deepEqual(diagnostics, []);
  const [compiled] = compilePolicies(policies);
  assert.deepEqual(compiled!.hooks, [], "no tc program");
  assert.match(compiled!.source, /#define COUNTER_NAMESPACES 1 /);
  assert.match(compiled!.source, /count_packet\(LOADER_SLOT, match->rule, COUNTER_REDIRECTED, 0\);/);
});

test("a program keeps as many namespaces apart as its counters' budget allows: all 128 for a few rules, one for many", () => {
  assert.equal(namespaceCapacity(1), NAMESPACE_SLOTS);
  assert.equal(namespaceCapacity(73), NAMESPACE_SLOTS, "73 rules × 7 counters × 128 slots fit");
  assert.equal(namespaceCapacity(100), 93);
  assert.equal(namespaceCapacity(1_000), 9);
  assert.equal(namespaceCapacity(10_000), 1, "its loader's alone: it is never shared");
  for (const rules of [1, 50, 100, 1_000, 5_000, 10_000])
    assert.ok(
      namespaceCapacity(rules) === 1 ||
        namespaceCapacity(rules) * rules * COUNTER_SLOTS.length <= COUNTER_ENTRIES_BUDGET,
      `${rules} rules stay within the budget`,
    );
});
