import { readFile } from "node:fs/promises";
import { InterceptError } from "../errors.js";

/** Capability numbers (linux/capability.h). */
const CAPABILITIES = { CAP_NET_ADMIN: 12, CAP_SYS_ADMIN: 21 } as const;
type Capability = keyof typeof CAPABILITIES;

/**
 * Checks, before anything else, that this process may do what a command
 * needs from the kernel: attach tc filters and cgroup programs
 * (CAP_NET_ADMIN), and CAP_SYS_ADMIN, which the kernel asks of anyone
 * fetching a BPF object by id: bpftool reads every map through its BTF
 * (BPF_BTF_GET_FD_BY_ID) and lists cgroup attachments by program id, and
 * entering another network namespace is setns. CAP_SYS_ADMIN also grants
 * what CAP_BPF (load) and CAP_PERFMON (the rewrite reads the skb's checksum
 * state, the steer a TIME_WAIT socket) are for. Without them the tools fail
 * half-way with bare EPERMs, and a program whose maps cannot be read would
 * look like a load cut short: a plan of an unreadable kernel would remove
 * what it holds.
 */
export async function requireKernelPrivileges(command: string): Promise<void> {
  const effective = await effectiveCapabilities();
  const has = (capability: Capability) => (effective & (1n << BigInt(CAPABILITIES[capability]))) !== 0n;
  const missing = (["CAP_NET_ADMIN", "CAP_SYS_ADMIN"] as const).filter((capability) => !has(capability));
  if (missing.length === 0) return;
  throw new InterceptError(
    "privilege",
    `intercept ${command} needs root, or CAP_NET_ADMIN and CAP_SYS_ADMIN (missing: ${missing.join(", ")}); validate, compile and build need none`,
  );
}

/** The effective capability set, from /proc/self/status (CapEff, hex). */
async function effectiveCapabilities(): Promise<bigint> {
  const status = await readFile("/proc/self/status", "utf8");
  const line = status.split("\n").find((l) => l.startsWith("CapEff:"));
  return line ? BigInt(`0x${line.split(/\s+/)[1]}`) : 0n;
}
