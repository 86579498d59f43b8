/** Where each value of a loaded policy was written, keyed by JSON pointer. */
export interface Position {
  line: number;
  column: number;
}

export interface Located {
  /** The value itself. */
  value: Position;
  /** The property name, when the value is a property of an object. */
  key?: Position;
}

export class SourceMap {
  private readonly entries: Map<string, Located>;

  constructor(entries: Iterable<[string, Located]> = []) {
    this.entries = new Map(entries);
  }

  /** Every recorded place, for caching. */
  toEntries(): [string, Located][] {
    return [...this.entries];
  }

  set(pointer: string, located: Located): void {
    this.entries.set(pointer, located);
  }

  /** The nearest recorded place at or above @pointer; 1:1 when nothing is. */
  locate(pointer: string, part: "key" | "value" = "value"): Position {
    for (let current = pointer; ; current = parentPointer(current)) {
      const found = this.entries.get(current);
      if (found) return (part === "key" && found.key) || found.value;
      if (current === "") return { line: 1, column: 1 };
    }
  }
}

export function childPointer(pointer: string, segment: string | number): string {
  return `${pointer}/${String(segment).replaceAll("~", "~0").replaceAll("/", "~1")}`;
}

function parentPointer(pointer: string): string {
  return pointer.slice(0, Math.max(0, pointer.lastIndexOf("/")));
}
