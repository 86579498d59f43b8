import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import {
  Node,
  Project,
  SyntaxKind,
  ts,
  type Diagnostic as TsDiagnostic,
  type Expression,
  type SourceFile,
  type VariableDeclaration,
} from "ts-morph";
import { diagnosticAt, excerpt, startOf, type Diagnostic, type DiagnosticCode } from "../diagnostics.js";
import { MAX_NESTING_DEPTH, MAX_POLICY_VALUES } from "./limits.js";
import { childPointer, SourceMap, type SourceText } from "./source-map.js";

/** The module a policy imports definePolicy and its types from: the package's name. */
const API_MODULE = "intercept-bpf";
/**
 * The name the package had before it was published as intercept-bpf
 * (`intercept` on the registry is someone else's): policies written then
 * still load. A user's own tsc resolves it only if they alias it.
 */
const LEGACY_API_MODULE = "intercept";
const API_MODULES: readonly string[] = [API_MODULE, LEGACY_API_MODULE];
/**
 * The declarations generated from src/api.ts: the very file a user's own
 * tsc and editor resolve `intercept-bpf` to, here and in an installed package.
 */
const API_DECLARATIONS = fileURLToPath(new URL("../api.d.ts", import.meta.url));

export interface TypeScriptLoad {
  value: unknown;
  sourceMap: SourceMap;
  /** Problems that are final: syntax, and code where data must be. */
  diagnostics: Diagnostic[];
  /** Where the value could not be read (see LoadedPolicy). */
  holes: string[];
  openObjects: string[];
  /** tsc's errors, except those inside code already reported as not data. */
  typeErrors: Diagnostic[];
}

/**
 * Reads a TypeScript policy without running it: the default export is
 * evaluated as a literal (objects, arrays, strings, numbers, booleans,
 * `as const`, `satisfies`, same-file consts, shorthands, spreads and the
 * definePolicy call). Anything else is a located error, and the file is
 * type-checked against the Policy type. A file with syntax errors is not
 * evaluated: what the parser made of it is a guess. @progress is told as
 * evaluation and then type-checking begin, so that a deadline can say which
 * one it stopped.
 */
export function loadTypeScriptPolicy(
  source: SourceText,
  progress: (phase: "evaluating" | "type-checking") => void,
): TypeScriptLoad {
  progress("evaluating");
  const sourceMap = new SourceMap(source);
  const failed = (diagnostics: Diagnostic[]): TypeScriptLoad => ({
    value: undefined,
    sourceMap,
    diagnostics,
    holes: [],
    openObjects: [],
    typeErrors: [],
  });
  const tooDeep = checkBracketNesting(source);
  if (tooDeep) return failed([tooDeep]);
  try {
    const sourceFile = createPolicyProject(source.text);
    const syntax = sourceFile.getProject().getProgram().getSyntacticDiagnostics(sourceFile);
    if (syntax.length > 0) return failed(syntax.map((diagnostic) => fromTsc(source, diagnostic, "ts/syntax")));
    const evaluator = new PolicyEvaluator(source, sourceFile, sourceMap);
    const value = evaluator.evaluateFile();
    progress("type-checking");
    const typeErrors = sourceFile
      .getPreEmitDiagnostics()
      .filter((diagnostic) => !evaluator.isRejected(diagnostic.getStart()))
      .map((diagnostic) => fromTsc(source, diagnostic, "ts/type-error"));
    const inPolicy = (pointer: string) => !pointer.startsWith(UNUSED);
    return {
      value,
      sourceMap,
      diagnostics: evaluator.diagnostics,
      holes: [...evaluator.holes].filter(inPolicy),
      openObjects: [...evaluator.openObjects].filter(inPolicy),
      typeErrors,
    };
  } catch (error) {
    // The TypeScript compiler recurses once per nested expression. Brackets
    // are bounded above, but a chain of ternaries or arrows has none; the
    // compiler then runs out of stack, which says no more than where it gave up.
    if (!(error instanceof RangeError && /call stack/.test(error.message))) throw error;
    return failed([
      diagnosticAt(
        "ts/too-deep",
        startOf(source.file),
        "expressions nested too deeply for the TypeScript compiler: a policy needs a few levels",
      ),
    ]);
  }
}

/**
 * The first bracket ((, [, { or a template's ${) opened deeper than
 * MAX_NESTING_DEPTH, found with the compiler's scanner (which, unlike its
 * parser, does not recurse), before the parser could run out of stack on it.
 */
