import {
  Composer,
  isAlias,
  isMap,
  isPair,
  isScalar,
  isSeq,
  Lexer,
  Parser,
  Schema,
  type CST,
  type Document,
  type Node,
  type Scalar,
  type YAMLError,
} from "yaml";
import { diagnosticAt, excerpt, quoted, type Diagnostic, type DiagnosticCode } from "../diagnostics.js";
import { MAX_NESTING_DEPTH, MAX_POLICY_VALUES, MAX_YAML_ALIASES } from "./limits.js";
import { childPointer, SourceMap, type SourceText } from "./source-map.js";

/** Parses a YAML policy, keeping where every node was written. */
export function loadYamlPolicy(source: SourceText): {
  value: unknown;
  sourceMap: SourceMap;
  diagnostics: Diagnostic[];
} {
  const sourceMap = new SourceMap(source);
  const parsed = parseBounded(source);
  if ("error" in parsed) return { value: undefined, sourceMap, diagnostics: [parsed.error] };
  const { document } = parsed;
  const diagnostics = [...document.errors, ...document.warnings].map((problem) =>
    yamlProblem(source, document, problem),
  );
  if (diagnostics.length > 0) return { value: undefined, sourceMap, diagnostics };
  if (document.contents) recordPositions(document.contents as Node, "", sourceMap);
  const structureProblem = checkStructure(source, document);
  if (structureProblem) return { value: undefined, sourceMap, diagnostics: [structureProblem] };
  // Expansion is bounded by checkStructure above, which (unlike yaml's own
  // maxAliasCount heuristic) says where; yaml's check would only throw.
  return { value: document.toJS({ maxAliasCount: -1 }), sourceMap, diagnostics };
}

/**
 * yaml's composer recurses once per nesting level and runs out of stack on a
 * deep file; its CST parser does not. So the CST is built first, lexeme by
 * lexeme, stopping at the first collection nested deeper than
 * MAX_NESTING_DEPTH, and only a bounded CST is composed into a document.
 */
function parseBounded(source: SourceText): { document: Document.Parsed } | { error: Diagnostic } {
  const parser = new Parser();
  const tokens: CST.Token[] = [];
  for (const lexeme of new Lexer().lex(source.text)) {
    tokens.push(...parser.next(lexeme));
    if (collectionDepth(parser.stack) > MAX_NESTING_DEPTH) {
      const at = source.locationOf(parser.offset - lexeme.length, parser.offset);
      return {
        error: diagnosticAt(
          "yaml/too-deep",
          at,
          `collections nested more than ${MAX_NESTING_DEPTH} levels deep: a policy needs a few`,
        ),
      };
    }
  }
  tokens.push(...parser.end());
  const documents = [...composerFor(source.text).compose(tokens, true, source.text.length)];
  const [document, second] = documents;
  if (!document) throw new Error("yaml composed no document from a whole source");
  if (second) {
    const at = source.locationOf(second.range[0], second.range[1]);
    return { error: diagnosticAt("yaml/syntax", at, "a policy file holds one YAML document; this is a second one") };
  }
  return { document };
}

/**
 * The YAML 1.2 core schema, made once for the documents it can serve:
 * yaml makes one for each document otherwise, a cost a repository of many
 * small files pays many times. A document that may hold a directive (`%`:
 * `%YAML 1.1` picks another schema) or a tag (`!`: resolving a known tag
 * adds it to the document's schema) gets a schema of its own, as before.
 */
const CORE_SCHEMA = new Schema({ schema: "core", resolveKnownTags: true });

function composerFor(text: string): Composer {
  const ownSchema = text.includes("%") || text.includes("!");
  return new Composer({ uniqueKeys: true, ...(!ownSchema && { schema: CORE_SCHEMA }) });
}

function collectionDepth(stack: readonly CST.Token[]): number {
  return stack.filter(
    (token) => token.type === "block-map" || token.type === "block-seq" || token.type === "flow-collection",
  ).length;
}

function yamlProblem(source: SourceText, document: Document.Parsed, problem: YAMLError): Diagnostic {
  const message = problem.message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, "");
  if (problem.code !== "DUPLICATE_KEY") {
    return diagnosticAt("yaml/syntax", source.locationOf(problem.pos[0], problem.pos[1]), message);
  }
  const [duplicate, first] = duplicateKeyAt(document, problem.pos[0]) ?? [];
  if (!duplicate || !first)
    return diagnosticAt("yaml/duplicate-key", source.locationOf(problem.pos[0], problem.pos[1]), message);
  const name = quoted(String(duplicate.value));
  return diagnosticAt("yaml/duplicate-key", spanOf(source, duplicate), `key ${name} is written twice in this mapping`, {
    notes: [{ ...spanOf(source, first), message: `first written here` }],
  });
}

