import { createHash, type Hash } from "node:crypto";
import { readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { messageOf } from "../errors.js";
import { DEFAULT_POLICY_DIR } from "../load/index.js";
import { findPolicyFiles } from "../load/files.js";
import { readPolicyText } from "../load/text.js";

/** How many hex digits of a fingerprint are shown (logs, metrics, /healthz): enough to tell sets apart. */
export const FINGERPRINT_SHOWN = 16;

/**
 * The content hash of a policy set: every policy file the loader would
 * read (its name and its text, read exactly as the loader reads it), the
 * loader's own complaints about the paths (a broken symlink, a missing
 * folder), and with `--objects DIR` the objects' manifest and the files
 * beside it. Two reads with one fingerprint read the same policies: the
 * agent compares fingerprints, never file names or event types, to decide
 * whether anything changed.
 */
export async function fingerprintPolicies(paths: string[], objects: string | undefined): Promise<string> {
  const hash = createHash("sha256");
  const { files, diagnostics } = await findPolicyFiles(paths.length > 0 ? paths : [DEFAULT_POLICY_DIR]);
  for (const { file, openPath } of files) {
    const read = await readPolicyText(file, openPath);
    field(hash, "file", file);
    if ("error" in read) field(hash, "unreadable", `${read.error.code} ${read.error.message}`);
    else field(hash, "text", read.source.text);
  }
  for (const diagnostic of diagnostics)
    field(hash, "problem", `${diagnostic.file} ${diagnostic.code} ${diagnostic.message}`);
  if (objects !== undefined) await fingerprintObjects(hash, objects);
  return hash.digest("hex");
}

/**
 * The objects folder: its manifest's text (which names every object and
 * its sha256) and each entry's name, size and modification time (an
 * object replaced under an unchanged manifest is still a change to look
 * at). Entries starting with "." (a ConfigMap's `..data`) are read through
 * the top-level names, as the loader reads policies.
 */
async function fingerprintObjects(hash: Hash, dir: string): Promise<void> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((name) => !name.startsWith(".")).sort();
  } catch (error) {
    field(hash, "objects-unreadable", codeOf(error));
    return;
  }
  for (const name of names) {
    const entry = path.join(dir, name);
    try {
      const info = await stat(entry);
      field(hash, "object", `${name} ${info.isDirectory() ? "dir" : info.size} ${info.mtimeMs}`);
      if (name === "manifest.json" && info.isFile()) field(hash, "manifest", await readFile(entry, "utf8"));
    } catch (error) {
      field(hash, "object-unreadable", `${name} ${codeOf(error)}`);
    }
  }
}

/** Each field is tagged and length-prefixed, so no two different sets hash the same bytes. */
function field(hash: Hash, tag: string, value: string): void {
  hash
    .update(`${tag}:${Buffer.byteLength(value)}:`)
    .update(value)
    .update("\n");
}

function codeOf(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? messageOf(error);
}
