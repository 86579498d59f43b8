import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import {
  Node,
  Project,
  SyntaxKind,
  ts,
  type Expression,
  type SourceFile,
  type VariableDeclaration,
} from "ts-morph";
import type { Diagnostic } from "../diagnostics.js";
import { childPointer, SourceMap } from "./source-map.js";

/** The module a policy imports definePolicy and its types from. */
const API_MODULE = "intercept";
/**
 * The declarations generated from src/api.ts: the very file a user's own
 * tsc and editor resolve `intercept` to, here and in an installed package.
 */
const API_DECLARATIONS = fileURLToPath(new URL("../api.d.ts", import.meta.url));

/**
 * Reads a TypeScript policy without running it: the default export is
 * evaluated as a literal (objects, arrays, strings, numbers, booleans,
 * `as const`, `satisfies`, same-file consts, shorthands, spreads and the
 * definePolicy call). Anything else is a located error, and the file is
 * type-checked against the Policy type.
 */
export function loadTypeScriptPolicy(file: string, text: string) {
  const sourceFile = createPolicyProject(text);
  const evaluator = new PolicyEvaluator(file, sourceFile);
  const value = evaluator.evaluateFile();
  // Type errors only matter for data that evaluated: otherwise they repeat the same problem.
  const diagnostics = evaluator.diagnostics.length > 0 ? evaluator.diagnostics : typeCheck(file, sourceFile);
  return { value, sourceMap: evaluator.sourceMap, diagnostics };
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
  project.createSourceFile(`/node_modules/${API_MODULE}/index.d.ts`, readFileSync(API_DECLARATIONS, "utf8"));
  return project.createSourceFile("/policy/policy.ts", text);
}

function typeCheck(file: string, sourceFile: SourceFile): Diagnostic[] {
  return sourceFile.getPreEmitDiagnostics().map((diagnostic) => {
    const { line, column } = sourceFile.getLineAndColumnAtPos(diagnostic.getStart() ?? 0);
    const message = ts.flattenDiagnosticMessageText(diagnostic.compilerObject.messageText, " ");
    return { file, line, column, message: message.replace(/\s+/g, " ") };
  });
}

class PolicyEvaluator {
  readonly diagnostics: Diagnostic[] = [];
  readonly sourceMap = new SourceMap();
  private readonly constants = new Map<string, VariableDeclaration>();
  private readonly apiImports = new Set<string>();
  private readonly resolving = new Set<string>();

  constructor(
    private readonly file: string,
    private readonly sourceFile: SourceFile,
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
    // Every const is checked, used or not: a call hidden in one is still code.
    for (const declaration of this.constants.values()) this.evaluateConst(declaration, "");
    if (!exported) {
      this.report(this.sourceFile, "a policy file needs `export default definePolicy({ … })`");
      return undefined;
    }
    return this.evaluate(exported, "");
  }

  /** Accepts the statements a data file may contain; reports the rest. */
  private declare(statement: Node): void {
    if (Node.isImportDeclaration(statement)) {
      this.declareImport(statement);
    } else if (Node.isVariableStatement(statement)) {
      if (statement.getDeclarationKind() !== "const") {
        this.report(statement, "use `const`: a policy's values never change");
      }
      for (const declaration of statement.getDeclarations()) {
        this.constants.set(declaration.getName(), declaration);
      }
    } else if (
      !Node.isInterfaceDeclaration(statement) &&
      !Node.isTypeAliasDeclaration(statement) &&
      !Node.isEmptyStatement(statement)
    ) {
      this.report(statement, `${describe(statement)} is not allowed at the top level: policies are data`);
    }
  }

  private declareImport(statement: import("ts-morph").ImportDeclaration): void {
    if (statement.isTypeOnly()) return;
    const from = statement.getModuleSpecifierValue();
    const named = statement.getNamedImports();
    if (from !== API_MODULE || statement.getDefaultImport() || statement.getNamespaceImport() || named.length === 0) {
      this.report(statement, `only \`import { definePolicy } from "${API_MODULE}"\` and type imports are allowed`);
      return;
    }
    for (const specifier of named) {
      if (!specifier.isTypeOnly()) this.apiImports.add(specifier.getAliasNode()?.getText() ?? specifier.getName());
    }
  }

  private evaluate(node: Node, pointer: string, key?: Node): unknown {
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
    return this.report(inner, `${describe(inner)} is not allowed in a policy: policies are data`);
  }

