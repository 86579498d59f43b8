import { readdir, readFile, rm, rmdir } from "node:fs/promises";
import path from "node:path";
import { InterceptError } from "../errors.js";
import { CGROUP_PROGRAMS, TC_PROGRAMS, type MapName } from "../model/bpf-abi.js";
import type { CgroupHook, Hook } from "../model/hooks.js";
import { NAMESPACE_KEY } from "../model/namespace.js";
import { isProgramName } from "../model/composition.js";
import { VERSION_NAME, type VersionRef } from "../model/version.js";
import { run } from "./exec.js";

export const BPFFS = "/sys/fs/bpf";
export const PIN_ROOT = path.join(BPFFS, "intercept");
/** The node's own programs (`agent --cni`), beside the namespaces' folders: no namespace key looks like it. */
export const NODE_PINS = "node";

// The only names a pin path is ever built from (src/model/): anything else is refused, never joined.

/**
 * Where a namespace's objects are pinned:
 *   /sys/fs/bpf/intercept/<ns>/qdiscs                        clsact qdiscs intercept created
 *   /sys/fs/bpf/intercept/<ns>/<program>/<version>/progs/…    intercept_ingress, intercept_egress,
 *                                                            out_connect4, out_connect6, out_sockops, out_getsockopt
 *   /sys/fs/bpf/intercept/<ns>/<policy>/<version>/maps/…      rule_state, rule_counters, policy_meta,
 *                                                            prefixes_v4/_v6, exempt_cgroups, orig_by_cookie, orig_by_conn
 * <program> is a policy's name, or a composition's (src/model/composition.ts).
 * A program's version directory lets a new version load beside the old one,
 * so filters can be swapped from one to the other without a gap. Every
 * path is derived here from checked names, and must resolve below PIN_ROOT:
 * nothing read from a file (a saved plan, say) can point it elsewhere.
 */
export class PinLayout {
  readonly namespaceDir: string;

  constructor(
    /** A namespace key, or NODE_PINS. */
    readonly namespaceKey: string,
    /** The folder every namespace's folder is in (PIN_ROOT, but for tests' own). */
    readonly root = PIN_ROOT,
  ) {
    this.namespaceDir = inside(
      root,
      namespaceKey === NODE_PINS ? NODE_PINS : checked(namespaceKey, (key) => NAMESPACE_KEY.test(key), "namespace key"),
    );
  }

  /** The node's programs, loaded once for the CNI plugin to attach: /sys/fs/bpf/intercept/node/<policy>/<version>/… */
  static node(root = PIN_ROOT): PinLayout {
    return new PinLayout(NODE_PINS, root);
  }

  get qdiscs(): string {
    return path.join(this.namespaceDir, "qdiscs");
  }

  policy(policy: string): string {
    // A policy's own program, or a composition's (src/model/composition.ts): names that module makes.
    return inside(this.namespaceDir, checked(policy, isProgramName, "program name"));
  }

  version(ref: VersionRef): string {
    return inside(
      this.policy(ref.policy),
      checked(ref.version, (name) => VERSION_NAME.test(name), "program version"),
    );
  }

  program(ref: VersionRef, hook: Hook): string {
    return path.join(this.version(ref), "progs", TC_PROGRAMS[hook].name);
  }

  cgroupProgram(ref: VersionRef, hook: CgroupHook): string {
    return path.join(this.version(ref), "progs", CGROUP_PROGRAMS[hook].name);
  }

  map(ref: VersionRef, map: MapName): string {
    return path.join(this.version(ref), "maps", map);
  }
}

function checked(name: string, valid: (name: string) => boolean, what: string): string {
  if (typeof name !== "string" || !valid(name)) {
    throw new InterceptError(
      "pin-path-refused",
      `refusing ${what} ${JSON.stringify(String(name)).slice(0, 60)}: not a name intercept makes`,
    );
  }
  return name;
}

function inside(parent: string, name: string): string {
  const joined = path.resolve(parent, name);
  if (path.dirname(joined) !== parent)
    throw new InterceptError("pin-path-refused", `refusing pin path ${joined}: outside ${parent}`);
  return joined;
}

/** Mounts bpffs at /sys/fs/bpf when nothing is mounted there. */
export async function ensureBpffs(): Promise<void> {
  const mounts = await readFile("/proc/self/mounts", "utf8");
  if (mounts.split("\n").some((line) => line.split(" ")[1] === BPFFS && line.split(" ")[2] === "bpf")) return;
  try {
    await run("mount", ["-t", "bpf", "bpf", BPFFS]);
  } catch (error) {
    throw new InterceptError("bpffs-unavailable", `cannot mount bpffs at ${BPFFS}: ${(error as Error).message}`);
  }
}

/** Entries of a pin directory of one kind (or all); none when the directory does not exist (nothing pinned yet). */
export async function listEntries(dir: string, kind: "directories" | "files" | "all"): Promise<string[]> {
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    const wanted = (entry: { isDirectory(): boolean }) =>
      kind === "all" || (kind === "directories" ? entry.isDirectory() : !entry.isDirectory());
    return entries
      .filter(wanted)
      .map((entry) => entry.name)
      .sort();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
}

/** Unpins everything below @dir; the kernel frees objects nothing else holds. */
export async function removePins(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/** Removes @dir if it is empty; one that still holds pins, or is already gone, stays as it is. */
export async function removeIfEmpty(dir: string): Promise<void> {
  try {
    await rmdir(dir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== "ENOTEMPTY" && code !== "EEXIST" && code !== "ENOENT") throw error;
  }
}
