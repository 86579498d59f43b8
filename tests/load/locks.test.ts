/**
 * The namespace lock under many takers: 1,000 applies across 100
 * namespaces, ten workers at a time, two racing for each namespace in the
 * first round (the unit suite runs a tenth of it).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { raceApplies } from "../support/lock-stress.js";

const scratch = await mkdtemp(path.join(tmpdir(), "intercept-lock-load-"));
after(() => rm(scratch, { recursive: true, force: true }));

test("1,000 applies across 100 namespaces, some racing for one: one holder at a time; lock files only for namespaces that keep pins", async () => {
  await raceApplies({ dir: path.join(scratch, "many"), namespaces: 100, workers: 10, rounds: 9 });
});
