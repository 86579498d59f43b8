/**
 * A composition: the sorted set of policies that select one link (tc) or
 * capture one cgroup. The kernel runs one program per composition, named
 * here and nowhere else. A composition of one policy is named as that
 * policy, so its pins, addresses and generated C are those of the policy
 * alone. A composition of several joins their names with COMPOSITION_JOINER,
 * which no policy name holds (POLICY_NAME); a name too long for a pin path
 * component keeps a prefix and a short hash of the whole.
 */
import { createHash } from "node:crypto";
import { isPolicyName } from "./policy-name.js";

export const COMPOSITION_JOINER = "+";
/** Longest composition name: well inside a pin path component (255) and readable in a plan. */
export const MAX_COMPOSITION_NAME = 64;
const HASH_DIGITS = 12;
/** The mark of a truncated name: prefix, "~", hash. */
const TRUNCATED = new RegExp(`^(.+)~([0-9a-f]{${HASH_DIGITS}})$`);

/** The name of the composition of @policies (policy names, any order, no repeats needed). */
export function compositionName(policies: readonly string[]): string {
  const members = compositionMembers(policies);
  if (members.length === 0) throw new Error("a composition holds at least one policy");
  for (const name of members) if (!isPolicyName(name)) throw new Error(`not a policy name: ${JSON.stringify(name)}`);
  const joined = members.join(COMPOSITION_JOINER);
  if (joined.length <= MAX_COMPOSITION_NAME) return joined;
  const hash = createHash("sha256").update(joined).digest("hex").slice(0, HASH_DIGITS);
  return `${joined.slice(0, MAX_COMPOSITION_NAME - HASH_DIGITS - 1)}~${hash}`;
}

/** @policies sorted, each once: the order every composed program holds its policies in. */
export function compositionMembers(policies: readonly string[]): string[] {
  return [...new Set(policies)].sort();
}

/** Whether @name is a name compositionName makes for two or more policies. */
export function isCompositionName(name: string): boolean {
  if (typeof name !== "string" || name.length > MAX_COMPOSITION_NAME || !name.includes(COMPOSITION_JOINER))
    return false;
  const truncated = TRUNCATED.exec(name);
  if (truncated) {
    // A prefix of joined names: every complete part a policy name, the last possibly cut short.
    const parts = truncated[1]!.split(COMPOSITION_JOINER);
    return name.length === MAX_COMPOSITION_NAME && parts.every((part) => part === "" || /^[a-z][a-z0-9_]*$/.test(part));
  }
  const parts = name.split(COMPOSITION_JOINER);
  return parts.every(isPolicyName) && parts.every((part, i) => i === 0 || parts[i - 1]! < part);
}

/** Whether @name names a program: a policy's own, or a composition's. */
export function isProgramName(name: string): boolean {
  return isPolicyName(name) || isCompositionName(name);
}

/** The member policies a composition name shows; undefined when truncated (the set is no longer readable). */
export function membersOf(name: string): string[] | undefined {
  if (isPolicyName(name)) return [name];
  if (!isCompositionName(name) || TRUNCATED.test(name)) return undefined;
  return name.split(COMPOSITION_JOINER);
}

/** Whether @name is the prebuilt object file name (`build --out DIR`) of a policy's program or a composition's. */
export function isProgramObjectFileName(name: string): boolean {
  return name.endsWith(".bpf.o") && isProgramName(name.slice(0, -".bpf.o".length));
}
