/**
 * A SourceMap packed for another thread (the policy worker's reads) and
 * unpacked there is the map it was; and the YAML loader's schema, made
 * once for plain documents, leaves a %YAML 1.1 document and a tagged one
 * read as before (issue 20: many policy files, read per file).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { loadPolicySource } from "../../src/load/index.js";
import { SourceMap, SourceText } from "../../src/load/source-map.js";
import { loadYamlPolicy } from "../../src/load/yaml.js";
import { fromData, toData } from "../../src/reconcile/policy-worker/protocol.js";

const TEXT = "name: web\ninterfaces: { include: [eth0] }\ninterceptors:\n  - { originalPort: 8000, port: 9000 }\n";

test("a source map packed and unpacked holds the same places, keys and all", () => {
  const { sourceMap } = loadYamlPolicy(new SourceText("web.yaml", TEXT));
  const packed = sourceMap.pack();
  const structured = structuredClone(packed);
  const unpacked = SourceMap.unpack(new SourceText("web.yaml", TEXT), structured);
  assert.deepEqual(unpacked.toEntries(), sourceMap.toEntries());
  // Some entries have a key (properties), the root and list items do not.
  assert.ok(sourceMap.get("/interceptors/0/port")?.key);
  assert.equal(sourceMap.get("/interceptors/0")?.key, undefined);
  assert.deepEqual(unpacked.locate("/interceptors/0/port", "key"), sourceMap.locate("/interceptors/0/port", "key"));
  assert.deepEqual(unpacked.span("/interceptors/0/nothing"), sourceMap.span("/interceptors/0/nothing"));
});

test("an unpacked source map takes new places, and packs again as it holds them", () => {
  const { sourceMap } = loadYamlPolicy(new SourceText("web.yaml", TEXT));
  const unpacked = SourceMap.unpack(sourceMap.source, structuredClone(sourceMap.pack()));
  const added = { value: { line: 9, column: 1, length: 2 } };
  unpacked.set("/added", added);
  assert.deepEqual(unpacked.get("/added"), added);
  const again = SourceMap.unpack(sourceMap.source, structuredClone(unpacked.pack()));
  assert.deepEqual(again.toEntries(), [...sourceMap.toEntries(), ["/added", added]]);
});

test("a policy crosses to the main thread as it was loaded", async () => {
  const [policy] = (await loadPolicySource("web.yaml", TEXT)).policies;
  const crossed = fromData(structuredClone(toData(policy!)));
  assert.deepEqual({ ...crossed, sourceMap: undefined }, { ...policy!, sourceMap: undefined });
  assert.deepEqual(crossed.sourceMap.toEntries(), policy!.sourceMap.toEntries());
  assert.equal(crossed.sourceMap.source.text, TEXT);
});

test("a %YAML 1.1 document is still read with the 1.1 schema, and a tagged value as tagged", () => {
  const yaml11 = loadYamlPolicy(new SourceText("a.yaml", "%YAML 1.1\n---\nenabled: yes\nport: 0x10\n"));
  assert.deepEqual(yaml11.diagnostics, []);
  assert.deepEqual(yaml11.value, { enabled: true, port: 16 });
  const core = loadYamlPolicy(new SourceText("b.yaml", "enabled: yes\nport: 0x10\n"));
  assert.deepEqual(core.value, { enabled: "yes", port: 16 });
  const tagged = loadYamlPolicy(new SourceText("c.yaml", "port: !!str 8000\nset: !!set { a, b }\n"));
  assert.deepEqual(tagged.diagnostics, []);
  assert.deepEqual(tagged.value, { port: "8000", set: new Set(["a", "b"]) });
  // The document after a tagged one is read with the core schema, untouched by the tags.
  const after = loadYamlPolicy(new SourceText("d.yaml", "port: 8000\nenabled: yes\n"));
  assert.deepEqual(after.value, { port: 8000, enabled: "yes" });
});
