/** A problem a user caused, located in one of their files. Rendered once, at the edge. */
export interface Diagnostic {
  file: string;
  line: number;
  column: number;
  message: string;
}

/** `FILE:LINE:COL: error: MESSAGE`, the format of tsc and most compilers. */
export function formatDiagnostic(diagnostic: Diagnostic): string {
  return `${diagnostic.file}:${diagnostic.line}:${diagnostic.column}: error: ${diagnostic.message}`;
}

/** Sorted by file, then position, then message, so output is stable. */
export function sortDiagnostics(diagnostics: Diagnostic[]): Diagnostic[] {
  return [...diagnostics].sort(
    (a, b) =>
      a.file.localeCompare(b.file) ||
      a.line - b.line ||
      a.column - b.column ||
      a.message.localeCompare(b.message),
  );
}
