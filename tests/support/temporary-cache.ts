/**
 * Imported first by tests that read TS policies: the policy cache (and any
 * CLI the test starts, which inherits the environment) uses a temporary
 * directory, removed when the test process exits, never the user's ~/.cache.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

export const TEST_CACHE_DIR = mkdtempSync(path.join(tmpdir(), "intercept-test-cache-"));
process.env.INTERCEPT_CACHE_DIR = TEST_CACHE_DIR;
process.on("exit", () => rmSync(TEST_CACHE_DIR, { recursive: true, force: true }));
