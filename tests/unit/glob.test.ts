/** globMatch: plain names compared, globs matched through an expression made once (issue 20). */
import assert from "node:assert/strict";
import { test } from "node:test";
import { globMatch } from "../../src/glob.js";

test("a plain name matches itself only, whatever characters it holds", () => {
  assert.equal(globMatch("eth0", "eth0"), true);
  assert.equal(globMatch("eth0", "eth01"), false);
  assert.equal(globMatch("eth0", "xeth0"), false);
  assert.equal(globMatch("a.b", "a.b"), true);
  assert.equal(globMatch("a.b", "axb"), false);
  assert.equal(globMatch("v(1)+[x]", "v(1)+[x]"), true);
  assert.equal(globMatch("", ""), true);
  assert.equal(globMatch("", "eth0"), false);
});

test("* and ? match, the rest of a glob stands for itself, the same on every call", () => {
  for (let round = 0; round < 2; round++) {
    assert.equal(globMatch("eth*", "eth0"), true);
    assert.equal(globMatch("eth*", "eth"), true);
    assert.equal(globMatch("eth*", "veth0"), false);
    assert.equal(globMatch("v?th.*", "veth.12"), true);
    assert.equal(globMatch("v?th.*", "veth012"), false);
    assert.equal(globMatch("*", "anything"), true);
    assert.equal(globMatch("prod-?", "prod-a"), true);
    assert.equal(globMatch("prod-?", "prod-ab"), false);
  }
});