/** The duplicate key at @offset and the first key of the same name in its mapping. */
function duplicateKeyAt(document: Document.Parsed, offset: number): [Scalar, Scalar] | undefined {
  const pending: unknown[] = [document.contents];
  while (pending.length > 0) {
    const node = pending.pop();
    if (isSeq(node)) pending.push(...node.items);
    if (!isMap(node)) continue;
    const seen = new Map<unknown, Scalar>();
    for (const pair of node.items) {
      pending.push(pair.value);
      if (!isScalar(pair.key)) continue;
      const first = seen.get(pair.key.value);
      if (first && pair.key.range?.[0] === offset) return [pair.key, first];
      if (!first) seen.set(pair.key.value, pair.key);
    }
  }
  return undefined;
}

function spanOf(source: SourceText, node: Node) {
  return source.location(nodeSpan(source, node));
}

/**
 * What yaml's toJS would mishandle, found without expanding anything: a key
 * that is not a plain value, and aliases beyond bounds: more than
 * MAX_YAML_ALIASES of them (yaml resolves each by walking the document), one
 * naming no anchor before it or sitting inside its own, or all together
 * expanding the document to more than MAX_POLICY_VALUES values (an alias
 * bomb expands to billions). Sizes are counted in document order, so the
 * alias that crosses a bound is the one named.
 */
function checkStructure(source: SourceText, document: Document.Parsed): Diagnostic | undefined {
  const anchors = new Map<string, Node>();
  const sizes = new Map<Node, number>();
  let aliases = 0;
  let expanded = 0;
  let problem: Diagnostic | undefined;
  const fail = (code: DiagnosticCode, node: Node, message: string) => {
    problem = diagnosticAt(code, spanOf(source, node), message);
    return 0;
  };
  // Recursion follows nesting, which parseBounded has bounded; aliases are looked up, not followed.
  const sizeOf = (node: unknown): number => {
    if (problem || !node) return 0;
    if (isAlias(node)) {
      aliases += 1;
      if (aliases > MAX_YAML_ALIASES)
        return fail("yaml/too-many-aliases", node, `more than ${MAX_YAML_ALIASES} aliases: a policy needs a few`);
      const target = anchors.get(node.source);
      if (!target)
        return fail("yaml/unknown-alias", node, `alias *${excerpt(node.source)} names no anchor written before it`);
      const size = sizes.get(target);
      if (size === undefined)
        return fail("yaml/unknown-alias", node, `alias *${excerpt(node.source)} is inside its own anchor`);
      expanded += size;
      if (expanded > MAX_POLICY_VALUES) {
        return fail(
          "policy/too-large",
          node,
          `aliases expand this file to more than ${MAX_POLICY_VALUES} values (an alias bomb?)`,
        );
      }
      return size;
    }
    if (isPair(node)) {
      // A list or mapping as a key cannot be a JS object's key: yaml would stringify it, with a process warning echoing it whole.
      if (node.key !== null && !isScalar(node.key)) {
        return fail(
          "yaml/syntax",
          node.key as Node,
          "a key must be written out as a plain value, not a list, a mapping or an alias",
        );
      }
      return sizeOf(node.key) + sizeOf(node.value);
    }
    const anchor = (node as Node).anchor;
    if (anchor) anchors.set(anchor, node as Node);
    expanded += 1;
    let size = 1;
    if (isMap(node) || isSeq(node)) for (const item of node.items) size += sizeOf(item);
    sizes.set(node as Node, size);
    return size;
  };
  sizeOf(document.contents);
  return problem;
}

function recordPositions(node: Node, pointer: string, sourceMap: SourceMap, key?: Node): void {
  const source = sourceMap.source;
  sourceMap.set(pointer, { value: nodeSpan(source, node), ...(key && { key: nodeSpan(source, key) }) });
  if (isMap(node)) {
    for (const pair of node.items) {
      if (!isPair(pair) || !isScalar(pair.key) || !pair.value) continue;
      recordPositions(pair.value as Node, childPointer(pointer, String(pair.key.value)), sourceMap, pair.key);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, index) => {
      if (item) recordPositions(item as Node, childPointer(pointer, index), sourceMap);
    });
  }
}

/** A node's span: from its start to the end of its value, cut at the end of that line. */
function nodeSpan(source: SourceText, node: Node) {
  const [start, end] = node.range ?? [0, 0];
  return source.span(start, end);
}
