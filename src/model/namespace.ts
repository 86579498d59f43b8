/**
 * Network namespaces: how intercept names one (its `ip netns` name) and
 * how it keys what it keeps for one (its inode: pins, locks, saved plans).
 * The key is built and read only here.
 */

/** Where a command runs: the current network namespace, or a named one (`ip netns`). */
export interface NetworkNamespace {
  /** `ip netns` name; undefined for the namespace intercept itself runs in. */
  name?: string;
}

/** Where `ip netns` keeps the files that name namespaces. */
export const NETNS_DIR = "/var/run/netns";

/**
 * An `ip netns` name as intercept accepts one: a file name under NETNS_DIR,
 * no slashes, no leading dot (the saved-plan schema's `namespace` pattern).
 */
export const NETNS_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$/;

/** A glob of namespace names: their characters, and * and ? (--netns-match, a policy's `namespaces`). */
export const NETNS_GLOB = /^[A-Za-z0-9_*?][A-Za-z0-9_.*?-]{0,254}$/;

/**
 * A namespace's key: "ns" and the inode of its namespace file, stable
 * whatever the namespace is called. An inode is a 64-bit number: at most
 * 20 digits (schemas/saved-plan.schema.json says the same; a unit test
 * keeps them in step).
 */
export const NAMESPACE_KEY = /^ns[0-9]{1,20}$/;

/** The key of the namespace whose file has inode @inode. */
export function namespaceKeyOf(inode: number | bigint): string {
  return `ns${inode}`;
}

/** The inode a namespace key was made from (namespaceKeyOf's inverse). */
export function inodeOfNamespaceKey(key: string): bigint {
  if (!NAMESPACE_KEY.test(key)) throw new Error(`not a namespace key: ${key}`);
  return BigInt(key.slice(2));
}

/** Whether @name is a namespace key (a pin directory or lock of ours is named by one). */
export function isNamespaceKey(name: string): boolean {
  return NAMESPACE_KEY.test(name);
}

export function describeNamespace(netns: NetworkNamespace): string {
  return netns.name ? `network namespace "${netns.name}"` : "the current network namespace";
}
