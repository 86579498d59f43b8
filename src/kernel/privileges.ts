import { readFile } from "node:fs/promises";
import { InterceptError } from "../errors.js";
import type { NetworkNamespace } from "./exec.js";

/** Capability numbers (linux/capability.h). */
const CAPABILITIES = { CAP_NET_ADMIN: 12, CAP_SYS_ADMIN: 21, CAP_PERFMON: 38, CAP_BPF: 39 } as const;
type Capability = keyof typeof CAPABILITIES;

/**
 * Checks, before anything else, that this process may do what a command
 * needs from the kernel: load BPF (CAP_BPF, or CAP_SYS_ADMIN before 5.8),
 * let the programs read kernel structures (CAP_PERFMON: the rewrite reads
 * the skb's checksum state, the steer reads a TIME_WAIT socket), attach tc
 * filters (CAP_NET_ADMIN), and enter another network namespace
 * (CAP_SYS_ADMIN). Without them the tools fail half-way with bare EPERMs,
 * and bpffs, readable only by root, would look empty: a plan of an
 * unreadable kernel would claim it holds nothing.
 */
export async function requireKernelPrivileges(command: string, netns: NetworkNamespace): Promise<void> {
  const effective = await effectiveCapabilities();
  const has = (capability: Capability) => (effective & (1n << BigInt(CAPABILITIES[capability]))) !== 0n;
  const missing: Capability[] = [];
  if (!has("CAP_BPF") && !has("CAP_SYS_ADMIN")) missing.push("CAP_BPF");
  if (!has("CAP_PERFMON") && !has("CAP_SYS_ADMIN")) missing.push("CAP_PERFMON");
  if (!has("CAP_NET_ADMIN")) missing.push("CAP_NET_ADMIN");
  if (netns.name !== undefined && !has("CAP_SYS_ADMIN")) missing.push("CAP_SYS_ADMIN");
  if (missing.length === 0) return;
  const needs = `root, or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN${netns.name !== undefined ? " plus CAP_SYS_ADMIN for --netns" : ""}`;
  throw new InterceptError("privilege", `intercept ${command} needs ${needs} (missing: ${missing.join(", ")}); validate, compile and build need none`);
}

/** The effective capability set, from /proc/self/status (CapEff, hex). */
async function effectiveCapabilities(): Promise<bigint> {
  const status = await readFile("/proc/self/status", "utf8");
  const line = status.split("\n").find((l) => l.startsWith("CapEff:"));
  return line ? BigInt(`0x${line.split(/\s+/)[1]}`) : 0n;
}
