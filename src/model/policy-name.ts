/**
 * Policy names end up in C identifiers, pin paths, object file names and
 * resource addresses: one pattern for all of them. The policy schema's
 * `name` pattern is this one (tests/unit/model.test.ts checks it).
 */
export const POLICY_NAME = /^[a-z][a-z0-9_]{0,31}$/;

export function isPolicyName(name: string): boolean {
  return POLICY_NAME.test(name);
}

/** The file name of a policy's prebuilt object (`build --out DIR`). */
export function objectFileName(policy: string): string {
  return `${policy}.bpf.o`;
}

/** Whether @name is the object file name of some policy. */
export function isObjectFileName(name: string): boolean {
  return name.endsWith(".bpf.o") && isPolicyName(name.slice(0, -".bpf.o".length));
}