  private evaluateObject(node: import("ts-morph").ObjectLiteralExpression, pointer: string, into: Record<string, unknown> = {}) {
    for (const property of node.getProperties()) {
      if (Node.isPropertyAssignment(property)) {
        const nameNode = property.getNameNode();
        if (Node.isComputedPropertyName(nameNode)) {
          this.report(nameNode, "computed property names are not allowed in a policy: policies are data");
          continue;
        }
        const name = Node.isStringLiteral(nameNode) || Node.isNumericLiteral(nameNode) ? String(nameNode.getLiteralValue()) : nameNode.getText();
        into[name] = this.evaluate(property.getInitializerOrThrow(), childPointer(pointer, name), nameNode);
      } else if (Node.isShorthandPropertyAssignment(property)) {
        const name = property.getName();
        into[name] = this.evaluateIdentifier(property.getNameNode(), childPointer(pointer, name), property.getNameNode());
      } else if (Node.isSpreadAssignment(property)) {
        const spread = this.resolveLiteral(property.getExpression());
        if (Node.isObjectLiteralExpression(spread)) this.evaluateObject(spread, pointer, into);
        else if (spread) this.report(property, "only objects written in this file can be spread here");
      } else {
        this.report(property, `${describe(property)} is not allowed in a policy: policies are data`);
      }
    }
    return into;
  }

  private evaluateArray(node: import("ts-morph").ArrayLiteralExpression, pointer: string, into: unknown[] = []) {
    for (const element of node.getElements()) {
      if (Node.isSpreadElement(element)) {
        const spread = this.resolveLiteral(element.getExpression());
        if (Node.isArrayLiteralExpression(spread)) this.evaluateArray(spread, pointer, into);
        else if (spread) this.report(element, "only arrays written in this file can be spread here");
      } else if (Node.isOmittedExpression(element)) {
        this.report(element, "holes are not allowed in a policy's arrays");
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
    return this.report(node, `the expression \`${node.getText()}\` is not allowed in a policy: write the value`);
  }

  private evaluateIdentifier(node: import("ts-morph").Identifier, pointer: string, key?: Node): unknown {
    const declaration = this.constants.get(node.getText());
    if (!declaration) {
      const why = this.apiImports.has(node.getText()) ? "is a function, not a value" : "is not a const declared in this file";
      return this.report(node, `\`${node.getText()}\` ${why}`);
    }
    if (key) this.record(node, pointer, key);
    return this.evaluateConst(declaration, pointer);
  }

  private evaluateConst(declaration: VariableDeclaration, pointer: string): unknown {
    const name = declaration.getName();
    const initializer = declaration.getInitializer();
    if (!initializer) return this.report(declaration, `const \`${name}\` has no value`);
    if (this.resolving.has(name)) return this.report(declaration, `const \`${name}\` refers to itself`);
    this.resolving.add(name);
    try {
      return this.evaluate(initializer, pointer);
    } finally {
      this.resolving.delete(name);
    }
  }

  private evaluateCall(node: import("ts-morph").CallExpression, pointer: string): unknown {
    const callee = node.getExpression();
    const args = node.getArguments();
    if (this.isDefinePolicy(callee)) {
      if (args.length !== 1) return this.report(node, "definePolicy takes exactly one object");
      return this.evaluate(args[0]!, pointer);
    }
    return this.report(node, `calling \`${callee.getText()}\` is not allowed in a policy: only definePolicy, and policies are data`);
  }

  /** definePolicy as imported from the API, under its own name or an alias. */
  private isDefinePolicy(callee: Node): boolean {
    if (!Node.isIdentifier(callee) || !this.apiImports.has(callee.getText())) return false;
    const specifier = callee.getSourceFile().getImportDeclarations().flatMap((d) => d.getNamedImports())
      .find((s) => (s.getAliasNode()?.getText() ?? s.getName()) === callee.getText());
    return specifier?.getName() === "definePolicy";
  }

  /** Follows consts and type wrappers to the literal a spread refers to. */
  private resolveLiteral(node: Node): Node | undefined {
    const inner = unwrap(node);
    if (!Node.isIdentifier(inner)) return inner;
    const declaration = this.constants.get(inner.getText());
    const initializer = declaration?.getInitializer();
    if (!initializer || this.resolving.has(inner.getText())) {
      this.report(inner, `\`${inner.getText()}\` is not a const declared in this file`);
      return undefined;
    }
    return this.resolveLiteral(initializer);
  }

  private record(node: Node, pointer: string, key?: Node): void {
    this.sourceMap.set(pointer, { value: this.position(node), ...(key && { key: this.position(key) }) });
  }

  private position(node: Node) {
    return this.sourceFile.getLineAndColumnAtPos(node.getStart());
  }

  private report(node: Node, message: string): undefined {
    this.diagnostics.push({ file: this.file, ...this.position(node), message });
    return undefined;
  }
}

/** Strips what only matters to the type checker: `as const`, `satisfies`, parentheses. */
function unwrap(node: Node): Node {
  if (
    Node.isAsExpression(node) ||
    Node.isSatisfiesExpression(node) ||
    Node.isParenthesizedExpression(node) ||
    Node.isTypeAssertion(node) ||
    Node.isNonNullExpression(node)
  ) {
    return unwrap(node.getExpression());
  }
  return node;
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
    [SyntaxKind.PropertyAccessExpression]: `\`${node.getText()}\``,
    [SyntaxKind.AwaitExpression]: "await",
    [SyntaxKind.NewExpression]: "`new`",
    [SyntaxKind.BinaryExpression]: `the expression \`${node.getText()}\``,
  };
  return names[node.getKind()] ?? `${node.getKindName()}`;
}
