/**
 * One loaded version of a policy's programs, named the way its pins are:
 * the policy, and the first 16 hex digits of its content hash. Plans and
 * saved plans carry only these names; the datapath derives every path from
 * them and refuses names that could leave its own directory.
 */
export interface VersionRef {
  policy: string;
  version: string;
}

/** What a version name looks like: versionOf's output. */
export const VERSION_NAME = /^[0-9a-f]{16}$/;

export function isVersionName(name: string): boolean {
  return VERSION_NAME.test(name);
}

/** The pin directory name of a content hash. */
export function versionOf(contentHash: string): string {
  return contentHash.slice(0, 16);
}

export function sameVersion(a: VersionRef | undefined, b: VersionRef | undefined): boolean {
  return a !== undefined && b !== undefined && a.policy === b.policy && a.version === b.version;
}

export function describeVersion(ref: VersionRef): string {
  return `${ref.policy}@${ref.version.slice(0, 8)}`;
}
