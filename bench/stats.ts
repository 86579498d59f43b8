/** What the side-by-side benchmarks share: shuffled rounds, medians and spreads, and the machine's load. */
import { loadavg } from "node:os";

/** In place: a Fisher–Yates shuffle, so no variant always runs first. */
export function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** The smallest and the largest of @values: how far apart the rounds were. */
export function spread(values: number[]): { min: number; max: number } {
  return { min: Math.min(...values), max: Math.max(...values) };
}

/** The 1, 5 and 15 minute load averages, two decimals: other work on the machine skews what is measured. */
export function loadAverage(): number[] {
  return loadavg().map((load) => Math.round(load * 100) / 100);
}
