import { styleText } from "node:util";

/**
 * Diagnostics: problems a user caused, located in their files. The model is
 * esbuild's: a stable code, a location with a span and the line's text,
 * notes pointing at related places, and a suggested replacement. Load and
 * validate produce them, PolicyError carries them, and they are rendered
 * once, at the edge (formatDiagnostics, formatDiagnosticLine, or as JSON).
 */

/** Every diagnostic code and what it means: the one place to look a code up. */
export const DIAGNOSTIC_CODES = {
  "load/not-found": "no file or folder at a path given on the command line",
  "load/unreadable": "the file exists but cannot be read (permissions, I/O)",
  "load/not-a-file": "the path is not a regular file (a device, a FIFO, a socket)",
  "load/not-a-policy":
    "a file named on the command line, or what its symlink resolves to, is not a .ts, .yaml or .yml file",
  "load/symlink-outside": "a symlink in a policy folder leads outside that folder: refused",
  "load/broken-symlink": "a symlink in a policy folder leads to nothing",
  "load/too-large": "the file is larger than a policy can be",
  "load/not-utf8": "the file is not valid UTF-8",
  "load/empty": "the file holds no policy",
  "yaml/syntax": "YAML the parser cannot read",
  "yaml/duplicate-key": "a key written twice in one mapping",
  "yaml/too-deep": "collections nested deeper than any policy needs",
  "yaml/too-many-aliases": "more aliases (*name) than any policy needs",
  "yaml/unknown-alias": "an alias naming no anchor written before it, or inside its own anchor",
  "ts/syntax": "TypeScript the parser cannot read (tsc's number in tsCode)",
  "ts/type-error": "the TypeScript type checker's error (tsc's number in tsCode)",
  "ts/not-data": "code where a policy must have data: calls, expressions, functions, statements",
  "ts/import": 'an import other than definePolicy and types from "intercept-bpf"',
  "ts/no-default-export": "no `export default definePolicy({ … })`",
  "ts/not-const": "a `let` or `var`: a policy's values are consts",
  "ts/unknown-name": "a name that is not a const declared in the same file",
  "ts/too-deep": "values or expressions nested deeper than any policy needs",
  "schema/type": "a value of the wrong type",
  "schema/required": "a required property is missing",
  "schema/unknown-property": "a property the policy format does not have",
  "schema/range": "a number outside its range (ports are 1–65535)",
  "schema/enum": "a value that is not one of the allowed ones",
  "schema/pattern": "a string of the wrong form (policy names)",
  "schema/invalid": "any other schema violation",
  "rule/same-port": "a rule whose port is its originalPort: it would do nothing",
  "rule/no-original-port": "a rule with neither originalPort nor originalPorts: it selects no port",
  "rule/original-port-twice": "a rule with both originalPort and originalPorts",
  "rule/backwards-range": "a port range written LAST-FIRST (the suggestion turns it round)",
  "rule/captures-own-port": "originalPorts names the rule's own port, where its traffic already goes",
  "rule/invalid-cidr": "a source or destination that is not an IPv4 or IPv6 address or CIDR",
  "rule/cidr-host-bits": "a CIDR with host bits set, such as 10.1.2.3/8 (the suggestion is its network form)",
  "rule/family-conflict": "address lists or a family that leave a rule, or one of its entries, no IP family to match",
  "rule/except-outside": "an exceptPorts or exceptSources entry outside what the rule selects: it leaves out nothing",
  "rule/except-swallows": "exceptions that leave out a whole entry, or everything, of what the rule selects",
  "rule/duplicate-original-port": "two rules of one protocol that select the same single port (and no addresses)",
  "rule/overlap": "two rules that can match the same packet (the message names one)",
  "rule/rewrite-many-ports":
    "a rewrite rule that selects more than one port: its replies could not be rewritten back unambiguously",
  "rule/duplicate-target-port": "two rewrite rules send to the same port: replies could not be told apart",
  "rule/chain": "a rewrite rule's port is among the ports of another rule",
  "rule/steer-not-tcp": "strategy steer on a rule that is not tcp",
  "rule/proxy-down-on-rewrite": "onProxyDown on a rewrite rule, which looks up no proxy",
  "outbound/cgroup-path": "an outbound cgroup path that is not relative to the cgroup2 mount, or names its root",
  "outbound/duplicate-cgroup": "a cgroup named twice, or inside another captured cgroup",
  "outbound/exempt-captured": "a cgroup both captured and exempt, or captured inside an exempt one",
  "outbound/no-exemption":
    "an outbound exempt that names no uid, cgroup or mark: the proxy's own connections would loop",
  "outbound/bad-cidr": "a destination CIDR that does not parse, or has host bits set",
  "outbound/captures-proxy":
    "an outbound rule whose originalPort is a proxy port on loopback: it would capture the proxy itself",
  "outbound/overlapping-rules": "two outbound rules capturing the same port and destinations",
  "policy/name-unusable": "the name taken from the file name cannot be used in C identifiers and pin paths",
  "policy/duplicate-name": "two policies with one name",
  "policy/too-large":
    "a policy that expands (YAML aliases, TS consts and spreads) to more than 200,000 values, or whose reading needs more memory than any policy does",
  "policy/too-slow":
    "a policy whose reading (evaluating, type-checking) or validation takes longer than the deadline (5 s)",
  "policy/loopback-interface":
    "interfaces.include names lo: loopback is never intercepted (the proxy's own upstream connection would loop back into it)",
  "report/truncated": "more errors in one file than are shown: the rest are counted",
} as const satisfies Record<string, string>;