function checkBracketNesting(source: SourceText): Diagnostic | undefined {
  const scanner = ts.createScanner(ts.ScriptTarget.Latest, true, ts.LanguageVariant.Standard, source.text);
  const open: SyntaxKind[] = [];
  for (let token = scanner.scan(); token !== SyntaxKind.EndOfFileToken; token = scanner.scan()) {
    if (token === SyntaxKind.CloseBraceToken && open.at(-1) === SyntaxKind.TemplateHead) {
      token = scanner.reScanTemplateToken(false);
      if (token === SyntaxKind.TemplateTail) open.pop();
      continue;
    }
    if (
      token === SyntaxKind.OpenParenToken ||
      token === SyntaxKind.OpenBracketToken ||
      token === SyntaxKind.OpenBraceToken ||
      token === SyntaxKind.TemplateHead
    ) {
      open.push(token);
      if (open.length > MAX_NESTING_DEPTH) {
        const at = source.locationOf(scanner.getTokenStart(), scanner.getTokenEnd());
        return diagnosticAt(
          "ts/too-deep",
          at,
          `brackets nested more than ${MAX_NESTING_DEPTH} levels deep: a policy needs a few`,
        );
      }
    } else if (
      token === SyntaxKind.CloseParenToken ||
      token === SyntaxKind.CloseBracketToken ||
      token === SyntaxKind.CloseBraceToken
    ) {
      open.pop();
    }
  }
  return undefined;
}

function createPolicyProject(text: string): SourceFile {
  const project = new Project({
    useInMemoryFileSystem: true,
    compilerOptions: {
      strict: true,
      noEmit: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.ESNext,
      moduleResolution: ts.ModuleResolutionKind.Bundler,
      lib: ["lib.es2022.d.ts"],
      types: [],
    },
  });
  const declarations = readFileSync(API_DECLARATIONS, "utf8");
  for (const module of API_MODULES) project.createSourceFile(`/node_modules/${module}/index.d.ts`, declarations);
  return project.createSourceFile("/policy/policy.ts", text);
}

/** A tsc diagnostic as ours: its number kept, its quoted source text cut short. */
function fromTsc(source: SourceText, diagnostic: TsDiagnostic, code: DiagnosticCode): Diagnostic {
  const start = diagnostic.getStart();
  const location =
    start === undefined ? startOf(source.file) : source.locationOf(start, start + (diagnostic.getLength() ?? 0));
  const message = ts
    .flattenDiagnosticMessageText(diagnostic.compilerObject.messageText, " ")
    .replace(/\s+/g, " ")
    .replace(/'([^']*)'/g, (_, quotedText: string) => `'${excerpt(quotedText)}'`);
  return diagnosticAt(code, location, message, { tsCode: diagnostic.getCode() });
}

/** Where unused consts are evaluated: not a JSON pointer, so no value of the policy is recorded over. */
const UNUSED = "#unused";

class PolicyEvaluator {
  readonly diagnostics: Diagnostic[] = [];
  /** Pointers whose value could not be read, and objects or lists with members that could not. */
  readonly holes = new Set<string>();
  readonly openObjects = new Set<string>();
  private readonly constants = new Map<string, VariableDeclaration>();
  private readonly evaluated = new Set<VariableDeclaration>();
  private readonly apiImports = new Set<string>();
  private readonly resolving = new Set<string>();
  /** The const references being evaluated, outermost first. */
  private readonly references: Node[] = [];
  /** Source ranges reported as not data: tsc's complaints inside them repeat ours. */
  private readonly rejected: [number, number][] = [];
  private depth = 0;
  private values = 0;
  private stopped = false;
  /** What each node expands to, counted without building it (expandedSize); the nodes being counted. */
  private readonly sizes = new Map<Node, number>();
  private readonly sizing = new Set<Node>();

  constructor(
    private readonly source: SourceText,
    private readonly sourceFile: SourceFile,
    readonly sourceMap: SourceMap,
  ) {}

