/**
 * The agent's policy watcher on temporary folders, without root or a
 * kernel: every way an editor, a ConfigMap or a person replaces files and
 * folders is followed to the final content (compared by hash, never by
 * event), a file caught half-written is not reported, an unchanged hash
 * reconciles nothing, and the periodic resync applies an edit no event
 * told of. The watcher reads with the real loader and validator.
 */
import assert from "node:assert/strict";
import { link, mkdir, mkdtemp, open, rename, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { createLogger } from "../../src/agent/log.js";
import { fingerprintPolicies } from "../../src/agent/policy-fingerprint.js";
import { PolicyWatcher, type PolicyRead } from "../../src/agent/policy-watcher.js";
import { watchPoints } from "../../src/agent/watch-points.js";
import { PolicyError } from "../../src/errors.js";
import { validPolicies } from "../../src/reconcile/desired.js";
import type { ValidPolicy } from "../../src/validate/model.js";

const scratch = await mkdtemp(path.join(tmpdir(), "intercept-watcher-unit-"));
after(() => rm(scratch, { recursive: true, force: true }));

const POLICY = (port: number) => `interceptors:\n  - { port: ${port}, originalPort: 8000 }\n`;

/** A fresh folder under the scratch folder. */
const folder = (name: string) => mkdtemp(path.join(scratch, `${name}-`));

/** Waits for @condition, polling every 5 ms, failing after @ms. */
async function until(condition: () => boolean, what: () => string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    assert.ok(Date.now() < deadline, what());
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

interface Watched {
  watcher: PolicyWatcher<ValidPolicy[]>;
  /** The port of the first rule of each policy in force, by policy name. */
  ports: () => Record<string, number>;
  delivered: string[];
  invalid: PolicyError[];
  reads: PolicyRead[];
  resyncs: number;
  logged: string[];
  /** Waits until the policies in force have these first-rule ports. */
  until: (ports: Record<string, number>, ms?: number) => Promise<void>;
}

const watchers: PolicyWatcher<ValidPolicy[]>[] = [];
after(() => watchers.forEach((watcher) => watcher.stop()));

async function watch(paths: string[], options: { resyncMs?: number; settleMs?: number } = {}): Promise<Watched> {
  let inForce: ValidPolicy[] = [];
  const logged: string[] = [];
  const watched: Watched = {
    watcher: undefined!,
    ports: () => Object.fromEntries(inForce.map((policy) => [policy.name, (policy.rules[0] as { port: number }).port])),
    delivered: [],
    invalid: [],
    reads: [],
    resyncs: 0,
    logged,
    until: (ports, ms) =>
      until(
        () => JSON.stringify(watched.ports()) === JSON.stringify(ports),
        () =>
          `in force ${JSON.stringify(watched.ports())}, wanted ${JSON.stringify(ports)}; log: ${logged.join(" | ")}`,
        ms,
      ),
  };
  watched.watcher = new PolicyWatcher<ValidPolicy[]>(
    {
      paths,
      read: async (given) => (await validPolicies(given)).policies,
      log: createLogger("text", (line) => logged.push(line.trim())),
      debounceMs: 20,
      settleMs: options.settleMs ?? 300,
      resyncMs: options.resyncMs ?? 0,
      isEmpty: (policies) => policies.length === 0,
    },
    {
      valid: (policies, fingerprint) => {
        inForce = policies;
        watched.delivered.push(fingerprint);
      },
      invalid: (error) => watched.invalid.push(error),
      read: (read) => watched.reads.push(read),
      resynced: () => watched.resyncs++,
      fatal: (error) => logged.push(`fatal: ${String(error)}`),
    },
  );
  watchers.push(watched.watcher);
  inForce = await watched.watcher.start();
  return watched;
}

/** An editor's save: write a temporary file beside it, then rename it over the file. */
async function renameSave(file: string, text: string): Promise<void> {
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.${Math.random().toString(36).slice(2)}.swp`);
  await writeFile(temporary, text);
  await rename(temporary, file);
}

/** A ConfigMap volume as kubelet lays it out: `..<stamp>` folders, `..data` → one of them, and a.yaml → ..data/a.yaml. */
async function configMap(dir: string, versions: Record<string, number>, current: string): Promise<void> {
  for (const [version, port] of Object.entries(versions)) {
    await mkdir(path.join(dir, version), { recursive: true });
    await writeFile(path.join(dir, version, "a.yaml"), POLICY(port));
  }
  await symlink(current, path.join(dir, "..data"));
  await symlink(path.join("..data", "a.yaml"), path.join(dir, "a.yaml"));
}

/** Points `..data` at @version, an existing folder, as `ln -s V ..data_tmp; mv -T ..data_tmp ..data` does. */
async function swapData(dir: string, version: string): Promise<void> {
  await rm(path.join(dir, "..data_tmp"), { force: true });
  await symlink(version, path.join(dir, "..data_tmp"));
  await rename(path.join(dir, "..data_tmp"), path.join(dir, "..data"));
}

describe("what is watched", () => {
  test("a ConfigMap folder behind a symlink: the link's parents (for the way down), the folder, and the folder `..data` leads to", async () => {
    const parent = await folder("points");
    const real = path.join(parent, "configmap");
    await mkdir(real);
    await configMap(real, { "..v1": 9001, "..v2": 9002 }, "..v1");
    await mkdir(path.join(real, "nested"));
    const link = path.join(parent, "policies");
    await symlink("configmap", link);
    const points = new Map((await watchPoints([link])).map((point) => [point.folder, point.only && [...point.only]]));
    assert.deepEqual(
      points.get(parent)?.sort(),
      ["configmap", "policies"],
      "the parent hears only of the entries on the way down (the link's and its target's)",
    );
    assert.deepEqual(points.get(path.dirname(parent)), [path.basename(parent)]);
    assert.equal(points.get(real), undefined, "the folder hears everything");
    assert.ok(
      points.has(real) && points.has(path.join(real, "..v1")) && points.has(path.join(real, "nested")),
      JSON.stringify([...points.keys()]),
    );
    assert.ok(!points.has(path.join(real, "..v2")), "the version ..data does not lead to is not watched");
    await swapData(real, "..v2");
    const after = (await watchPoints([link])).map((point) => point.folder);
    assert.ok(
      after.includes(path.join(real, "..v2")) && !after.includes(path.join(real, "..v1")),
      JSON.stringify(after),
    );
  });
});

describe("the policy watcher follows content", () => {
  test("a rename-save, then an in-place write: both applied", async () => {
    const dir = await folder("rename-then-write");
    await writeFile(path.join(dir, "a.yaml"), POLICY(9000));
    const w = await watch([dir]);
    await renameSave(path.join(dir, "a.yaml"), POLICY(9001));
    await w.until({ a: 9001 });
    await writeFile(path.join(dir, "a.yaml"), POLICY(9002));
    await w.until({ a: 9002 });
    // Again without waiting in between: the last one wins.
    await renameSave(path.join(dir, "a.yaml"), POLICY(9003));
    await writeFile(path.join(dir, "a.yaml"), POLICY(9004));
    await w.until({ a: 9004 });
    assert.equal(w.invalid.length, 0);
  });

  test("two rename-saves 50 ms apart, and a burst of 100: the last one is in force", async () => {
    const dir = await folder("two-saves");
    const file = path.join(dir, "a.yaml");
    await writeFile(file, POLICY(9000));
    const w = await watch([dir]);
    await renameSave(file, POLICY(9001));
    await new Promise((resolve) => setTimeout(resolve, 50));
    await renameSave(file, POLICY(9002));
    await w.until({ a: 9002 });
    for (let i = 1; i <= 100; i++) await renameSave(file, POLICY(9100 + i));
    await w.until({ a: 9200 });
  });

  test("a policy folder given by a file path: a rename-save of the file itself", async () => {
    const dir = await folder("file-target");
    const file = path.join(dir, "a.yaml");
    await writeFile(file, POLICY(9000));
    const w = await watch([file]);
    await renameSave(file, POLICY(9001));
    await w.until({ a: 9001 });
    await writeFile(file, POLICY(9002));
    await w.until({ a: 9002 });
  });

  test("`..data` swapped between existing folders, again and again, and edited behind `..data`", async () => {
    const dir = await folder("configmap");
    await configMap(dir, { "..v1": 9001, "..v2": 9002 }, "..v1");
    const w = await watch([dir]);
    assert.deepEqual(w.ports(), { a: 9001 });
    for (let round = 0; round < 4; round++) {
      await swapData(dir, "..v2");
      await w.until({ a: 9002 });
      await swapData(dir, "..v1");
      await w.until({ a: 9001 });
    }
    // An in-place write to the file ..data leads to: the folder it is in is watched too.
    await writeFile(path.join(dir, "..v1", "a.yaml"), POLICY(9011));
    await w.until({ a: 9011 });
    await swapData(dir, "..v2");
    await writeFile(path.join(dir, "..v2", "a.yaml"), POLICY(9012));
    await w.until({ a: 9012 });
  });

  test("the folder removed and created again, twice: the next edits are applied", async () => {
    const parent = await folder("recreated");
    const dir = path.join(parent, "policies");
    await mkdir(dir);
    await writeFile(path.join(dir, "a.yaml"), POLICY(9000));
    const w = await watch([dir]);
    for (const port of [9001, 9002]) {
      await rm(dir, { recursive: true });
      await mkdir(dir);
      await writeFile(path.join(dir, "a.yaml"), POLICY(port));
      await w.until({ a: port });
      await writeFile(path.join(dir, "a.yaml"), POLICY(port + 10));
      await w.until({ a: port + 10 });
    }
  });

  test("a folder emptied for a moment is not put in force; emptied for good, it is, once settled", async () => {
    const parent = await folder("emptied");
    const dir = path.join(parent, "policies");
    await mkdir(dir);
    await writeFile(path.join(dir, "a.yaml"), POLICY(9000));
    const w = await watch([dir], { settleMs: 300 });
    await rm(dir, { recursive: true });
    await mkdir(dir);
    await until(
      () => w.reads.some((read) => read.outcome === "settling"),
      () => `the empty folder was read: ${JSON.stringify(w.reads)}`,
    );
    await writeFile(path.join(dir, "a.yaml"), POLICY(9001));
    await w.until({ a: 9001 });
    assert.equal(w.delivered.length, 1, "the empty set was never in force");
    await rm(path.join(dir, "a.yaml"));
    await w.until({});
    const emptiedAt = w.reads.find((read) => read.outcome === "settling" && read.fingerprint === w.delivered.at(-1));
    assert.ok(emptiedAt, "it settled first");
    assert.equal(w.invalid.length, 0);
  });

  test("the policy folder is a symlink, swapped for another folder: edits in the new one are applied", async () => {
    const parent = await folder("swapped");
    for (const [name, port] of [
      ["one", 9001],
      ["two", 9002],
    ] as const) {
      await mkdir(path.join(parent, name));
      await writeFile(path.join(parent, name, "a.yaml"), POLICY(port));
    }
    const dir = path.join(parent, "policies");
    await symlink("one", dir);
    const w = await watch([dir]);
    const swap = async (to: string) => {
      await symlink(to, `${dir}.tmp`);
      await rename(`${dir}.tmp`, dir);
    };
    await swap("two");
    await w.until({ a: 9002 });
    await writeFile(path.join(parent, "two", "a.yaml"), POLICY(9012));
    await w.until({ a: 9012 });
    await swap("one");
    await w.until({ a: 9001 });
    await writeFile(path.join(parent, "one", "a.yaml"), POLICY(9011));
    await w.until({ a: 9011 });
  });

  test("the folder a symlink leads to, elsewhere, removed and made again while empty for a while", async () => {
    const parent = await folder("elsewhere-link");
    const elsewhere = await folder("elsewhere-tree");
    const tree = path.join(elsewhere, "tree");
    await mkdir(tree);
    await writeFile(path.join(tree, "a.yaml"), POLICY(9000));
    const dir = path.join(parent, "policies");
    await symlink(tree, dir);
    const w = await watch([dir], { settleMs: 200 });
    await rm(tree, { recursive: true });
    await until(
      () => w.invalid.length === 1,
      () => "the missing folder is reported once settled",
    );
    await mkdir(tree);
    await writeFile(path.join(tree, "a.yaml"), POLICY(9001));
    await w.until({ a: 9001 });
    await writeFile(path.join(tree, "a.yaml"), POLICY(9002));
    await w.until({ a: 9002 });
  });

  test("a file caught half-written is read again, not reported; an error that stays is reported once", async () => {
    const dir = await folder("partial");
    const file = path.join(dir, "a.yaml");
    await writeFile(file, POLICY(9000));
    const w = await watch([dir], { settleMs: 300 });
    // Truncated, the rest written 100 ms later: read in between, it is empty (an error), yet nothing is reported.
    const handle = await open(file, "w");
    await until(
      () => w.reads.some((read) => read.outcome === "settling"),
      () => `reads: ${JSON.stringify(w.reads)}`,
    );
    await handle.writeFile(POLICY(9001));
    await handle.close();
    await w.until({ a: 9001 });
    // Half a line, then the rest.
    await writeFile(file, "interceptors:\n  - { port: 9002, orig");
    await until(
      () => w.reads.some((read) => read.outcome === "settling" && read.at > Date.now() - 100),
      () => "the half-written file was read",
    );
    await writeFile(file, POLICY(9002));
    await w.until({ a: 9002 });
    assert.equal(w.invalid.length, 0, "a file being written is not an error");

    const reads = w.reads.length;
    await writeFile(file, "interceptors:\n  - { port: 0, originalPort: 8000 }\n");
    await until(
      () => w.invalid.length === 1,
      () => "the invalid file is reported once it has settled",
    );
    assert.match(w.invalid[0]!.diagnostics[0]!.message, /port must be between 1 and 65535/);
    assert.equal(w.reads.at(-1)!.outcome, "invalid");
    assert.ok(
      w.reads.slice(reads).some((read) => read.outcome === "settling"),
      "settling before it was reported",
    );
    assert.deepEqual(w.ports(), { a: 9002 }, "the last good policies stay");
    await writeFile(file, "interceptors:\n  - { port: 0, originalPort: 8000 }\n"); // the same content again: not reported twice
    await new Promise((resolve) => setTimeout(resolve, 400));
    assert.equal(w.invalid.length, 1);
    await writeFile(file, POLICY(9003));
    await w.until({ a: 9003 });
    assert.equal(w.reads.at(-1)!.outcome, "valid");
  });

  test("an unchanged hash puts nothing in force: a rewrite of the same bytes, a touch, a file that is not a policy", async () => {
    const dir = await folder("unchanged");
    const file = path.join(dir, "a.yaml");
    await writeFile(file, POLICY(9000));
    const w = await watch([dir]);
    const reads = w.reads.length;
    await writeFile(file, POLICY(9000));
    await renameSave(file, POLICY(9000));
    await writeFile(path.join(dir, "notes.txt"), "not a policy");
    await until(
      () => w.reads.length > reads,
      () => "the events were followed by a read",
    );
    await w.watcher.idle();
    assert.deepEqual(w.delivered, [], "nothing new was put in force");
    assert.equal(w.reads.at(-1)!.fingerprint, await fingerprintPolicies([dir], undefined));
    // SIGHUP's reload puts the same policies in force again, on purpose.
    w.watcher.reload();
    await until(
      () => w.delivered.length === 1,
      () => "reload delivers",
    );
  });

  test("the periodic resync applies an edit that no event told of", async () => {
    const dir = await folder("resync");
    const elsewhere = await folder("elsewhere");
    const file = path.join(dir, "a.yaml");
    await writeFile(file, POLICY(9000));
    // A hard link in a folder nobody watches: a write through it changes the file, and no watched folder hears of it.
    await link(file, path.join(elsewhere, "a.yaml"));
    const unsynced = await watch([dir]);
    const resynced = await watch([dir], { resyncMs: 200 });
    const handle = await open(path.join(elsewhere, "a.yaml"), "r+");
    await handle.write(POLICY(9001), 0);
    await handle.close();
    await resynced.until({ a: 9001 }, 3_000);
    assert.deepEqual(unsynced.ports(), { a: 9000 }, "no event told the watcher without a resync");
    assert.ok(resynced.reads.length >= 2);
    // With nothing changed, a resync asks for the kernel to be checked anyway.
    await until(
      () => resynced.resyncs > 0,
      () => "a resync of unchanged files is reported",
    );
  });

  test("policies read from --objects: the objects folder is part of the hash", async () => {
    const dir = await folder("objects-policies");
    const objects = await folder("objects");
    await writeFile(path.join(dir, "a.yaml"), POLICY(9000));
    await writeFile(path.join(objects, "manifest.json"), "{}");
    const before = await fingerprintPolicies([dir], objects);
    assert.equal(await fingerprintPolicies([dir], objects), before, "stable");
    await writeFile(path.join(objects, "manifest.json"), '{"objects":[]}');
    assert.notEqual(await fingerprintPolicies([dir], objects), before);
    assert.notEqual(await fingerprintPolicies([dir], undefined), before);
  });
});
