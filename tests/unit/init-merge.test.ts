/** What `intercept init` adds to a user's .gitignore and package.json, and what it leaves exactly as it was. */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  appendGitignore,
  GITIGNORE_HEADER,
  mergePackageJson,
  missingGitignoreEntries,
  newGitignore,
  newPackageJson,
} from "../../src/commands/init-merge.js";

const NEEDED = { "intercept-bpf": "^0.1.0", typescript: "^7.0.2" };

test(".gitignore: entries already there count with or without slashes; generated/ is never ignored", () => {
  assert.deepEqual(missingGitignoreEntries("/node_modules\nbuild\n  objects/  \n# *.plan\n"), [
    "*.plan",
    "plan.json",
    "plan.txt",
  ]);
  assert.deepEqual(missingGitignoreEntries(newGitignore()), []);
  assert.doesNotMatch(newGitignore(), /^\/?generated/m);
});

test(".gitignore: appended after the user's last line, which may lack its newline; nothing appended when nothing is missing", () => {
  assert.equal(appendGitignore(".env", ["objects/"]), `.env\n\n${GITIGNORE_HEADER}\nobjects/\n`);
  assert.equal(appendGitignore(".env\n", ["objects/", "*.plan"]), `.env\n\n${GITIGNORE_HEADER}\nobjects/\n*.plan\n`);
  assert.equal(appendGitignore("", ["objects/"]), `${GITIGNORE_HEADER}\nobjects/\n`);
  assert.equal(appendGitignore(".env", []), ".env");
});

test("package.json: the missing packages go to devDependencies; key order, indentation and final newline are the user's", () => {
  const tabs =
    '{\n\t"name": "edge",\n\t"dependencies": {\n\t\t"intercept-bpf": "^0.1.0"\n\t},\n\t"devDependencies": {\n\t\t"eslint": "^9.0.0"\n\t},\n\t"private": true\n}';
  const merged = mergePackageJson(tabs, "package.json", NEEDED);
  assert.deepEqual(merged.added, ["typescript@^7.0.2"]);
  assert.equal(
    merged.text,
    '{\n\t"name": "edge",\n\t"dependencies": {\n\t\t"intercept-bpf": "^0.1.0"\n\t},\n\t"devDependencies": {\n\t\t"eslint": "^9.0.0",\n\t\t"typescript": "^7.0.2"\n\t},\n\t"private": true\n}',
  );
});

test("package.json: a package listed anywhere (even at another range) is left alone; then the text is returned unchanged", () => {
  const text =
    '{ "dependencies": { "typescript": "5.4.0" }, "devDependencies": { "intercept-bpf": "file:../x.tgz" } }\n';
  assert.deepEqual(mergePackageJson(text, "package.json", NEEDED), { text, added: [] });
});

test("package.json: not JSON, or not an object, is an error naming the file, never overwritten", () => {
  assert.throws(
    () => mergePackageJson("{ nope", "repo/package.json", NEEDED),
    (error: Error & { code?: string }) =>
      error.code === "file-access" && /^repo\/package\.json: not valid JSON/.test(error.message),
  );
  assert.throws(() => mergePackageJson("[]", "package.json", NEEDED), /not a JSON object/);
});

test("a new package.json is private, named after the folder as npm allows, with both packages as devDependencies", () => {
  assert.deepEqual(JSON.parse(newPackageJson("My Policies", NEEDED)), {
    name: "my-policies",
    version: "0.0.0",
    private: true,
    devDependencies: NEEDED,
  });
});
