import type { Dirent } from "node:fs";
import { readdir, readlink, realpath, stat } from "node:fs/promises";
import path from "node:path";
import { diagnosticAt, startOf, type Diagnostic } from "../diagnostics.js";
import { reason } from "./text.js";

/** Policy files are found by these endings. */
export const POLICY_EXTENSIONS = [".ts", ".yaml", ".yml"];

/** A policy file to read: the name diagnostics use, and the path to open (a symlink's checked target). */
export interface PolicyFile {
  file: string;
  openPath: string;
}

/**
 * The policy files named by @paths: files as given, folders searched.
 *
 * In a folder, entries whose names start with "." are skipped: hidden files,
 * editors' lock files, and a Kubernetes ConfigMap volume's `..data` and
 * `..<timestamp>` folders, whose files are read once, through the
 * top-level symlinks that point into them. A symlink is followed when it
 * resolves inside the folder and refused with an error when it leads
 * outside (a policy folder cannot be made to read /etc/shadow); a symlink
 * to a folder inside is not followed (that folder is read where it is).
 * A file named on the command line is read even through a symlink (the user
 * chose it), but only if both its name and what it resolves to are policy
 * files (.ts, .yaml, .yml), so a link to a secret is never parsed and
 * echoed back line by line.
 */
export async function findPolicyFiles(paths: string[]): Promise<{ files: PolicyFile[]; diagnostics: Diagnostic[] }> {
  const found: PolicyFile[] = [];
  const diagnostics: Diagnostic[] = [];
  for (const given of paths) {
    const result = await expandPath(given);
    found.push(...result.files);
    diagnostics.push(...result.diagnostics);
  }
  const byName = new Map(found.map((entry) => [entry.file, entry]));
  return { files: [...byName.values()].sort((a, b) => a.file.localeCompare(b.file)), diagnostics };
}

async function expandPath(given: string): Promise<{ files: PolicyFile[]; diagnostics: Diagnostic[] }> {
  const file = displayPath(given);
  const fail = (diagnostic: Diagnostic) => ({ files: [], diagnostics: [diagnostic] });
  let target: string;
  try {
    target = await realpath(given);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") {
      return fail(diagnosticAt("load/unreadable", startOf(file), `cannot read: ${reason(error)}`));
    }
    const link = await symlinkTarget(given);
    return fail(
      diagnosticAt(
        link === undefined ? "load/not-found" : "load/broken-symlink",
        startOf(file),
        link === undefined ? "no such policy file or folder" : `symlink to ${link}, which does not exist`,
      ),
    );
  }
  const kind = await kindOf(target);
  if (kind === "gone") return fail(diagnosticAt("load/not-found", startOf(file), "no such policy file or folder"));
  if (kind === "folder") {
    const walk = new FolderWalk(target);
    await walk.folder(file, target);
    return walk;
  }
  if (!isPolicyName(given)) {
    return fail(
      diagnosticAt(
        "load/not-a-policy",
        startOf(file),
        `not a policy: only ${POLICY_EXTENSIONS.join(", ")} files are read`,
      ),
    );
  }
  if (!isPolicyName(target)) {
    return fail(
      diagnosticAt(
        "load/not-a-policy",
        startOf(file),
        `not a policy: it resolves to ${target}, which is not a ${POLICY_EXTENSIONS.join(", ")} file`,
      ),
    );
  }
  return { files: [{ file, openPath: target }], diagnostics: [] };
}

class FolderWalk {
  readonly files: PolicyFile[] = [];
  readonly diagnostics: Diagnostic[] = [];

  /** @root: the real path of the folder named on the command line; symlinks may not leave it. */
  constructor(private readonly root: string) {}

  async folder(shown: string, real: string): Promise<void> {
    let entries: Dirent[];
    try {
      entries = await readdir(real, { withFileTypes: true });
    } catch (error) {
      this.diagnostics.push(diagnosticAt("load/unreadable", startOf(shown), `cannot read folder: ${reason(error)}`));
      return;
    }
    for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      if (entry.name.startsWith(".")) continue;
      const file = path.join(shown, entry.name);
      const entryPath = path.join(real, entry.name);
      if (entry.isDirectory()) await this.folder(file, entryPath);
      else if (entry.isSymbolicLink()) await this.symlink(file, entryPath);
      // Anything else with a policy's name (a FIFO, a device) is refused when read, with its reason.
      else if (isPolicyName(entry.name)) this.files.push({ file, openPath: entryPath });
    }
  }

  private async symlink(file: string, link: string): Promise<void> {
    let target: string;
    try {
      target = await realpath(link);
    } catch (error) {
      // A dangling link without a policy's name is not ours to judge (like any other file that is not a policy).
      if (!isPolicyName(link)) return;
      const broken = (error as NodeJS.ErrnoException).code === "ENOENT";
      this.diagnostics.push(
        broken
          ? diagnosticAt(
              "load/broken-symlink",
              startOf(file),
              `symlink to ${await readlink(link)}, which does not exist`,
            )
          : diagnosticAt("load/unreadable", startOf(file), `cannot follow symlink: ${reason(error)}`),
      );
      return;
    }
    const kind = await kindOf(target);
    if (kind === "gone") return; // removed since realpath found it: as if never there
    const isFolder = kind === "folder";
    if (!isInside(target, this.root)) {
      if (isFolder || isPolicyName(link)) {
        this.diagnostics.push(
          diagnosticAt(
            "load/symlink-outside",
            startOf(file),
            `symlink leads outside the policy folder (to ${target}): refused`,
          ),
        );
      }
      return;
    }
    if (!isFolder && isPolicyName(link)) this.files.push({ file, openPath: target });
  }
}

/** What a resolved path is now; "gone" when it vanished after being resolved (a concurrent delete). */
async function kindOf(target: string): Promise<"folder" | "other" | "gone"> {
  try {
    return (await stat(target)).isDirectory() ? "folder" : "other";
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return "gone";
    throw error;
  }
}

export function isPolicyName(file: string): boolean {
  return POLICY_EXTENSIONS.includes(path.extname(file));
}

function isInside(target: string, root: string): boolean {
  const relative = path.relative(root, target);
  return relative === "" || (!relative.startsWith(`..${path.sep}`) && relative !== ".." && !path.isAbsolute(relative));
}

/** Paths as the user would type them: relative to the working directory when inside it. */
function displayPath(file: string): string {
  const relative = path.relative(process.cwd(), path.resolve(file));
  return relative.startsWith("..") ? path.resolve(file) : relative;
}

/** Where the symlink @file points, or undefined when @file is not a symlink (EINVAL) or not there (ENOENT). */
async function symlinkTarget(file: string): Promise<string | undefined> {
  try {
    return await readlink(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "EINVAL") return undefined;
    throw error;
  }
}
