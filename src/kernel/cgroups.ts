import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { cgroupPathProblem } from "../cgroup-path.js";
import { InterceptError, messageOf } from "../errors.js";
import type { CgroupHook } from "../model/hooks.js";
import { run, runJson } from "./exec.js";

/** bpftool's names of the attach points of each cgroup hook. */
export const ATTACH_TYPES: Record<CgroupHook, string> = {
  connect4: "cgroup_inet4_connect",
  connect6: "cgroup_inet6_connect",
  sock_ops: "cgroup_sock_ops",
  getsockopt: "cgroup_getsockopt",
};

const HOOK_OF = new Map(Object.entries(ATTACH_TYPES).map(([hook, type]) => [type, hook as CgroupHook]));

/**
 * Where the cgroup2 hierarchy is mounted, from /proc/self/mounts: on a
 * hybrid layout (cgroup v1 controllers) it is not /sys/fs/cgroup but a
 * mount below it (/sys/fs/cgroup/unified); null when there is none.
 */
export async function cgroupRoot(): Promise<string | null> {
  const mounts = await readFile("/proc/self/mounts", "utf8");
  const line = mounts
    .split("\n")
    .map((entry) => entry.split(" "))
    .find((fields) => fields[2] === "cgroup2");
  return line ? unescapeMountPath(line[1]!) : null;
}

/** /proc/mounts writes a space, tab, newline or backslash in a path as an octal escape. */
function unescapeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** The directory of cgroup @relative under @root, refusing anything that is not a cgroup path a policy may name. */
export function cgroupDirectory(root: string, relative: string): string {
  const problem = cgroupPathProblem(relative);
  if (problem)
    throw new InterceptError(
      "cgroup-path-refused",
      `refusing cgroup ${JSON.stringify(relative).slice(0, 80)}: it ${problem}`,
    );
  const joined = path.resolve(root, relative);
  if (!joined.startsWith(`${root}/`))
    throw new InterceptError("cgroup-path-refused", `refusing cgroup ${relative}: outside ${root}`);
  return joined;
}

/** A cgroup's id (its directory's inode, the kernel's cgroup id) and depth; undefined when it does not exist. */
export async function statCgroup(root: string, relative: string): Promise<{ id: number; level: number } | undefined> {
  try {
    const info = await stat(cgroupDirectory(root, relative));
    return info.isDirectory() ? { id: info.ino, level: relative.split("/").length } : undefined;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT" || (error as NodeJS.ErrnoException).code === "ENOTDIR")
      return undefined;
    if (error instanceof InterceptError) throw error;
    throw new InterceptError(
      "file-access",
      `cannot read cgroup ${relative}: ${(error as NodeJS.ErrnoException).code ?? messageOf(error)}`,
    );
  }
}

/** A program attached directly to a cgroup (not inherited from a parent), ours or another's. */
export interface CgroupAttachment {
  /** bpftool's name of the attach point (cgroup_inet4_connect, …). */
  attachType: string;
  /** The attach point as intercept names it, when it is one of ours. */
  hook: CgroupHook | undefined;
  programId: number;
  name: string;
}

interface BpftoolAttachment {
  id: number;
  attach_type: string;
  name?: string;
}

function attachment(entry: BpftoolAttachment): CgroupAttachment {
  return {
    attachType: entry.attach_type,
    hook: HOOK_OF.get(entry.attach_type),
    programId: entry.id,
    name: entry.name ?? "",
  };
}

/**
 * Every cgroup below @root with a program attached (`bpftool cgroup tree`:
 * one process walks the hierarchy), by path relative to @root.
 */
export async function attachedTree(root: string): Promise<Map<string, CgroupAttachment[]>> {
  const tree = await runJson<{ cgroup: string; programs: BpftoolAttachment[] }[]>("bpftool", [
    "-j",
    "cgroup",
    "tree",
    root,
  ]);
  const byPath = new Map<string, CgroupAttachment[]>();
  for (const entry of tree) {
    const relative = path.relative(root, entry.cgroup);
    if (relative === "" || relative.startsWith("..")) continue; // the root itself is never ours
    byPath.set(relative, entry.programs.map(attachment));
  }
  return byPath;
}

/** Attaches the program pinned at @programPin beside the cgroup's others (BPF_F_ALLOW_MULTI). */
export async function attachToCgroup(directory: string, hook: CgroupHook, programPin: string): Promise<void> {
  await run("bpftool", ["cgroup", "attach", directory, ATTACH_TYPES[hook], "pinned", programPin, "multi"]);
}

export async function detachFromCgroup(directory: string, hook: CgroupHook, programPin: string): Promise<void> {
  await run("bpftool", ["cgroup", "detach", directory, ATTACH_TYPES[hook], "pinned", programPin]);
}
