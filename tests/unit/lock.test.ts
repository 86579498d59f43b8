/**
 * The namespace lock, through its API on a directory of the test's own: one
 * holder at a time, lock files removed on release (the unlink-race
 * protocol keeps that safe), agents recognised from the holder record, and
 * the CLI's bounds on --lock-timeout.
 */
import assert from "node:assert/strict";
import { execa } from "execa";
import { mkdtemp, readdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { intercept } from "../../lab/network.js";
import { raceApplies } from "../support/lock-stress.js";
import { AGENT_LOCK_HOLDER, FLEET_LOCK_HOLDER, isAgentHolder } from "../../src/model/lock-holder.js";
import { flockTaker, lockNamespace, type LockHolder } from "../../src/host/lock.js";

const scratch = await mkdtemp(path.join(tmpdir(), "intercept-lock-"));
after(() => rm(scratch, { recursive: true, force: true }));

test("100 applies across 20 namespaces, some racing for one: one holder at a time; lock files only for namespaces that keep pins", async () => {
  // The load suite runs the same a thousand times over (tests/load/locks.test.ts).
  await raceApplies({ dir: path.join(scratch, "many"), namespaces: 20, workers: 4, rounds: 4 });
});

test("a lock file left by a killed holder is taken over and removed on release; --keep's record stays", async () => {
  const dir = path.join(scratch, "left");
  const lock = await lockNamespace("ns7", { holder: "intercept apply", timeoutMs: 0, dir });
  await lock.release({ keepRecord: true });
  assert.equal(
    JSON.parse(await readFile(path.join(dir, "ns7.lock"), "utf8")).holder,
    "intercept apply",
    "kept with its holder's record",
  );
  await writeFile(path.join(dir, "ns8.lock"), JSON.stringify({ pid: 1, holder: "intercept apply" })); // its holder was killed
  await (await lockNamespace("ns8", { holder: "intercept apply", timeoutMs: 0, dir })).release();
  await (await lockNamespace("ns7", { holder: "intercept apply", timeoutMs: 0, dir })).release();
  assert.deepEqual(await readdir(dir), []);
});

/** Resolves once a child of ours runs `flock --exclusive --wait` (a bound, not a guess: it fails after 10 s). */
async function waitingFlock(): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const listed = await execa("pgrep", ["-P", String(process.pid), "-f", "^flock --exclusive --wait"], {
      reject: false,
    });
    if (String(listed.stdout).trim()) return;
    assert.ok(Date.now() < deadline, "a flock(1) waiting for the lock");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

test("a taker waiting while the holder releases gets the lock on the file at the path, not on the removed one", async () => {
  const dir = path.join(scratch, "race");
  const first = await lockNamespace("ns9", { holder: "intercept apply", timeoutMs: 0, dir });
  const waits: string[] = [];
  let told!: () => void;
  const waiting = new Promise<void>((resolve) => (told = resolve));
  const second = lockNamespace("ns9", {
    holder: "intercept destroy",
    timeoutMs: 10_000,
    dir,
    onWait: (heldBy) => {
      waits.push(heldBy.description);
      told();
    },
  });
  // Barriers, not a sleep: the second has opened the file and was told it is busy, and its flock(1) waits.
  await waiting;
  await waitingFlock();
  await first.release();
  const held = await second;
  const third: LockHolder[] = [];
  await assert.rejects(
    lockNamespace("ns9", { holder: "intercept apply", timeoutMs: 0, dir, onWait: (heldBy) => third.push(heldBy) }),
    { code: "lock-held" },
  );
  assert.equal(third[0]?.holder, "intercept destroy", "a third taker finds the second holding the file at the path");
  assert.deepEqual(waits, [`pid ${process.pid} (intercept apply)`]);
  await held.release();
  assert.deepEqual(await readdir(dir), []);
});

test("agents are recognised from the lock's holder record, in one place", async () => {
  assert.equal(isAgentHolder(AGENT_LOCK_HOLDER), true);
  assert.equal(isAgentHolder(FLEET_LOCK_HOLDER), true);
  for (const other of ["intercept apply", "intercept destroy", undefined])
    assert.equal(isAgentHolder(other), false, String(other));
  const dir = path.join(scratch, "agent");
  const agent = await lockNamespace("ns10", { holder: AGENT_LOCK_HOLDER, timeoutMs: 0, dir });
  const seen: LockHolder[] = [];
  await assert.rejects(
    lockNamespace("ns10", { holder: "intercept apply", timeoutMs: 0, dir, onWait: (heldBy) => seen.push(heldBy) }),
    { code: "lock-held" },
  );
  assert.deepEqual(seen, [
    { pid: process.pid, holder: AGENT_LOCK_HOLDER, agent: true, description: `pid ${process.pid} (intercept agent)` },
  ]);
  await agent.release();
});

test("the holder named is the kernel's taker when the file's record is another's: a taker not yet written is never called the agent before it", async () => {
  const dir = path.join(scratch, "taker");
  const held = await lockNamespace("ns11", { holder: "intercept apply", timeoutMs: 0, dir });
  // As between a taker's lock and its record: the file still names the last writer, an agent since exited.
  const child = execa("true");
  await child;
  const exited = child.pid;
  const record = (pidNamespace: string) => JSON.stringify({ pid: exited, holder: AGENT_LOCK_HOLDER, pidNamespace });
  const seen: LockHolder[] = [];
  const take = () =>
    lockNamespace("ns11", { holder: "intercept apply", timeoutMs: 0, dir, onWait: (heldBy) => seen.push(heldBy) });
  await writeFile(path.join(dir, "ns11.lock"), record(await readlink("/proc/self/ns/pid")));
  await assert.rejects(take(), { code: "lock-held", message: new RegExp(`locked by pid ${process.pid} \\(`) });
  assert.equal(seen[0]?.pid, process.pid, "the kernel's taker: this process");
  assert.equal(seen[0]?.agent, false, "not the agent the stale record names");
  // Written in another pid namespace (an agent in a pod), its pid is not one of ours to check: the record stands.
  await writeFile(path.join(dir, "ns11.lock"), record("pid:[1]"));
  await assert.rejects(take(), { code: "lock-held" });
  assert.deepEqual(seen[1], {
    pid: exited,
    holder: AGENT_LOCK_HOLDER,
    agent: true,
    description: `pid ${exited} (${AGENT_LOCK_HOLDER})`,
  });
  await held.release();
});

test("/proc/locks: the taker of a FLOCK on one file (device and inode), not a waiter's, not another file's", () => {
  const locks = [
    "1: POSIX  ADVISORY  WRITE 700 00:1a:42 0 EOF",
    "2: FLOCK  ADVISORY  WRITE 701 fe:00:42 0 EOF",
    "3: FLOCK  ADVISORY  WRITE 702 00:1a:42 0 EOF",
    "3: -> FLOCK  ADVISORY  WRITE 703 00:1a:42 0 EOF",
  ].join("\n");
  assert.equal(flockTaker(locks, { major: 0, minor: 0x1a, inode: 42 }), 702);
  assert.equal(flockTaker(locks, { major: 0xfe, minor: 0, inode: 42 }), 701);
  assert.equal(flockTaker(locks, { major: 0, minor: 0x1a, inode: 43 }), undefined);
});

test("--lock-timeout: at most an hour, refused above it as a usage error before anything runs", async () => {
  for (const command of ["apply", "destroy", "agent"]) {
    const refused = await intercept(
      command,
      "--lock-timeout",
      "99999999999s",
      "--netns",
      "intercept-no-such-namespace",
    );
    assert.notEqual(refused.exitCode, 0);
    assert.equal(
      refused.stderr.split("\n")[0],
      'intercept: --lock-timeout: at most 60m (1 hour), not "99999999999s"',
      command,
    );
  }
  const hour = await intercept(
    "destroy",
    "--lock-timeout",
    "60m",
    "--wait-for-agent",
    "--netns",
    "intercept-no-such-namespace",
    "--yes",
  );
  assert.doesNotMatch(hour.stderr, /--lock-timeout/, "an hour is accepted");
});