  evaluateFile(): unknown {
    let exported: Expression | undefined;
    for (const statement of this.sourceFile.getStatements()) {
      if (Node.isExportAssignment(statement) && !statement.isExportEquals()) {
        exported = statement.getExpression();
      } else {
        this.declare(statement);
      }
    }
    const value = exported ? this.evaluate(exported, "") : undefined;
    // Every const is checked, used or not: a call hidden in one is still code.
    for (const declaration of this.constants.values()) {
      if (!this.evaluated.has(declaration)) this.evaluateConst(declaration, UNUSED);
    }
    if (!exported)
      this.report(this.sourceFile, "ts/no-default-export", "a policy file needs `export default definePolicy({ … })`");
    return value;
  }

  /** Whether @offset lies in code already reported (a problem with no place, tsc's global ones, never does). */
  isRejected(offset: number | undefined): boolean {
    return offset !== undefined && this.rejected.some(([start, end]) => offset >= start && offset < end);
  }

  /** Accepts the statements a data file may contain; reports the rest. */
  private declare(statement: Node): void {
    if (Node.isImportDeclaration(statement)) {
      this.declareImport(statement);
    } else if (Node.isVariableStatement(statement)) {
      if (statement.getDeclarationKind() !== "const") {
        this.report(statement, "ts/not-const", "use `const`: a policy's values never change");
      }
      for (const declaration of statement.getDeclarations()) {
        this.constants.set(declaration.getName(), declaration);
      }
    } else if (
      !Node.isInterfaceDeclaration(statement) &&
      !Node.isTypeAliasDeclaration(statement) &&
      !Node.isEmptyStatement(statement)
    ) {
      this.report(
        statement,
        "ts/not-data",
        `${describe(statement)} is not allowed at the top level: policies are data`,
      );
    }
  }

  private declareImport(statement: import("ts-morph").ImportDeclaration): void {
    if (statement.isTypeOnly()) return;
    const from = statement.getModuleSpecifierValue();
    const named = statement.getNamedImports();
    if (
      !API_MODULES.includes(from) ||
      statement.getDefaultImport() ||
      statement.getNamespaceImport() ||
      named.length === 0
    ) {
      this.report(
        statement,
        "ts/import",
        `only \`import { definePolicy } from "${API_MODULE}"\` and type imports are allowed`,
      );
      return;
    }
    for (const specifier of named) {
      if (!specifier.isTypeOnly()) this.apiImports.add(specifier.getAliasNode()?.getText() ?? specifier.getName());
    }
  }

  /**
   * The value of @node, recorded at @pointer. Bounded: nesting (literals
   * and const references together) to MAX_NESTING_DEPTH, and all values
   * evaluated to MAX_POLICY_VALUES (consts referring to consts many times
   * over expand like a YAML alias bomb). Each bound is reported once.
   */
  private evaluate(node: Node, pointer: string, key?: Node): unknown {
    if (this.stopped) return this.hole(pointer);
    if (this.depth >= MAX_NESTING_DEPTH) {
      this.stopped = true;
      this.report(
        node,
        "ts/too-deep",
        `values nested more than ${MAX_NESTING_DEPTH} levels deep (counting const references): a policy needs a few`,
      );
      return this.hole(pointer);
    }
    if (++this.values > MAX_POLICY_VALUES) {
      this.stopped = true;
      // Named at the outermost const reference on the way here: the one that expands.
      this.report(
        this.references[0] ?? node,
        "policy/too-large",
        `consts expand this policy to more than ${MAX_POLICY_VALUES} values`,
      );
      return this.hole(pointer);
    }
    this.depth += 1;
    const reported = this.diagnostics.length;
    try {
      const value = this.evaluateNode(node, pointer, key);
      if (value === undefined && this.diagnostics.length > reported) this.holes.add(pointer);
      return value;
    } finally {
      this.depth -= 1;
    }
  }

  private hole(pointer: string): undefined {
    this.holes.add(pointer);
    return undefined;
  }

  private evaluateNode(node: Node, pointer: string, key?: Node): unknown {
    const inner = unwrap(node);
    if (!Node.isIdentifier(inner)) this.record(inner, pointer, key);
    if (Node.isObjectLiteralExpression(inner)) return this.evaluateObject(inner, pointer);
    if (Node.isArrayLiteralExpression(inner)) return this.evaluateArray(inner, pointer);
    if (Node.isStringLiteral(inner) || Node.isNoSubstitutionTemplateLiteral(inner)) return inner.getLiteralValue();
    if (Node.isNumericLiteral(inner)) return inner.getLiteralValue();
    if (Node.isPrefixUnaryExpression(inner)) return this.evaluateSigned(inner);
    if (Node.isTrueLiteral(inner)) return true;
    if (Node.isFalseLiteral(inner)) return false;
    if (Node.isNullLiteral(inner)) return null;
    if (Node.isIdentifier(inner)) return this.evaluateIdentifier(inner, pointer, key);
    if (Node.isCallExpression(inner)) return this.evaluateCall(inner, pointer);
    return this.report(inner, "ts/not-data", `${describe(inner)} is not allowed in a policy: policies are data`);
  }

