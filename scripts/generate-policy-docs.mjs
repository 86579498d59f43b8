// Renders the field reference of docs/policy.md from schemas/policy.schema.json,
// the policy language's single source of truth, between the page's two markers.
//   node scripts/generate-policy-docs.mjs           rewrites the block
//   node scripts/generate-policy-docs.mjs --check   exits 1 when the block is stale
// tests/unit/docs.test.ts runs the check; `npm run test:update-golden` rewrites.
import { readFileSync, writeFileSync } from "node:fs";

const SCHEMA = "schemas/policy.schema.json";
const PAGE = "docs/policy.md";
export const BEGIN = `<!-- BEGIN fields: generated from ${SCHEMA} by scripts/generate-policy-docs.mjs; do not edit -->`;
export const END = "<!-- END fields -->";

/** The block between the markers: one table per object, then the value types. */
export function renderFields(schema) {
  const defs = schema.$defs ?? {};
  const tables = [];
  collectTables(schema, "The policy (top level)", "", defs, tables);
  const lines = [];
  for (const { title, rows, note } of tables) {
    lines.push(`### ${title}`, "");
    if (note) lines.push(note, "");
    lines.push("| field | type | required | default | meaning |", "| --- | --- | --- | --- | --- |");
    for (const row of rows) lines.push(`| ${row.map((text) => cell(text || "—")).join(" | ")} |`);
    lines.push("");
  }
  lines.push("### Value types", "", "| type | values | meaning |", "| --- | --- | --- |");
  for (const [name, def] of Object.entries(defs)) {
    if (isObject(def, defs)) continue;
    lines.push(
      `| ${cell(`<a id="${anchor(name)}"></a>\`${name}\``)} | ${cell(valuesOf(def, defs))} | ${cell(def.description || "—")} |`,
    );
  }
  return `${lines.join("\n").trimEnd()}\n`;
}

/** Adds a table for the object @node (at @path, "" for the root) and one for each object inside it. */
function collectTables(node, title, path, defs, tables) {
  const object = resolve(node, defs);
  const required = new Set(object.required ?? []);
  const rows = [];
  const nested = [];
  for (const [name, property] of Object.entries(object.properties ?? {})) {
    const field = `${path}${name}`;
    const resolved = resolve(property, defs);
    const { text, default: fallback } = splitDefault(property.description ?? resolved.description ?? "");
    const items = resolved.type === "array" ? resolve(resolved.items ?? {}, defs) : undefined;
    if (isObject(resolved, defs)) nested.push([resolved, `\`${field}\``, `${field}.`]);
    if (items && isObject(items, defs)) nested.push([items, `\`${field}[]\``, `${field}[].`]);
    rows.push([
      `\`${field}\``,
      typeOf(property, defs),
      required.has(name) ? "yes" : conditional(object, name),
      fallback,
      text,
    ]);
  }
  const note = path !== "" && object.description ? splitDefault(object.description).text : undefined;
  tables.push({ title, rows, note });
  for (const [child, childTitle, childPath] of nested) collectTables(child, childTitle, childPath, defs, tables);
}

/** "unless outbound": a property that the object's if/else requires only when the `if` fails. */
function conditional(object, name) {
  const whenNot = object.if?.required ?? [];
  return (object.else?.required ?? []).includes(name) && whenNot.length > 0
    ? `unless ${whenNot.map((n) => `\`${n}\``).join(", ")}`
    : "no";
}

/** The type column: a named value type links to its row; lists say their bounds. */
function typeOf(property, defs) {
  if (property.$ref) {
    const name = refName(property.$ref);
    const def = defs[name];
    if (!isObject(def, defs)) return `[\`${name}\`](#${anchor(name)})${bounds(property)}`;
    return "object (below)";
  }
  if (property.type === "array")
    return `list of ${typeOf(property.items ?? {}, defs).replace(/^object \(below\)$/, "objects (below)")}${bounds(property)}`;
  return valuesOf(property, defs);
}

/** The values a non-object schema admits, in words. */
function valuesOf(node, defs) {
  if (node.$ref && !node.type) return typeOf(node, defs);
  if (node.enum) return node.enum.map((value) => `\`${JSON.stringify(value)}\``).join(" \\| ");
  if (node.const !== undefined) return `\`${JSON.stringify(node.const)}\``;
  const types = [node.type].flat().filter(Boolean);
  const parts = types.map((type) => {
    if (type === "integer" || type === "number") return `${type}${range(node.minimum, node.maximum)}`;
    if (type === "string") return stringOf(node);
    if (type === "array") return `list of ${typeOf(node.items ?? {}, defs)}${bounds(node)}`;
    return type;
  });
  return parts.join(", or ") || "any";
}

function stringOf(node) {
  const constraints = [
    ...(node.pattern ? [`matching \`${node.pattern}\``] : []),
    ...(node.minLength !== undefined || node.maxLength !== undefined
      ? [`of ${lengths(node.minLength, node.maxLength)} characters`]
      : []),
  ];
  return constraints.length > 0 ? `string ${constraints.join(", ")}` : "string";
}

const range = (min, max) =>
  min !== undefined && max !== undefined
    ? ` ${min}–${max}`
    : min !== undefined
      ? ` ≥ ${min}`
      : max !== undefined
        ? ` ≤ ${max}`
        : "";
const lengths = (min, max) =>
  min !== undefined && max !== undefined ? `${min}–${max}` : min !== undefined ? `at least ${min}` : `at most ${max}`;
const bounds = (node) =>
  node.minItems !== undefined || node.maxItems !== undefined
    ? ` (${lengths(node.minItems, node.maxItems)} ${node.maxItems === 1 || (node.maxItems === undefined && node.minItems === 1) ? "item" : "items"})`
    : "";

/** "Default: X." at the end of a description becomes the default column. */
function splitDefault(description) {
  const match = /\s*(?:Default: |Defaults to )(.+?)\.?$/.exec(description);
  if (!match) return { text: description, default: "" };
  return { text: description.slice(0, match.index).trim(), default: match[1] };
}

function resolve(node, defs) {
  if (!node.$ref) return node;
  const { $ref, ...rest } = node;
  return { ...resolve(defs[refName($ref)] ?? {}, defs), ...rest };
}

const isObject = (node, defs) => resolve(node ?? {}, defs).type === "object";
const refName = (ref) => ref.replace("#/$defs/", "");
const anchor = (name) => `type-${name.toLowerCase()}`;
/** Table cells: no line breaks, pipes escaped. */
const cell = (text) =>
  String(text)
    .replace(/\n/g, " ")
    .replace(/(?<!\\)\|/g, "\\|");

/** @page with its block replaced by @block. */
export function withFields(page, block) {
  const start = page.indexOf(BEGIN);
  const end = page.indexOf(END);
  if (start < 0 || end < start) throw new Error(`${PAGE} has no "${BEGIN}" … "${END}" block`);
  return `${page.slice(0, start + BEGIN.length)}\n\n${block}\n${page.slice(end)}`;
}

function main() {
  const schema = JSON.parse(readFileSync(SCHEMA, "utf8"));
  const page = readFileSync(PAGE, "utf8");
  const updated = withFields(page, renderFields(schema));
  if (!process.argv.includes("--check")) {
    if (updated !== page) writeFileSync(PAGE, updated);
    return;
  }
  if (updated !== page) {
    process.stderr.write(
      `${PAGE} is stale against ${SCHEMA}: run \`node scripts/generate-policy-docs.mjs\` (or \`npm run test:update-golden\`) and review the diff\n`,
    );
    process.exitCode = 1;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) main();
