import { isDeepStrictEqual } from "node:util";
import type { ObservedProgram, ObservedState } from "../datapath/types.js";
import { displayLine } from "../diagnostics.js";
import type { Hook } from "../model/hooks.js";

/**
 * What a plan was computed from: the observed state, whole, except what
 * the plan does not depend on. A saved plan carries it (Terraform's
 * PriorState); apply observes again and refuses when anything moved,
 * naming what. Being the state minus a named few fields, a field added to
 * ObservedState is compared without anyone remembering to add it here.
 */
export type ObservedSnapshot = Omit<ObservedState, SnapshotExcluded>;

/**
 * Left out, and why: `netns` is checked on its own (namespaceKey, kept,
 * is its identity); `listeners` only feed warnings, and a proxy that
 * restarts between plan and apply changes nothing the plan does.
 */
type SnapshotExcluded = "netns" | "listeners";

/** @observed as a saved plan stores it: plain data, its lists in a stable order. */
export function observedSnapshot(observed: ObservedState): ObservedSnapshot {
  const { netns: _netns, listeners: _listeners, ...kept } = observed;
  return {
    ...kept,
    links: [...kept.links].sort((a, b) => a.ifindex - b.ifindex),
    programs: [...kept.programs].sort((a, b) => programLabel(a).localeCompare(programLabel(b))),
    ownedQdiscs: [...kept.ownedQdiscs].sort((a, b) => a - b),
    emptyPins: [...kept.emptyPins].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))),
    cgroups: [...kept.cgroups].sort((a, b) => a.path.localeCompare(b.path)),
  };
}

/** How many differences a refusal lists before it only counts the rest. */
const MAX_LISTED = 3;

/**
 * What moved between @expected (a saved plan's snapshot) and @now, in
 * words, at most MAX_LISTED items and a count; empty when nothing did.
 * Every name and value is made printable: @expected comes from a file.
 */
export function snapshotDifferences(expected: ObservedSnapshot, now: ObservedSnapshot): string[] {
  const all = differences(expected, now);
  if (all.length <= MAX_LISTED) return all;
  return [...all.slice(0, MAX_LISTED), `and ${all.length - MAX_LISTED} more`];
}

function differences(expected: ObservedSnapshot, now: ObservedSnapshot): string[] {
  const found: string[] = [];
  const fields = new Set([...Object.keys(expected), ...Object.keys(now)]) as Set<keyof ObservedSnapshot>;
  for (const field of fields) {
    const before: unknown = expected[field];
    const after: unknown = now[field];
    if (isDeepStrictEqual(before, after)) continue;
    const keyed = KEYED_LISTS[field as keyof typeof KEYED_LISTS];
    if (keyed && Array.isArray(before) && Array.isArray(after)) {
      found.push(...listDifferences(keyed, before, after, { expected, now }));
    } else {
      found.push(`${FIELD_NAMES[field] ?? printable(field)} now ${shown(after)}, the plan expected ${shown(before)}`);
    }
  }
  return found;
}

/** Top-level fields by what they mean to a reader. */
const FIELD_NAMES: Partial<Record<string, string>> = {
  namespaceKey: "the namespace",
  ownedQdiscs: "the qdiscs intercept made (by ifindex)",
  emptyPins: "empty pins",
  cgroupRoot: "the cgroup2 mount",
};

interface Snapshots {
  expected: ObservedSnapshot;
  now: ObservedSnapshot;
}

/** A list whose items have an identity: told apart by label, compared field by field. */
interface KeyedList {
  label(item: never): string;
  /** A field whose difference reads better than "FIELD now X, the plan expected Y". */
  describe?: Partial<Record<string, (before: never, after: never, snapshots: Snapshots) => string[]>>;
}

const KEYED_LISTS: Partial<Record<keyof ObservedSnapshot, KeyedList>> = {
  links: {
    label: (link: { name: string }) => `link ${printable(link.name)}`,
    describe: { filters: filterDifferences },
  },
  programs: { label: programLabel },
  cgroups: { label: (cgroup: { path: string }) => `cgroup ${printable(cgroup.path)}` },
};

function listDifferences(keyed: KeyedList, before: unknown[], after: unknown[], snapshots: Snapshots): string[] {
  const label = keyed.label as (item: unknown) => string;
  const expected = new Map(before.map((item) => [label(item), item]));
  const now = new Map(after.map((item) => [label(item), item]));
  const found: string[] = [];
  for (const [name, item] of now) {
    const was = expected.get(name);
    if (was === undefined) found.push(`${name} appeared`);
    else found.push(...itemDifferences(keyed, name, was, item, snapshots));
  }
  for (const name of expected.keys()) if (!now.has(name)) found.push(`${name} is gone`);
  return found;
}

function itemDifferences(keyed: KeyedList, name: string, before: unknown, after: unknown, snapshots: Snapshots) {
  if (!isRecord(before) || !isRecord(after)) return [`${name} now ${shown(after)}, the plan expected ${shown(before)}`];
  const found: string[] = [];
  for (const field of new Set([...Object.keys(before), ...Object.keys(after)])) {
    if (isDeepStrictEqual(before[field], after[field])) continue;
    const describe = keyed.describe?.[field] as ((b: unknown, a: unknown, s: Snapshots) => string[]) | undefined;
    if (describe) found.push(...describe(before[field], after[field], snapshots).map((what) => `${name}: ${what}`));
    else
      found.push(`${name}: ${printable(field)} now ${shown(after[field])}, the plan expected ${shown(before[field])}`);
  }
  return found;
}

/** A hook's filter by the version it runs: "ingress now runs version 3f2a… of web, the plan expected …". */
function filterDifferences(
  before: Partial<Record<Hook, number>>,
  after: Partial<Record<Hook, number>>,
  snapshots: Snapshots,
): string[] {
  const hooks = new Set([...Object.keys(before ?? {}), ...Object.keys(after ?? {})]) as Set<Hook>;
  return [...hooks]
    .filter((hook) => before?.[hook] !== after?.[hook])
    .map(
      (hook) =>
        `${printable(hook)} now runs ${runningProgram(snapshots.now, hook, after?.[hook])}, ` +
        `the plan expected ${runningProgram(snapshots.expected, hook, before?.[hook])}`,
    );
}

function runningProgram(snapshot: ObservedSnapshot, hook: Hook, id: number | undefined): string {
  if (id === undefined) return "nothing of ours";
  const program = snapshot.programs.find((candidate) => candidate.programIds?.[hook] === id);
  return program ? programLabel(program) : `program ${Number(id)}, which no version of ours holds`;
}

function programLabel(program: Pick<ObservedProgram, "ref">): string {
  return `version ${printable(program.ref.version)} of ${printable(program.ref.policy)}`;
}

/** Values in a refusal: JSON, on one line, printable and cut. */
function shown(value: unknown): string {
  return value === undefined ? "nothing" : printable(JSON.stringify(value));
}

function printable(text: string): string {
  return displayLine(String(text));
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
