/** globMatch: plain names compared, globs matched through an expression made once (issue 20). */
import assert from "node:assert/strict";
import { test } from "node:test";
import { globMatch } from "../../src/glob.js";

/** Each case: the glob, the name, and whether they match. */
type Case = readonly [glob: string, name: string, matches: boolean];

function assertCases(cases: readonly Case[]): void {
  for (const [glob, name, matches] of cases) assert.equal(globMatch(glob, name), matches, `${glob} ~ ${name}`);
}

test("a plain name matches itself only, whatever characters it holds", () => {
  assertCases([
    ["eth0", "eth0", true],
    ["eth0", "eth01", false],
    ["eth0", "xeth0", false],
    ["a.b", "a.b", true],
    ["a.b", "axb", false],
    ["v(1)+[x]", "v(1)+[x]", true],
    ["", "", true],
    ["", "eth0", false],
  ]);
});

test("* and ? match, the rest of a glob stands for itself, the same on every call", () => {
  const cases: Case[] = [
    ["eth*", "eth0", true],
    ["eth*", "eth", true],
    ["eth*", "veth0", false],
    ["v?th.*", "veth.12", true],
    ["v?th.*", "veth012", false],
    ["*", "anything", true],
    ["prod-?", "prod-a", true],
    ["prod-?", "prod-ab", false],
  ];
  for (let round = 0; round < 2; round++) assertCases(cases); // the second round is served by the made expressions
});
