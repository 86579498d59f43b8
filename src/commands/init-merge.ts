/**
 * What `intercept init` adds to files a repository may already have: the
 * lines its .gitignore needs, and the packages its package.json needs. Pure
 * functions over file text, so that what init changes of a user's file is
 * exactly what these return, and nothing else.
 */
import { InterceptError, messageOf } from "../errors.js";

/** The package's own name on the npm registry (the command it installs is `intercept`). */
export const PACKAGE_NAME = "intercept-bpf";

/**
 * The entries a policy repository ignores: the objects `build --out objects`
 * writes, saved plans and their JSON, the loader's cache and installed
 * packages. generated/ is not among them: it is reviewed and committed.
 */
export const GITIGNORE_ENTRIES = ["node_modules/", "build/", "objects/", "*.plan", "plan.json", "plan.txt"] as const;
export const GITIGNORE_HEADER = "# intercept: build outputs, saved plans and caches (generated/ is committed)";

/**
 * The lines of GITIGNORE_ENTRIES missing from @text. Compared trimmed and
 * without a leading or trailing slash: `/node_modules` and `node_modules`
 * ignore the folder too (at the top, where init's entries matter).
 */
export function missingGitignoreEntries(text: string): string[] {
  const bare = (line: string) => line.trim().replace(/^\//, "").replace(/\/$/, "");
  const present = new Set(text.split(/\r?\n/).map(bare));
  return GITIGNORE_ENTRIES.filter((entry) => !present.has(bare(entry)));
}

/** @text with @entries appended under GITIGNORE_HEADER, after a newline if it lacks one. */
export function appendGitignore(text: string, entries: readonly string[]): string {
  if (entries.length === 0) return text;
  const separator = text === "" || text.endsWith("\n") ? "" : "\n";
  const blank = text.trim() === "" ? "" : "\n";
  return `${text}${separator}${blank}${GITIGNORE_HEADER}\n${entries.map((entry) => `${entry}\n`).join("")}`;
}

/** A new repository's .gitignore: the header and every entry. */
export function newGitignore(): string {
  return appendGitignore("", GITIGNORE_ENTRIES);
}

/** The development packages a policy repository needs, with the ranges init writes. */
export interface NeededPackages {
  /** This package, at a range that includes the running version. */
  [PACKAGE_NAME]: string;
  /** The TypeScript the policies are type-checked with (`npx --no-install tsc`). */
  typescript: string;
}

/** A package.json for a new repository named @name: private, with @needed as devDependencies. */
export function newPackageJson(name: string, needed: NeededPackages): string {
  const manifest = { name: packageName(name), version: "0.0.0", private: true, devDependencies: { ...needed } };
  return `${JSON.stringify(manifest, null, 2)}\n`;
}

/**
 * @text (a user's package.json) with the packages of @needed it does not
 * list yet, in dependencies or devDependencies, added to devDependencies;
 * everything else as it was: key order, indentation and final newline.
 * `added` names what was added (empty: @text is returned unchanged).
 */
export function mergePackageJson(
  text: string,
  file: string,
  needed: NeededPackages,
): { text: string; added: string[] } {
  let manifest: Record<string, unknown>;
  try {
    manifest = JSON.parse(text) as Record<string, unknown>;
  } catch (error) {
    throw new InterceptError(
      "file-access",
      `${file}: not valid JSON (${messageOf(error)}): fix it, then run init again`,
      { cause: error },
    );
  }
  if (manifest === null || typeof manifest !== "object" || Array.isArray(manifest)) {
    throw new InterceptError("file-access", `${file}: not a JSON object: fix it, then run init again`);
  }
  const listed = (field: string) => (manifest[field] ?? {}) as Record<string, unknown>;
  const missing = Object.entries(needed).filter(
    ([name]) => !(name in listed("dependencies")) && !(name in listed("devDependencies")),
  );
  if (missing.length === 0) return { text, added: [] };
  manifest.devDependencies = { ...listed("devDependencies"), ...Object.fromEntries(missing) };
  const indent = /^[ \t]+(?=")/m.exec(text)?.[0] ?? "  ";
  const newline = text.endsWith("\n") ? "\n" : "";
  return {
    text: `${JSON.stringify(manifest, null, indent)}${newline}`,
    added: missing.map(([name, range]) => `${name}@${range}`),
  };
}

/** npm's rules for a name, from a folder name: lower case, no spaces or leading dot. */
function packageName(folder: string): string {
  const name = folder
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, "-")
    .replace(/^[._-]+/, "");
  return name === "" ? "policies" : name;
}
