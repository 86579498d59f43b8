/**
 * Many applies racing for namespace locks, on a directory of the caller's:
 * the unit suite runs a hundred of them, the load suite a thousand. Each
 * worker applies to its own namespaces round after round; in the first
 * round two applies race for each namespace.
 */
import assert from "node:assert/strict";
import { readdir } from "node:fs/promises";
import { lockNamespace } from "../../src/host/lock.js";

export interface LockStress {
  /** The lock directory: the caller's own, empty. */
  dir: string;
  namespaces: number;
  workers: number;
  rounds: number;
}

/** Runs the applies and checks one holder at a time, and lock files only for namespaces that keep pins. */
export async function raceApplies({ dir, namespaces, workers, rounds }: LockStress): Promise<void> {
  /** Half the namespaces keep pins (their lock file stays, reused), the other half end with none. */
  const keepsPins = (key: string) => Number(key.slice(2)) % 2 === 0;
  const holding = new Map<string, number>();
  let most = 0;
  let taken = 0;
  /** One apply: take the lock (racing another taker of the same namespace), hold it a moment, release. */
  const applyOnce = async (key: string) => {
    const lock = await lockNamespace(key, { holder: "intercept apply", timeoutMs: 30_000, dir });
    const now = (holding.get(key) ?? 0) + 1;
    holding.set(key, now);
    assert.equal(now, 1, `${key}: one holder at a time`);
    await new Promise((resolve) => setImmediate(resolve));
    holding.set(key, now - 1);
    taken++;
    await lock.release({ keepRecord: keepsPins(key) });
  };
  const keys = Array.from({ length: namespaces }, (_, index) => `ns${1000 + index}`);
  const perWorker = Math.ceil(namespaces / workers);
  const worker = async (slice: string[]) => {
    for (let round = 0; round < rounds; round++) {
      for (const key of slice) {
        await (round === 0 ? Promise.all([applyOnce(key), applyOnce(key)]) : applyOnce(key));
        most = Math.max(most, (await readdir(dir)).length);
      }
    }
  };
  await Promise.all(
    Array.from({ length: workers }, (_, index) => worker(keys.slice(index * perWorker, (index + 1) * perWorker))),
  );
  assert.equal(taken, namespaces * (rounds + 1));
  const kept = keys.filter(keepsPins);
  assert.deepEqual(
    (await readdir(dir)).sort(),
    kept.map((key) => `${key}.lock`).sort(),
    "one file per namespace that keeps pins, none for the others",
  );
  assert.ok(
    most <= kept.length + workers,
    `never more files than namespaces with pins and those being worked on (at most ${most})`,
  );
  for (const key of kept)
    await (await lockNamespace(key, { holder: "intercept destroy", timeoutMs: 0, dir })).release();
  assert.deepEqual(await readdir(dir), [], "a destroy of each leaves none");
}
