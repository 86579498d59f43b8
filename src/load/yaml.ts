import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, type Node } from "yaml";
import type { Diagnostic } from "../diagnostics.js";
import { childPointer, SourceMap } from "./source-map.js";

/** Parses a YAML policy, keeping where every node was written. */
export function loadYamlPolicy(file: string, text: string) {
  const lineCounter = new LineCounter();
  const document = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
  const position = (offset: number) => {
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };
  const diagnostics: Diagnostic[] = [...document.errors, ...document.warnings].map((problem) => ({
    file,
    ...position(problem.pos[0]),
    message: firstLine(problem.message),
  }));
  const sourceMap = new SourceMap();
  if (document.contents) recordPositions(document.contents, "", sourceMap, position);
  const value = diagnostics.length === 0 ? document.toJS({ maxAliasCount: 100 }) : undefined;
  return { value, sourceMap, diagnostics };
}

function recordPositions(
  node: Node,
  pointer: string,
  sourceMap: SourceMap,
  position: (offset: number) => { line: number; column: number },
  key?: { line: number; column: number },
): void {
  sourceMap.set(pointer, { value: position(node.range?.[0] ?? 0), ...(key && { key }) });
  if (isMap(node)) {
    for (const pair of node.items) {
      if (!isPair(pair) || !isScalar(pair.key) || !pair.value) continue;
      const keyPosition = position(pair.key.range?.[0] ?? 0);
      const child = childPointer(pointer, String(pair.key.value));
      recordPositions(pair.value as Node, child, sourceMap, position, keyPosition);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, index) => {
      if (item) recordPositions(item as Node, childPointer(pointer, index), sourceMap, position);
    });
  }
}

/** The yaml package appends a code excerpt after the first line. */
function firstLine(message: string): string {
  return message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, "");
}
