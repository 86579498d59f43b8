import { displayLine, type Location } from "../diagnostics.js";

/** A span on one line: where a value or a property name was written. */
export interface Span {
  /** 1-based. */
  line: number;
  /** 1-based, in UTF-16 code units. */
  column: number;
  /** Characters on that line; a span running over lines is cut at the line's end. */
  length: number;
}

export interface Located {
  /** The value itself. */
  value: Span;
  /** The property name, when the value is a property of an object. */
  key?: Span;
}

/** A policy file's text, for turning offsets into spans and spans into located excerpts. */
export class SourceText {
  /** Offset at which each line starts: found when first needed (a policy read without a problem may never be). */
  private starts: number[] | undefined;

  constructor(
    readonly file: string,
    readonly text: string,
  ) {}

  private get lineStarts(): number[] {
    if (this.starts) return this.starts;
    const starts = [0];
    for (let offset = this.text.indexOf("\n"); offset !== -1; offset = this.text.indexOf("\n", offset + 1)) {
      starts.push(offset + 1);
    }
    return (this.starts = starts);
  }

  /** The span of the text between two offsets. */
  span(start: number, end = start): Span {
    const line = this.lineAt(start);
    const lineEnd = this.lineEnd(line);
    const from = Math.min(start, lineEnd);
    return { line, column: from - this.lineStarts[line - 1]! + 1, length: Math.max(0, Math.min(end, lineEnd) - from) };
  }

  /** @span in this file, with its line's text. */
  location(span: Span): Location {
    const lineText = this.lineStarts[span.line - 1] === undefined ? undefined : this.lineText(span.line);
    return { file: this.file, ...span, ...(lineText !== undefined && { lineText }) };
  }

  /** The location of the text between two offsets. */
  locationOf(start: number, end = start): Location {
    return this.location(this.span(start, end));
  }

  private lineText(line: number): string {
    return displayLine(this.text.slice(this.lineStarts[line - 1], this.lineEnd(line)));
  }

  /** Offset of the end of @line, before its line break (and a CR of CRLF). */
  private lineEnd(line: number): number {
    const next = this.lineStarts[line];
    if (next === undefined) return this.text.length;
    return this.text[next - 2] === "\r" ? next - 2 : next - 1;
  }

  /** The 1-based line holding @offset (binary search over line starts). */
  private lineAt(offset: number): number {
    let low = 0;
    let high = this.lineStarts.length - 1;
    while (low < high) {
      const middle = (low + high + 1) >> 1;
      if (this.lineStarts[middle]! <= offset) low = middle;
      else high = middle - 1;
    }
    return low + 1;
  }
}

/**
 * A SourceMap's entries as another thread receives them (structured
 * clone): the pointers, and their spans as numbers, PACKED_FIELDS an entry
 * (the value's line, column and length, then whether a key is recorded,
 * and its line, column and length). A policy has a place for every value
 * it holds; as objects, each is several for the clone to walk on both
 * sides, as numbers one array for a file.
 */
export interface PackedLocations {
  pointers: string[];
  spans: number[];
}

const PACKED_FIELDS = 7;

function packLocations(entries: Map<string, Located>): PackedLocations {
  const pointers: string[] = [];
  const spans: number[] = [];
  for (const [pointer, { value, key }] of entries) {
    pointers.push(pointer);
    spans.push(value.line, value.column, value.length);
    if (key) spans.push(1, key.line, key.column, key.length);
    else spans.push(0, 0, 0, 0);
  }
  return { pointers, spans };
}

function unpackLocations({ pointers, spans }: PackedLocations): Map<string, Located> {
  const entries = new Map<string, Located>();
  pointers.forEach((pointer, i) => {
    const at = i * PACKED_FIELDS;
    const value = { line: spans[at]!, column: spans[at + 1]!, length: spans[at + 2]! };
    const key =
      spans[at + 3] === 1 ? { line: spans[at + 4]!, column: spans[at + 5]!, length: spans[at + 6]! } : undefined;
    entries.set(pointer, { value, ...(key && { key }) });
  });
  return entries;
}

/** Where each value of a loaded policy was written, keyed by JSON pointer. */
export class SourceMap {
  /** The entries; as received packed (SourceMap.unpack) until first looked at, which most never are. */
  private stored: Map<string, Located> | PackedLocations;

  constructor(
    readonly source: SourceText,
    entries: Iterable<[string, Located]> = [],
  ) {
    this.stored = new Map(entries);
  }

  /** A source map of @source holding @packed (from pack(), in another thread). */
  static unpack(source: SourceText, packed: PackedLocations): SourceMap {
    const sourceMap = new SourceMap(source);
    sourceMap.stored = packed;
    return sourceMap;
  }

  get file(): string {
    return this.source.file;
  }

  private get entries(): Map<string, Located> {
    if (!(this.stored instanceof Map)) this.stored = unpackLocations(this.stored);
    return this.stored;
  }

  /** Every recorded place, for caching. */
  toEntries(): [string, Located][] {
    return [...this.entries];
  }

  /** Every recorded place, packed for another thread (unpack). */
  pack(): PackedLocations {
    return this.stored instanceof Map ? packLocations(this.stored) : this.stored;
  }

  get(pointer: string): Located | undefined {
    return this.entries.get(pointer);
  }

  set(pointer: string, located: Located): void {
    this.entries.set(pointer, located);
  }

  /** The nearest recorded span at or above @pointer; the file's start when nothing is. */
  span(pointer: string, part: "key" | "value" = "value"): Span {
    const entries = this.entries;
    for (let current = pointer; ; current = parentPointer(current)) {
      const found = entries.get(current);
      if (found) return (part === "key" && found.key) || found.value;
      if (current === "") return { line: 1, column: 1, length: 0 };
    }
  }

  /** The nearest recorded place at or above @pointer, with its line's text. */
  locate(pointer: string, part: "key" | "value" = "value"): Location {
    return this.source.location(this.span(pointer, part));
  }
}

export function childPointer(pointer: string, segment: string | number): string {
  return `${pointer}/${String(segment).replaceAll("~", "~0").replaceAll("/", "~1")}`;
}

export function parentPointer(pointer: string): string {
  return pointer.slice(0, Math.max(0, pointer.lastIndexOf("/")));
}

/** Whether @pointer is @ancestor or lies below it. */
export function isWithin(pointer: string, ancestor: string): boolean {
  return pointer === ancestor || pointer.startsWith(`${ancestor}/`);
}