  private evaluateObject(
    node: import("ts-morph").ObjectLiteralExpression,
    pointer: string,
    into: Record<string, unknown> = {},
  ) {
    for (const property of node.getProperties()) {
      if (this.stopped) return this.unfinished(pointer, into);
      if (Node.isPropertyAssignment(property)) {
        const nameNode = property.getNameNode();
        if (Node.isComputedPropertyName(nameNode)) {
          this.openObjects.add(pointer);
          this.report(
            nameNode,
            "ts/not-data",
            "computed property names are not allowed in a policy: policies are data",
          );
          continue;
        }
        const name =
          Node.isStringLiteral(nameNode) || Node.isNumericLiteral(nameNode)
            ? String(nameNode.getLiteralValue())
            : nameNode.getText();
        define(into, name, this.evaluate(property.getInitializerOrThrow(), childPointer(pointer, name), nameNode));
      } else if (Node.isShorthandPropertyAssignment(property)) {
        const name = property.getName();
        define(into, name, this.evaluate(property.getNameNode(), childPointer(pointer, name), property.getNameNode()));
      } else if (Node.isSpreadAssignment(property)) {
        if (!this.mayExpand(property)) return this.unfinished(pointer, into);
        const spread = this.resolveLiteral(property.getExpression());
        if (Node.isObjectLiteralExpression(spread)) this.evaluateObject(spread, pointer, into);
        else {
          this.openObjects.add(pointer);
          if (spread) this.report(property, "ts/not-data", "only objects written in this file can be spread here");
        }
      } else {
        this.openObjects.add(pointer);
        this.report(property, "ts/not-data", `${describe(property)} is not allowed in a policy: policies are data`);
      }
    }
    return into;
  }

  private evaluateArray(node: import("ts-morph").ArrayLiteralExpression, pointer: string, into: unknown[] = []) {
    for (const element of node.getElements()) {
      if (this.stopped) return this.unfinished(pointer, into);
      if (Node.isSpreadElement(element)) {
        if (!this.mayExpand(element)) return this.unfinished(pointer, into);
        const spread = this.resolveLiteral(element.getExpression());
        if (Node.isArrayLiteralExpression(spread)) this.evaluateArray(spread, pointer, into);
        else {
          this.openObjects.add(pointer);
          if (spread) this.report(element, "ts/not-data", "only arrays written in this file can be spread here");
        }
      } else if (Node.isOmittedExpression(element)) {
        this.openObjects.add(pointer);
        this.report(element, "ts/not-data", "holes are not allowed in a policy's arrays");
      } else {
        into.push(this.evaluate(element, childPointer(pointer, into.length)));
      }
    }
    return into;
  }

  private evaluateSigned(node: import("ts-morph").PrefixUnaryExpression) {
    const operand = unwrap(node.getOperand());
    const operator = node.getOperatorToken();
    if (Node.isNumericLiteral(operand) && (operator === SyntaxKind.MinusToken || operator === SyntaxKind.PlusToken)) {
      const magnitude = operand.getLiteralValue();
      return operator === SyntaxKind.MinusToken ? -magnitude : magnitude;
    }
    return this.report(
      node,
      "ts/not-data",
      `the expression \`${excerpt(node.getText())}\` is not allowed in a policy: write the value`,
    );
  }

  private evaluateIdentifier(node: import("ts-morph").Identifier, pointer: string, key?: Node): unknown {
    const name = node.getText();
    const declaration = this.constants.get(name);
    if (!declaration) {
      const why = this.apiImports.has(name) ? "is a function, not a value" : "is not a const declared in this file";
      return this.report(node, "ts/unknown-name", `\`${excerpt(name)}\` ${why}`);
    }
    if (key) this.record(node, pointer, key);
    if (!this.mayExpand(node)) return this.hole(pointer);
    this.references.push(node);
    try {
      return this.evaluateConst(declaration, pointer);
    } finally {
      this.references.pop();
    }
  }

