import { stat } from "node:fs/promises";
import path from "node:path";
import { InterceptError, messageOf } from "../errors.js";
import { namespaceKeyOf, NETNS_DIR, type NetworkNamespace } from "../model/namespace.js";

/**
 * A stable identity for a network namespace: its inode. Pins of different
 * namespaces go under different directories, whatever they are called.
 */
export async function namespaceKey(netns: NetworkNamespace): Promise<string> {
  const file = netns.name ? path.join(NETNS_DIR, netns.name) : "/proc/self/ns/net";
  if (netns.name && (netns.name.includes("/") || netns.name.startsWith("."))) {
    throw new InterceptError("netns-not-found", `invalid network namespace name "${netns.name}"`);
  }
  try {
    return namespaceKeyOf((await stat(file)).ino);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== "ENOENT") throw new InterceptError("file-access", `cannot read ${file}: ${code ?? messageOf(error)}`);
    throw new InterceptError(
      "netns-not-found",
      `network namespace "${netns.name}" does not exist (see \`ip netns list\`)`,
    );
  }
}