export type DiagnosticCode = keyof typeof DIAGNOSTIC_CODES;

/** A place in a file: where a diagnostic or one of its notes points. */
export interface Location {
  file: string;
  /** 1-based. */
  line: number;
  /** 1-based, in UTF-16 code units (as tsc and editors count). */
  column: number;
  /** Characters underlined from column on the same line; 0 points between two characters. */
  length: number;
  /**
   * The source line, cut to MAX_LINE_TEXT characters and stripped of control
   * characters. Absent where the file's text must not be shown (it could
   * not be read, or it is not a policy at all).
   */
  lineText?: string;
}

/** A related place, e.g. "first intercepted here" at the earlier rule. */
export interface DiagnosticNote extends Location {
  message: string;
}

export interface Diagnostic extends Location {
  code: DiagnosticCode;
  severity: "error";
  message: string;
  notes?: DiagnosticNote[];
  /** Replacement text for the span, e.g. `originalPort` for a misspelt property. */
  suggestion?: string;
  /** tsc's own error number (TS2322 → 2322), for ts/syntax and ts/type-error. */
  tsCode?: number;
}

/** Errors shown per file before the rest are only counted: a hostile file cannot flood a terminal. */
export const MAX_DIAGNOSTICS_PER_FILE = 20;
/** A value quoted from a file in a message is cut to this many characters. */
export const MAX_QUOTED_CHARS = 40;
/** Source lines are shown up to this many characters. */
export const MAX_LINE_TEXT = 120;
/** Longer messages (tsc's can quote whole types) are cut. */
const MAX_MESSAGE_CHARS = 300;

/**
 * Control characters (an ESC would let a file drive the terminal) and bidi
 * overrides (which make a line read differently than it is): each shown as
 * U+FFFD, so columns still line up.
 */
// eslint-disable-next-line no-control-regex
const UNPRINTABLE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

/**
 * A value from a file, JSON-quoted (so escapes show) and cut to
 * MAX_QUOTED_CHARS. JSON leaves C1 controls (U+009B is a CSI) and bidi
 * overrides as they are: they are escaped too.
 */
