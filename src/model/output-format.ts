/**
 * The header of every JSON document the CLI prints: `plan --json`,
 * `status --json`, `validate --json`, and an error under `--json`. One
 * version for all of them, "MAJOR.MINOR": a minor version only adds fields,
 * a major one changes or removes some. `kind` says which document it is;
 * each has its JSON Schema in schemas/ (docs/cli.md lists them).
 */
export const FORMAT_VERSION = "1.1";

export type OutputKind = "plan" | "status" | "validate" | "error" | "flow" | "explain";

export function outputHeader<K extends OutputKind>(kind: K): { formatVersion: typeof FORMAT_VERSION; kind: K } {
  return { formatVersion: FORMAT_VERSION, kind };
}
