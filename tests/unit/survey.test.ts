/**
 * The links survey (src/kernel/survey.ts) read from what one `ip -batch`
 * printed for many namespaces: links and filter qdiscs per namespace, and
 * nothing claimed when a namespace's lines are missing.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { readSurveys } from "../../src/kernel/survey.js";

const links = (...names: string[]) =>
  JSON.stringify([
    { ifindex: 1, ifname: "lo", flags: ["LOOPBACK"], link_type: "loopback" },
    ...names.map((ifname, index) => ({ ifindex: index + 2, ifname, flags: ["BROADCAST"], link_type: "ether" })),
  ]);

test("each namespace's links, and only links with clsact or ingress as filter holders", () => {
  const qdiscs = JSON.stringify([
    { kind: "noqueue", handle: "0:", dev: "a", root: true },
    { kind: "clsact", handle: "ffff:", dev: "a", parent: "ffff:fff1" },
    { kind: "ingress", handle: "ffff:", dev: "c", parent: "ffff:fff1" },
  ]);
  const [first, second] = readSurveys(2, `${links("a", "b", "c")}\n${qdiscs}\n${links("a", "b")}\n[]\n`);
  assert.deepEqual(
    first?.links.map((link) => [link.ifindex, link.name, link.loopback, link.linkType]),
    [
      [1, "lo", true, "loopback"],
      [2, "a", false, "ether"],
      [3, "b", false, "ether"],
      [4, "c", false, "ether"],
    ],
  );
  assert.deepEqual([...first!.filterHolders].sort(), ["a", "c"], "a root qdisc holds no ingress or egress filter");
  assert.deepEqual(
    second?.links.map((link) => link.name),
    ["lo", "a", "b"],
  );
  assert.equal(second?.filterHolders.size, 0, "a new namespace: no filter anywhere, none to ask tc for");
});

test("a namespace that printed nothing (gone before it was entered): none of the batch is claimed", () => {
  assert.deepEqual(readSurveys(2, `${links("a")}\n[]\n[]\n`), [undefined, undefined]);
  assert.deepEqual(readSurveys(1, `${links("a")}\nCannot open network namespace\n`), [undefined]);
});
