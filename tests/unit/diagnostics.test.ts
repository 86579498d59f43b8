/** Rendering diagnostics: tsc-style text, one-line logs, and the bounds on what a file can make us print. */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  DIAGNOSTIC_CODES,
  diagnosticAt,
  displayLine,
  formatDiagnosticLine,
  formatDiagnostics,
  MAX_DIAGNOSTICS_PER_FILE,
  MAX_LINE_TEXT,
  quoted,
  reportableDiagnostics,
  type Diagnostic,
} from "../../src/diagnostics.js";

const duplicate: Diagnostic = diagnosticAt(
  "rule/duplicate-original-port",
  { file: "p.yaml", line: 7, column: 5, length: 12, lineText: "    originalPort: 8001" },
  "tcp originalPort 8001 is already intercepted by interceptors[1]",
  {
    notes: [
      {
        file: "p.yaml",
        line: 5,
        column: 5,
        length: 12,
        lineText: "    originalPort: 8001",
        message: "first intercepted here",
      },
    ],
  },
);
const misspelt: Diagnostic = diagnosticAt(
  "schema/unknown-property",
  { file: "a.ts", line: 12, column: 20, length: 11, lineText: "  interceptors: [{ orignalPort: 8000, port: 9000 }]," },
  'unknown property "orignalPort" in interceptors[0]',
  { suggestion: "originalPort" },
);

test("formatDiagnostics: sorted by file, the line with its span underlined, notes located, the suggestion last", () => {
  assert.equal(
    formatDiagnostics([duplicate, misspelt], { colour: false }),
    [
      'a.ts:12:20: error[schema/unknown-property]: unknown property "orignalPort" in interceptors[0]',
      "  12 |   interceptors: [{ orignalPort: 8000, port: 9000 }],",
      "     |                    ^~~~~~~~~~~",
      "  help: did you mean `originalPort`?",
      "",
      "p.yaml:7:5: error[rule/duplicate-original-port]: tcp originalPort 8001 is already intercepted by interceptors[1]",
      "  7 |     originalPort: 8001",
      "    |     ^~~~~~~~~~~~",
      "  p.yaml:5:5: note: first intercepted here",
      "    5 |     originalPort: 8001",
      "      |     ^~~~~~~~~~~~",
      "",
    ].join("\n"),
  );
  assert.equal(formatDiagnostics([], { colour: false }), "");
});

test("colour only when asked", () => {
  const plain = formatDiagnostics([misspelt], { colour: false });
  const coloured = formatDiagnostics([misspelt], { colour: true });
  // eslint-disable-next-line no-control-regex
  assert.doesNotMatch(plain, /\u001b\[/);
  // eslint-disable-next-line no-control-regex
  assert.match(coloured, /\u001b\[31merror\[schema\/unknown-property\]\u001b\[39m/);
  // eslint-disable-next-line no-control-regex
  assert.equal(coloured.replace(/\u001b\[\d+m/g, ""), plain);
});

test("formatDiagnosticLine: one line, with the suggestion, the notes' places and tsc's number", () => {
  assert.equal(
    formatDiagnosticLine(duplicate),
    "p.yaml:7:5: error[rule/duplicate-original-port]: tcp originalPort 8001 is already intercepted by interceptors[1]; note: first intercepted here (p.yaml:5:5)",
  );
  assert.equal(
    formatDiagnosticLine(misspelt),
    'a.ts:12:20: error[schema/unknown-property]: unknown property "orignalPort" in interceptors[0] (did you mean `originalPort`?)',
  );
  const tsc = diagnosticAt(
    "ts/type-error",
    { file: "a.ts", line: 1, column: 1, length: 0 },
    "Type 'string' is not assignable to type 'number'.",
    { tsCode: 2322 },
  );
  assert.equal(
    formatDiagnosticLine(tsc),
    "a.ts:1:1: error[ts/type-error]: Type 'string' is not assignable to type 'number'. (TS2322)",
  );
});

test("a whole-file problem has no excerpt; a span past the shown part of a long line has none either", () => {
  const whole = diagnosticAt("load/empty", { file: "e.yaml", line: 1, column: 1, length: 0 }, "policy file is empty");
  assert.equal(formatDiagnostics([whole], { colour: false }), "e.yaml:1:1: error[load/empty]: policy file is empty\n");
  const lineText = displayLine("x".repeat(5000));
  assert.equal(lineText.length, MAX_LINE_TEXT + 1);
  const far = diagnosticAt("schema/type", { file: "l.yaml", line: 1, column: 4000, length: 3, lineText }, "far away");
  assert.equal(formatDiagnostics([far], { colour: false }), "l.yaml:1:4000: error[schema/type]: far away\n");
  const near = diagnosticAt(
    "schema/type",
    { file: "l.yaml", line: 1, column: 118, length: 50, lineText },
    "near the cut",
  );
  assert.match(formatDiagnostics([near], { colour: false }), /\| {118}\^~~\n$/, "the underline stops at the cut");
});

test("what a file can make us print is bounded: quoted values, control characters, errors per file", () => {
  assert.equal(quoted("a".repeat(100)), `"${"a".repeat(40)}…"`);
  assert.equal(quoted("\u001b[2J"), '"\\u001b[2J"');
  assert.equal(displayLine("\tport: \u001b[31m\u202Ered"), " port: \uFFFD[31m\uFFFDred");
  const flood = Array.from({ length: 50 }, (_, i) =>
    diagnosticAt(
      "schema/unknown-property",
      { file: "f.yaml", line: i + 1, column: 1, length: 1 },
      `unknown property "p${i}"`,
    ),
  );
  const other = diagnosticAt("load/empty", { file: "g.yaml", line: 1, column: 1, length: 0 }, "policy file is empty");
  const shown = reportableDiagnostics([...flood, flood[3]!, other]);
  assert.equal(shown.length, MAX_DIAGNOSTICS_PER_FILE + 2);
  assert.deepEqual(
    shown.slice(MAX_DIAGNOSTICS_PER_FILE).map((d) => `${d.file}:${d.line} ${d.code} ${d.message}`),
    [
      `f.yaml:${MAX_DIAGNOSTICS_PER_FILE + 1} report/truncated …and 30 more errors in this file`,
      "g.yaml:1 load/empty policy file is empty",
    ],
  );
  const hostileMessage = diagnosticAt(
    "yaml/syntax",
    { file: "h.yaml", line: 1, column: 1, length: 0 },
    `bad \u001b]0;title\u0007 ${"x".repeat(1000)}`,
  );
  const [bounded] = reportableDiagnostics([hostileMessage]);
  assert.equal(bounded!.message.length, 301);
  // eslint-disable-next-line no-control-regex
  assert.doesNotMatch(bounded!.message, /[\u0000-\u001f]/);
});

test("every code is family/name, and the families are the pipeline's", () => {
  for (const code of Object.keys(DIAGNOSTIC_CODES)) {
    assert.match(code, /^(load|yaml|ts|schema|rule|outbound|policy|report)\/[a-z0-9-]+$/);
  }
});
