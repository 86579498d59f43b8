import { readdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { InterceptError } from "../errors.js";
import { run } from "./exec.js";

export const BPFFS = "/sys/fs/bpf";
export const PIN_ROOT = path.join(BPFFS, "intercept");

/**
 * Where a namespace's objects are pinned:
 *   /sys/fs/bpf/intercept/<ns>/qdiscs                     clsact qdiscs intercept created
 *   /sys/fs/bpf/intercept/<ns>/<policy>/<hash>/progs/…    intercept_ingress, intercept_egress
 *   /sys/fs/bpf/intercept/<ns>/<policy>/<hash>/maps/…     rule_state, rule_counters, policy_meta
 * A policy's hash directory lets a new version load beside the old one, so
 * filters can be swapped from one to the other without a gap.
 */
export const pins = {
  namespace: (ns: string) => path.join(PIN_ROOT, ns),
  qdiscs: (ns: string) => path.join(PIN_ROOT, ns, "qdiscs"),
  policy: (ns: string, policy: string) => path.join(PIN_ROOT, ns, policy),
  version: (ns: string, policy: string, hash: string) => path.join(PIN_ROOT, ns, policy, hash.slice(0, 16)),
  program: (versionDir: string, hook: "ingress" | "egress") => path.join(versionDir, "progs", `intercept_${hook}`),
  map: (versionDir: string, map: "rule_state" | "rule_counters" | "policy_meta") => path.join(versionDir, "maps", map),
};

/** Mounts bpffs at /sys/fs/bpf when nothing is mounted there. */
export async function ensureBpffs(): Promise<void> {
  const mounts = await readFile("/proc/self/mounts", "utf8");
  if (mounts.split("\n").some((line) => line.split(" ")[1] === BPFFS && line.split(" ")[2] === "bpf")) return;
  try {
    await run("mount", ["-t", "bpf", "bpf", BPFFS]);
  } catch (error) {
    throw new InterceptError("bpffs-unavailable", `cannot mount bpffs at ${BPFFS} (are you root?): ${(error as Error).message}`);
  }
}

/** Sub-directories of a pin directory; none when it does not exist. */
export async function listDirs(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { withFileTypes: true })).filter((entry) => entry.isDirectory()).map((entry) => entry.name).sort();
  } catch {
    return [];
  }
}

/** Unpins everything below @dir; the kernel frees objects nothing else holds. */
export async function removePins(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}
