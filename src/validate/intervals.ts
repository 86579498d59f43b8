/**
 * Sets of integers as sorted lists of disjoint inclusive intervals: the
 * algebra selectors need, for ports (1–65535) and addresses (IPv4 as
 * 32-bit, IPv6 as 128-bit numbers) alike, hence bigint. Every function
 * takes and returns normal sets: sorted, disjoint, not adjacent.
 */
export interface Interval {
  first: bigint;
  last: bigint;
}

export type IntervalSet = Interval[];

/** Any intervals, in any order, overlapping or not, as a normal set. */
export function normalSet(intervals: readonly Interval[]): IntervalSet {
  const sorted = [...intervals].sort((a, b) => (a.first < b.first ? -1 : a.first > b.first ? 1 : 0));
  const merged: IntervalSet = [];
  for (const { first, last } of sorted) {
    const previous = merged[merged.length - 1];
    if (previous && first <= previous.last + 1n) {
      if (last > previous.last) previous.last = last;
    } else {
      merged.push({ first, last });
    }
  }
  return merged;
}

/** @from without the members of @minus. */
export function subtract(from: IntervalSet, minus: IntervalSet): IntervalSet {
  const result: IntervalSet = [];
  let m = 0;
  for (const interval of from) {
    let first = interval.first;
    while (m < minus.length && minus[m]!.last < first) m++;
    let k = m;
    while (k < minus.length && minus[k]!.first <= interval.last) {
      const cut = minus[k]!;
      if (cut.first > first) result.push({ first, last: cut.first - 1n });
      first = cut.last + 1n;
      if (first > interval.last) break;
      k++;
    }
    if (first <= interval.last) result.push({ first, last: interval.last });
  }
  return result;
}

/** The members of both. */
export function intersect(a: IntervalSet, b: IntervalSet): IntervalSet {
  const result: IntervalSet = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const first = a[i]!.first > b[j]!.first ? a[i]!.first : b[j]!.first;
    const last = a[i]!.last < b[j]!.last ? a[i]!.last : b[j]!.last;
    if (first <= last) result.push({ first, last });
    if (a[i]!.last < b[j]!.last) i++;
    else j++;
  }
  return result;
}

/** Whether @a and @b share a member (without building the intersection). */
export function overlaps(a: IntervalSet, b: IntervalSet): boolean {
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    if (a[i]!.last < b[j]!.first) i++;
    else if (b[j]!.last < a[i]!.first) j++;
    else return true;
  }
  return false;
}

/** Whether every member of @inner is in @outer. */
export function covers(outer: IntervalSet, inner: IntervalSet): boolean {
  return subtract(inner, outer).length === 0;
}

/** How many members @set has. */
export function size(set: IntervalSet): bigint {
  return set.reduce((sum, { first, last }) => sum + last - first + 1n, 0n);
}
