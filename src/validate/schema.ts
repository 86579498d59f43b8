import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { ErrorObject, ValidateFunction } from "ajv";
import type { Diagnostic } from "../diagnostics.js";
import type { LoadedPolicy } from "../load/index.js";
import { childPointer } from "../load/source-map.js";

export const SCHEMA_PATH = fileURLToPath(new URL("../../../schemas/policy.schema.json", import.meta.url));
export const policySchema = JSON.parse(readFileSync(SCHEMA_PATH, "utf8"));

/** Compiled from the schema at build time (scripts/generate-validator.mjs): no ajv at start-up. */
const validatePolicy: ValidateFunction = (await import(new URL("./policy-validator.js", import.meta.url).href)).default;

/** Checks a loaded policy against schemas/policy.schema.json. */
export function checkSchema(policy: LoadedPolicy): Diagnostic[] {
  if (validatePolicy(policy.value)) return [];
  const diagnostics = (validatePolicy.errors ?? []).filter(isUseful).map((error) => {
    const [pointer, part] = errorPointer(error);
    return { file: policy.file, ...policy.sourceMap.locate(pointer, part), message: describeError(error) };
  });
  return unique(diagnostics);
}

/** `if`/`$ref` wrappers repeat the real error; keep the leaf ones. */
function isUseful(error: ErrorObject): boolean {
  return error.keyword !== "if" && error.keyword !== "anyOf";
}

/** Unknown properties point at their name; a missing one at its object; the rest at the value. */
function errorPointer(error: ErrorObject): [string, "key" | "value"] {
  if (error.keyword === "additionalProperties") {
    return [childPointer(error.instancePath, error.params.additionalProperty), "key"];
  }
  return [error.instancePath, "value"];
}

function describeError(error: ErrorObject): string {
  const subject = subjectOf(error.instancePath);
  switch (error.keyword) {
    case "required":
      return `${subject} is missing required property "${error.params.missingProperty}"`;
    case "additionalProperties": {
      const unknown = error.params.additionalProperty as string;
      const known = Object.keys((error.parentSchema as { properties?: object }).properties ?? {});
      const hint = closest(unknown, known);
      return `unknown property "${unknown}" in ${subject}${hint ? ` (did you mean "${hint}"?)` : ""}`;
    }
    case "type":
      return `${subject} must be ${article(error.params.type)}, got ${describeValue(error.data)}`;
    case "minimum":
    case "maximum": {
      const schema = error.parentSchema as { minimum: number; maximum: number };
      return `${subject} must be between ${schema.minimum} and ${schema.maximum}, got ${describeValue(error.data)}`;
    }
    case "enum":
      return `${subject} must be one of ${(error.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(", ")}, got ${describeValue(error.data)}`;
    case "pattern":
      return `${subject} must match ${error.params.pattern} (lower case letters, digits and _, starting with a letter, at most 32), got ${describeValue(error.data)}`;
    default:
      return `${subject} ${error.message ?? "is invalid"}`;
  }
}

/** "interceptors[0].port", or "the policy" for the root. */
function subjectOf(pointer: string): string {
  if (pointer === "") return "the policy";
  return pointer
    .split("/")
    .slice(1)
    .map((segment) => segment.replaceAll("~1", "/").replaceAll("~0", "~"))
    .map((segment, index) => (/^\d+$/.test(segment) ? `[${segment}]` : index === 0 ? segment : `.${segment}`))
    .join("");
}

function article(type: string): string {
  return { integer: "an integer", object: "an object", array: "a list", string: "a string", boolean: "true or false", number: "a number" }[type] ?? type;
}

function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "an object";
  if (typeof value === "string") return `the string ${JSON.stringify(value)}`;
  return String(value);
}

/** The known name within edit distance 2 of a misspelt one, for a hint. */
export function closest(word: string, candidates: string[]): string | undefined {
  let best: { candidate: string; distance: number } | undefined;
  for (const candidate of candidates) {
    const distance = editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (distance <= 2 && (!best || distance < best.distance)) best = { candidate, distance };
  }
  return best?.candidate;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}

function unique(diagnostics: Diagnostic[]): Diagnostic[] {
  const seen = new Set<string>();
  return diagnostics.filter((d) => {
    const key = `${d.line}:${d.column}:${d.message}`;
    return !seen.has(key) && seen.add(key);
  });
}
