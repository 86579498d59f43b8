/**
 * Keeps every cache intercept writes during the tests (the TS policy cache,
 * clang's objects and version) in one temporary directory, never the
 * user's ~/.cache: `npm test` preloads this module in the test runner
 * (`--import`), whose test files and the CLIs they start inherit the
 * environment; the runner removes the directory when it exits. A test file
 * run on its own gets a directory of its own.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const inherited = process.env.INTERCEPT_CACHE_DIR;
export const TEST_CACHE_DIR = inherited ?? mkdtempSync(path.join(tmpdir(), "intercept-test-cache-"));
if (!inherited) {
  process.env.INTERCEPT_CACHE_DIR = TEST_CACHE_DIR;
  process.on("exit", () => rmSync(TEST_CACHE_DIR, { recursive: true, force: true }));
}