  private evaluateConst(declaration: VariableDeclaration, pointer: string): unknown {
    this.evaluated.add(declaration);
    const name = excerpt(declaration.getName());
    const initializer = declaration.getInitializer();
    if (!initializer) return this.report(declaration, "ts/not-data", `const \`${name}\` has no value`);
    if (this.resolving.has(declaration.getName()))
      return this.report(declaration, "ts/not-data", `const \`${name}\` refers to itself`);
    this.resolving.add(declaration.getName());
    try {
      return this.evaluate(initializer, pointer);
    } finally {
      this.resolving.delete(declaration.getName());
    }
  }

  private evaluateCall(node: import("ts-morph").CallExpression, pointer: string): unknown {
    const callee = node.getExpression();
    const args = node.getArguments();
    if (this.isDefinePolicy(callee)) {
      if (args.length !== 1) return this.report(node, "ts/not-data", "definePolicy takes exactly one object");
      return this.evaluate(args[0]!, pointer);
    }
    return this.report(
      node,
      "ts/not-data",
      `calling \`${excerpt(callee.getText())}\` is not allowed in a policy: only definePolicy, and policies are data`,
    );
  }

  /** definePolicy as imported from the API, under its own name or an alias. */
  private isDefinePolicy(callee: Node): boolean {
    if (!Node.isIdentifier(callee) || !this.apiImports.has(callee.getText())) return false;
    const specifier = callee
      .getSourceFile()
      .getImportDeclarations()
      .flatMap((d) => d.getNamedImports())
      .find((s) => (s.getAliasNode()?.getText() ?? s.getName()) === callee.getText());
    return specifier?.getName() === "definePolicy";
  }

  /**
   * Whether expanding @node (a const reference or a spread) keeps the policy
   * within MAX_POLICY_VALUES, checked before anything is built: consts that
   * each spread or list the previous one twice double at every step, and 40
   * steps are a trillion values. Each expansion counts as a value itself, so
   * even spreads of empty objects are bounded. Reported once, at @node.
   */
  private mayExpand(node: Node): boolean {
    const size = this.expandedSize(
      Node.isSpreadAssignment(node) || Node.isSpreadElement(node) ? node.getExpression() : node,
    );
    if (this.values + size <= MAX_POLICY_VALUES) {
      this.values += 1;
      return true;
    }
    this.stopped = true;
    const what = Node.isIdentifier(node) ? `\`${excerpt(node.getText())}\`` : "this spread";
    this.report(
      node,
      "policy/too-large",
      `${what} expands to ${size} values; a policy may have at most ${MAX_POLICY_VALUES}`,
    );
    return false;
  }

  /**
   * How many values @node evaluates to, counted on the source without
   * building any: linear in the file, as each node is counted once. A walk
   * with its own stack, not recursion: a chain of consts may be long. A
   * const inside its own definition counts one (evaluating it reports it).
   */
  private expandedSize(root: Node): number {
    const stack: { node: Node; parts?: Node[] }[] = [{ node: unwrap(root) }];
    while (stack.length > 0) {
      const top = stack.at(-1)!;
      if (this.sizes.has(top.node)) {
        stack.pop();
      } else if (!top.parts) {
        top.parts = expandedParts(top.node, this.constants).map(unwrap);
        this.sizing.add(top.node);
        for (const part of top.parts) if (!this.sizes.has(part) && !this.sizing.has(part)) stack.push({ node: part });
      } else {
        // An identifier is its const's value, not one more.
        const own = Node.isIdentifier(top.node) && top.parts.length > 0 ? 0 : 1;
        this.sizes.set(
          top.node,
          top.parts.reduce((sum, part) => sum + (this.sizes.get(part) ?? 1), own),
        );
        this.sizing.delete(top.node);
        stack.pop();
      }
    }
    return this.sizes.get(unwrap(root))!;
  }

  /** What is left of an object or list when a bound stopped its evaluation: open, so nothing is reported missing from it. */
  private unfinished<T>(pointer: string, value: T): T {
    this.openObjects.add(pointer);
    return value;
  }