export function quoted(value: string, max = MAX_QUOTED_CHARS): string {
  const json = JSON.stringify(value.length > max ? `${value.slice(0, max)}…` : value);
  return json.replace(UNPRINTABLE, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** Source text for a message between backticks, on one line and cut to MAX_QUOTED_CHARS. */
export function excerpt(text: string, max = MAX_QUOTED_CHARS): string {
  const flat = text.replace(/\s+/g, " ");
  return flat.length > max ? `${flat.slice(0, max)}…` : flat;
}

/** A source line as diagnostics carry it: printable and bounded. */
export function displayLine(line: string): string {
  const printable = line.replaceAll("\t", " ").replace(UNPRINTABLE, "\uFFFD");
  return printable.length > MAX_LINE_TEXT ? `${printable.slice(0, MAX_LINE_TEXT)}…` : printable;
}

/** Sorted by file, then position, then code and message, so output is stable. */
export function sortDiagnostics(diagnostics: readonly Diagnostic[]): Diagnostic[] {
  return [...diagnostics].sort(
    (a, b) =>
      a.file.localeCompare(b.file) ||
      a.line - b.line ||
      a.column - b.column ||
      a.code.localeCompare(b.code) ||
      a.message.localeCompare(b.message),
  );
}

/**
 * What every output shows: sorted, exact repeats dropped, messages made
 * printable and bounded, and at most MAX_DIAGNOSTICS_PER_FILE per file,
 * followed by one report/truncated diagnostic counting the rest.
 */
export function reportableDiagnostics(diagnostics: readonly Diagnostic[]): Diagnostic[] {
  const seen = new Set<string>();
  const byFile = new Map<string, Diagnostic[]>();
  for (const diagnostic of sortDiagnostics(diagnostics)) {
    const key = JSON.stringify([
      diagnostic.file,
      diagnostic.line,
      diagnostic.column,
      diagnostic.code,
      diagnostic.message,
    ]);
    if (seen.has(key)) continue;
    seen.add(key);
    byFile.set(diagnostic.file, [...(byFile.get(diagnostic.file) ?? []), diagnostic]);
  }
  return [...byFile.values()].flatMap((inFile) => {
    const shown = inFile.slice(0, MAX_DIAGNOSTICS_PER_FILE).map(printable);
    const hidden = inFile.length - shown.length;
    if (hidden === 0) return shown;
    const { file, line, column } = inFile[MAX_DIAGNOSTICS_PER_FILE]!;
    const message = `…and ${hidden} more error${hidden === 1 ? "" : "s"} in this file`;
    return [
      ...shown,
      { code: "report/truncated", severity: "error", file, line, column, length: 0, message } satisfies Diagnostic,
    ];
  });
}

function printable(diagnostic: Diagnostic): Diagnostic {
  const bound = (message: string) => {
    const clean = message.replace(UNPRINTABLE, "\uFFFD");
    return clean.length > MAX_MESSAGE_CHARS ? `${clean.slice(0, MAX_MESSAGE_CHARS)}…` : clean;
  };
  return {
    ...diagnostic,
    message: bound(diagnostic.message),
    ...(diagnostic.notes && { notes: diagnostic.notes.map((note) => ({ ...note, message: bound(note.message) })) }),
    ...(diagnostic.suggestion !== undefined && { suggestion: bound(diagnostic.suggestion) }),
  };
}

/**
 * One line per diagnostic, `FILE:LINE:COL: error[CODE]: MESSAGE`, with the
 * suggestion and the notes' places appended: for logs (the agent's).
 */
export function formatDiagnosticLine(diagnostic: Diagnostic): string {
  const notes = (diagnostic.notes ?? []).map((note) => `; note: ${note.message} (${place(note)})`).join("");
  const suggestion = diagnostic.suggestion === undefined ? "" : ` (did you mean \`${diagnostic.suggestion}\`?)`;
  return `${place(diagnostic)}: error[${diagnostic.code}]: ${diagnostic.message}${tsNumber(diagnostic)}${suggestion}${notes}`;
}

type Style = "red" | "cyan" | "green" | "bold" | "dim";

/**
 * Every diagnostic as tsc and esbuild print them: the located header, the
 * source line with the span underlined, then the notes (each located, with
 * its own line) and the suggestion. Sorted and bounded (reportableDiagnostics);
 * a blank line between diagnostics; "" when there are none.
 */
export function formatDiagnostics(diagnostics: readonly Diagnostic[], options: { colour: boolean }): string {
  // The caller decided (a terminal on stderr, no NO_COLOR): styleText is not to second-guess it from stdout.
  const paint = (style: Style, text: string) =>
    options.colour ? styleText(style, text, { validateStream: false }) : text;
  return reportableDiagnostics(diagnostics)
    .map((diagnostic) => {
      const header = `${paint("bold", place(diagnostic))}: ${paint("red", `error[${diagnostic.code}]`)}: ${paint("bold", `${diagnostic.message}${tsNumber(diagnostic)}`)}`;
      const lines = [header, ...sourceExcerpt(diagnostic, "", paint("red", "^"), (tail) => paint("red", tail))];
      for (const note of diagnostic.notes ?? []) {
        lines.push(`  ${paint("bold", place(note))}: ${paint("cyan", "note")}: ${note.message}`);
        lines.push(...sourceExcerpt(note, "  ", paint("cyan", "^"), (tail) => paint("cyan", tail)));
      }
      if (diagnostic.suggestion !== undefined)
        lines.push(`  ${paint("green", "help")}: did you mean \`${diagnostic.suggestion}\`?`);
      return `${lines.join("\n")}\n`;
    })
    .join("\n");
}

function place(location: Location): string {
  return `${location.file}:${location.line}:${location.column}`;
}

function tsNumber(diagnostic: Diagnostic): string {
  return diagnostic.tsCode === undefined ? "" : ` (TS${diagnostic.tsCode})`;
}

/**
 * `  4 | the line` and `    |     ^~~~`. Nothing when the line is not carried,
 * or the column lies past the part of it that is (a cut long line).
 */
function sourceExcerpt(location: Location, indent: string, caret: string, tilde: (tail: string) => string): string[] {
  if (location.lineText === undefined) return [];
  const visible =
    location.lineText.endsWith("…") && location.lineText.length > MAX_LINE_TEXT
      ? MAX_LINE_TEXT
      : location.lineText.length;
  const start = location.column - 1;
  if (start > visible) return [];
  const underline = Math.max(0, Math.min(location.length, visible - start) - 1);
  const number = String(location.line);
  const gutter = " ".repeat(number.length);
  return [
    `${indent}  ${number} | ${location.lineText}`,
    `${indent}  ${gutter} | ${" ".repeat(start)}${caret}${underline > 0 ? tilde("~".repeat(underline)) : ""}`,
  ];
}

/** A diagnostic of @code at @location. */
export function diagnosticAt(
  code: DiagnosticCode,
  location: Location,
  message: string,
  extra: Pick<Diagnostic, "notes" | "suggestion" | "tsCode"> = {},
): Diagnostic {
  return { code, severity: "error", ...location, message, ...extra };
}

/** The start of @file, without its text: for problems with the file as a whole. */
export function startOf(file: string): Location {
  return { file, line: 1, column: 1, length: 0 };
}
