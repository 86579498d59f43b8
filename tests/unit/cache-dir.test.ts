/** Where caches live: the user's cache directory, never the checkout, and only a private one. */
import assert from "node:assert/strict";
import { chmod, chown, mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, beforeEach, test } from "node:test";
import { cacheDir } from "../../src/cache-dir.js";

const scratch = await mkdtemp(path.join(tmpdir(), "intercept-cache-dir-"));
const VARIABLES = ["HOME", "TMPDIR", "INTERCEPT_CACHE_DIR", "XDG_CACHE_HOME"] as const;
const saved = Object.fromEntries(VARIABLES.map((name) => [name, process.env[name]]));
after(async () => {
  for (const name of VARIABLES) {
    if (saved[name] === undefined) delete process.env[name];
    else process.env[name] = saved[name];
  }
  await rm(scratch, { recursive: true, force: true });
});

let round = 0;
let fallbackRoot: string;
beforeEach(async () => {
  // Each test gets its own HOME and TMPDIR (os.homedir and os.tmpdir read them on every call).
  const home = path.join(scratch, `home-${++round}`);
  fallbackRoot = path.join(scratch, `tmp-${round}`);
  await mkdir(home);
  await mkdir(fallbackRoot);
  // process.env is assigned key by key: os.homedir and os.tmpdir read the real environment.
  process.env.HOME = home;
  process.env.TMPDIR = fallbackRoot;
  delete process.env.INTERCEPT_CACHE_DIR;
  delete process.env.XDG_CACHE_HOME;
});

const fallback = (...parts: string[]) => path.join(fallbackRoot, `intercept-cache-${process.getuid!()}`, ...parts);

test("INTERCEPT_CACHE_DIR first, then $XDG_CACHE_HOME/intercept, then ~/.cache/intercept; made private", async () => {
  assert.equal(await cacheDir("policies"), path.join(process.env.HOME!, ".cache", "intercept", "policies"));
  process.env.XDG_CACHE_HOME = "relative/is/ignored";
  assert.equal(await cacheDir("policies"), path.join(process.env.HOME!, ".cache", "intercept", "policies"));
  process.env.XDG_CACHE_HOME = path.join(scratch, `xdg-${round}`);
  assert.equal(await cacheDir("policies"), path.join(process.env.XDG_CACHE_HOME, "intercept", "policies"));
  process.env.INTERCEPT_CACHE_DIR = path.join(scratch, `explicit-${round}`);
  const dir = await cacheDir("policies");
  assert.equal(dir, path.join(process.env.INTERCEPT_CACHE_DIR, "policies"));
  assert.equal((await stat(dir!)).mode & 0o777, 0o700);
});

test("a place that cannot be a directory, or that others can write to, gives way to <tmpdir>/intercept-cache-<uid>", async () => {
  process.env.INTERCEPT_CACHE_DIR = path.join(scratch, `a-file-${round}`);
  await writeFile(process.env.INTERCEPT_CACHE_DIR, "not a directory\n");
  assert.equal(await cacheDir("policies"), fallback("policies"));

  process.env.INTERCEPT_CACHE_DIR = path.join(scratch, `shared-${round}`);
  await mkdir(process.env.INTERCEPT_CACHE_DIR, { mode: 0o777 });
  await chmod(process.env.INTERCEPT_CACHE_DIR, 0o777);
  assert.equal(await cacheDir("policies"), fallback("policies"));
});

test("a fallback made first by someone else is not used: no cache at all rather than a planted one", {
  skip: process.getuid?.() !== 0 && "needs root to make a directory owned by another user",
}, async () => {
  process.env.INTERCEPT_CACHE_DIR = path.join(scratch, `foreign-${round}`);
  await mkdir(process.env.INTERCEPT_CACHE_DIR);
  await chown(process.env.INTERCEPT_CACHE_DIR, 65534, 65534);
  await mkdir(fallback(), { mode: 0o700 });
  await chown(fallback(), 65534, 65534);
  assert.equal(await cacheDir("policies"), undefined);
});