  /** Follows consts and type wrappers to the literal a spread refers to, as far as nesting is bounded. */
  private resolveLiteral(node: Node, followed = 0): Node | undefined {
    const inner = unwrap(node);
    if (!Node.isIdentifier(inner)) return inner;
    const declaration = this.constants.get(inner.getText());
    const initializer = declaration?.getInitializer();
    if (!initializer || this.resolving.has(inner.getText())) {
      this.report(inner, "ts/unknown-name", `\`${excerpt(inner.getText())}\` is not a const declared in this file`);
      return undefined;
    }
    this.evaluated.add(declaration!);
    if (followed >= MAX_NESTING_DEPTH) {
      this.report(
        inner,
        "ts/too-deep",
        `more than ${MAX_NESTING_DEPTH} consts refer to each other here: a policy needs a few`,
      );
      return undefined;
    }
    return this.resolveLiteral(initializer, followed + 1);
  }

  /** Where @pointer's value was written; a const's value keeps the property name that referred to it. */
  private record(node: Node, pointer: string, key?: Node): void {
    const keySpan = key ? this.span(key) : this.sourceMap.get(pointer)?.key;
    this.sourceMap.set(pointer, { value: this.span(node), ...(keySpan && { key: keySpan }) });
  }

  private span(node: Node) {
    return this.source.span(node.getStart(), node.getEnd());
  }

  private report(node: Node, code: DiagnosticCode, message: string): undefined {
    if (Node.isSourceFile(node)) {
      // About the whole file (no default export): no line to show, and tsc's errors in it still count.
      this.diagnostics.push(diagnosticAt(code, startOf(this.source.file), message));
      return undefined;
    }
    this.rejected.push([node.getStart(), node.getEnd()]);
    this.diagnostics.push(diagnosticAt(code, this.source.location(this.span(node)), message));
    return undefined;
  }
}

/** Sets a property even when it is named __proto__, which `into[name] =` would take as the prototype. */
function define(into: Record<string, unknown>, name: string, value: unknown): void {
  Object.defineProperty(into, name, { value, enumerable: true, writable: true, configurable: true });
}

/** The nodes whose values @node's value is made of: members, elements, spreads, a const's value, call arguments. */
function expandedParts(node: Node, constants: ReadonlyMap<string, VariableDeclaration>): Node[] {
  if (Node.isObjectLiteralExpression(node)) {
    return node.getProperties().flatMap((property) => {
      if (Node.isPropertyAssignment(property)) return [property.getInitializerOrThrow()];
      if (Node.isShorthandPropertyAssignment(property)) return [property.getNameNode()];
      if (Node.isSpreadAssignment(property)) return [property.getExpression()];
      return [];
    });
  }
  if (Node.isArrayLiteralExpression(node)) {
    return node.getElements().map((element) => (Node.isSpreadElement(element) ? element.getExpression() : element));
  }
  if (Node.isIdentifier(node)) {
    const initializer = constants.get(node.getText())?.getInitializer();
    return initializer ? [initializer] : [];
  }
  if (Node.isCallExpression(node)) return node.getArguments();
  return [];
}

/** Strips what only matters to the type checker: `as const`, `satisfies`, parentheses (a loop: chains can be long). */
function unwrap(node: Node): Node {
  let inner = node;
  while (
    Node.isAsExpression(inner) ||
    Node.isSatisfiesExpression(inner) ||
    Node.isParenthesizedExpression(inner) ||
    Node.isTypeAssertion(inner) ||
    Node.isNonNullExpression(inner)
  ) {
    inner = inner.getExpression();
  }
  return inner;
}

/** "a function declaration", "a template literal with expressions", … for messages. */
function describe(node: Node): string {
  const names: Partial<Record<SyntaxKind, string>> = {
    [SyntaxKind.TemplateExpression]: "a template literal with expressions",
    [SyntaxKind.ArrowFunction]: "a function",
    [SyntaxKind.FunctionExpression]: "a function",
    [SyntaxKind.FunctionDeclaration]: "a function declaration",
    [SyntaxKind.ClassDeclaration]: "a class",
    [SyntaxKind.MethodDeclaration]: "a method",
    [SyntaxKind.GetAccessor]: "a getter",
    [SyntaxKind.SetAccessor]: "a setter",
    [SyntaxKind.ExpressionStatement]: "a statement with an effect",
    [SyntaxKind.PropertyAccessExpression]: `\`${excerpt(node.getText())}\``,
    [SyntaxKind.AwaitExpression]: "await",
    [SyntaxKind.NewExpression]: "`new`",
    [SyntaxKind.BinaryExpression]: `the expression \`${excerpt(node.getText())}\``,
  };
  return names[node.getKind()] ?? `${node.getKindName()}`;
}
