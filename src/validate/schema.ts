import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { ErrorObject, ValidateFunction } from "ajv";
import { diagnosticAt, excerpt, quoted, type Diagnostic, type Location } from "../diagnostics.js";
import type { LoadedPolicy } from "../load/index.js";
import { childPointer, isWithin } from "../load/source-map.js";

export const SCHEMA_PATH = fileURLToPath(new URL("../../../schemas/policy.schema.json", import.meta.url));
export const policySchema = JSON.parse(readFileSync(SCHEMA_PATH, "utf8"));

/** Compiled from the schema at build time (scripts/generate-validator.mjs): no ajv at start-up. */
const validatePolicy: ValidateFunction = (await import(new URL("./policy-validator.js", import.meta.url).href)).default;

/** A schema violation, and the JSON pointer of the value it is about. */
export interface SchemaProblem {
  pointer: string;
  diagnostic: Diagnostic;
}

/**
 * Checks a loaded policy against schemas/policy.schema.json. Problems in
 * values the loader could not read (its holes) were reported by the loader
 * and are not reported again, nor is a "missing" property of an object
 * some of whose members could not be read, nor one whose misspelling is
 * reported with it as the suggestion (`orignalPort`: one mistake, one error).
 */
export function checkSchema(policy: LoadedPolicy): SchemaProblem[] {
  if (validatePolicy(policy.value)) return [];
  const errors = (validatePolicy.errors ?? []).filter(isUseful);
  const misspelt = new Set(
    errors.flatMap((error) => {
      const suggestion = error.keyword === "additionalProperties" ? suggestionFor(error) : undefined;
      return suggestion ? [childPointer(error.instancePath, suggestion)] : [];
    }),
  );
  const problems: SchemaProblem[] = [];
  const seen = new Set<string>();
  for (const error of errors) {
    const { about, at, part } = errorPointer(error);
    if (policy.holes.some((hole) => isWithin(about, hole))) continue;
    if (error.keyword === "required" && (policy.openObjects.includes(error.instancePath) || misspelt.has(about)))
      continue;
    const diagnostic = describeError(error, policy.sourceMap.locate(at, part));
    const key = `${diagnostic.line}:${diagnostic.column}:${diagnostic.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    problems.push({ pointer: about, diagnostic });
  }
  return problems;
}

/** `if`/`$ref` wrappers repeat the real error; keep the leaf ones. */
function isUseful(error: ErrorObject): boolean {
  return error.keyword !== "if" && error.keyword !== "anyOf";
}

/**
 * The value an error is about, where to point, and at which part: an
 * unknown property at its name, a missing one at its object, the rest at
 * the value.
 */
function errorPointer(error: ErrorObject): { about: string; at: string; part: "key" | "value" } {
  if (error.keyword === "additionalProperties") {
    const about = childPointer(error.instancePath, error.params.additionalProperty);
    return { about, at: about, part: "key" };
  }
  if (error.keyword === "required") {
    return {
      about: childPointer(error.instancePath, error.params.missingProperty),
      at: error.instancePath,
      part: "value",
    };
  }
  return { about: error.instancePath, at: error.instancePath, part: "value" };
}

function describeError(error: ErrorObject, at: Location): Diagnostic {
  const subject = subjectOf(error.instancePath);
  switch (error.keyword) {
    case "required":
      return diagnosticAt(
        "schema/required",
        at,
        `${subject} is missing required property ${quoted(error.params.missingProperty)}`,
      );
    case "additionalProperties": {
      const hint = suggestionFor(error);
      return diagnosticAt(
        "schema/unknown-property",
        at,
        `unknown property ${quoted(error.params.additionalProperty)} in ${subject}`,
        hint ? { suggestion: hint } : {},
      );
    }
    case "type":
      return diagnosticAt(
        "schema/type",
        at,
        `${subject} must be ${article(error.params.type)}, got ${describeValue(error.data)}`,
      );
    case "minimum":
    case "maximum": {
      const schema = error.parentSchema as { minimum: number; maximum: number };
      return diagnosticAt(
        "schema/range",
        at,
        `${subject} must be between ${schema.minimum} and ${schema.maximum}, got ${describeValue(error.data)}`,
      );
    }
    case "minLength":
    case "maxLength": {
      const schema = error.parentSchema as { minLength?: number; maxLength: number };
      const length = typeof error.data === "string" ? error.data.length : 0;
      if (schema.minLength === undefined)
        return diagnosticAt(
          "schema/range",
          at,
          `${subject} must be at most ${schema.maxLength} characters long (no address or CIDR is longer), got ${length}`,
        );
      return diagnosticAt(
        "schema/range",
        at,
        `${subject} must be ${schema.minLength} to ${schema.maxLength} characters long (an interface name), got ${length}`,
      );
    }
    case "maxItems":
      return diagnosticAt("schema/range", at, `${subject} may have at most ${error.params.limit} entries`);
    case "minItems":
      return diagnosticAt(
        "schema/range",
        at,
        `${subject} is an empty list, which would select nothing (leave it out to select every one)`,
      );
    case "enum":
      return diagnosticAt(
        "schema/enum",
        at,
        `${subject} must be one of ${(error.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(", ")}, got ${describeValue(error.data)}`,
      );
    case "pattern": {
      const meaning = PATTERN_MEANINGS[error.params.pattern as string];
      if (meaning)
        return diagnosticAt("schema/pattern", at, `${subject} must be ${meaning}, got ${describeValue(error.data)}`);
      return diagnosticAt(
        "schema/pattern",
        at,
        `${subject} must match ${error.params.pattern} (lower case letters, digits and _, starting with a letter, at most 32), got ${describeValue(error.data)}`,
      );
    }
    default:
      return diagnosticAt("schema/invalid", at, `${subject} ${error.message ?? "is invalid"}`);
  }
}

/** What the schema's value patterns mean, in words (the policy name's keeps its own message). */
const PATTERN_MEANINGS: Record<string, string> = {
  "^[0-9]{1,5}-[0-9]{1,5}$": 'a port, or a range of ports "FIRST-LAST" such as "9000-9100"',
  "^\\*$": '"*" (every port) or a list of ports and ranges',
  "^[0-9A-Fa-f.:]+(/[0-9]{1,3})?$": 'an IPv4 or IPv6 address or CIDR, such as "10.0.0.0/8" or "fd00::/8"',
};

/** The known property an unknown one is a misspelling of, if any. */
function suggestionFor(error: ErrorObject): string | undefined {
  const known = Object.keys((error.parentSchema as { properties?: object }).properties ?? {});
  return closest(error.params.additionalProperty as string, known);
}

/** "interceptors[0].port", or "the policy" for the root. */
function subjectOf(pointer: string): string {
  if (pointer === "") return "the policy";
  return pointer
    .split("/")
    .slice(1)
    .map((segment) => excerpt(segment.replaceAll("~1", "/").replaceAll("~0", "~")))
    .map((segment, index) => (/^\d+$/.test(segment) ? `[${segment}]` : index === 0 ? segment : `.${segment}`))
    .join("");
}

function article(type: string | string[]): string {
  if (Array.isArray(type)) return type.map(article).join(" or ");
  return (
    {
      integer: "an integer",
      object: "an object",
      array: "a list",
      string: "a string",
      boolean: "true or false",
      number: "a number",
    }[type] ?? type
  );
}

function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "an object";
  if (typeof value === "string") return `the string ${quoted(value)}`;
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
