/**
 * The second wall in front of the templates. Validation already checked
 * every policy read from a file, but a policy also arrives from a saved plan
 * (a file anyone could edit) and from code; whatever reaches the renderer is
 * checked again here, against what the C can take: ports are integers
 * 1–65535 (0 or 70000 would become htons(0) or wrap) and ranges run
 * forwards, CIDRs are networks in their canonical text (they are printed
 * in comments), enums are known values (steer only on TCP), the name is a
 * C identifier, the rule count fits the tables. The templates print these values into C, so a string
 * that got through could carry C of its own (a hand-edited plan once pasted
 * `#warning` into it).
 */
import { InterceptError } from "../errors.js";
import { isProgramName } from "../model/composition.js";
import { POLICY_NAME } from "../model/policy-name.js";
import { outboundSlot } from "../model/rule-slots.js";
import type { Rule, ValidPolicy } from "../validate/index.js";
import { readCidr } from "../validate/addresses.js";

/** What the C can take; tests/unit/render.test.ts checks these agree with the schema. */
export const RENDER_LIMITS = {
  /** Used in C identifiers and pin paths. */
  name: POLICY_NAME,
  port: { minimum: 1, maximum: 65535 },
  /** The lookup tables store rule + 1 in a __u16. */
  maxRules: 65535,
  protocol: ["tcp", "udp"] as readonly Rule["protocol"][],
  family: ["ipv4", "ipv6", "any"] as readonly Rule["family"][],
  strategy: ["steer", "rewrite"] as readonly Rule["strategy"][],
  onProxyDown: ["drop", "pass"] as readonly NonNullable<Rule["onProxyDown"]>[],
  uid: { minimum: 0, maximum: 4294967294 },
  mark: { minimum: 1, maximum: 4294967295 },
  maxExemptCgroups: 16,
  /** A CIDR's text goes into a C comment: an address and a prefix length, nothing else. */
  cidrText: /^[0-9a-f.:]{2,39}\/\d{1,3}$/,
} as const;

/** Throws InterceptError("render-refused") unless @policy holds only values the templates may print. */
export function assertRenderable(policy: unknown): asserts policy is ValidPolicy {
  const refuse = (what: string, value: unknown, expected: string): never => {
    const name =
      isRecord(policy) && typeof policy.name === "string" && isProgramName(policy.name) ? ` "${policy.name}"` : "";
    throw new InterceptError(
      "render-refused",
      `refusing to render policy${name}: ${what} is ${excerpt(value)}, not ${expected}`,
    );
  };
  if (!isRecord(policy)) return refuse("the policy", policy, "an object");
  // A composed program (src/model/composition.ts) is named by its policies; the name reaches C comments only.
  if (typeof policy.name !== "string" || !isProgramName(policy.name)) {
    refuse("name", policy.name, `a name matching ${RENDER_LIMITS.name.source}`);
  }
  const rules = policy.rules;
  if (!Array.isArray(rules)) return refuse("rules", rules, "a list");
  if (rules.length > RENDER_LIMITS.maxRules)
    refuse("the rule count", rules.length, `at most ${RENDER_LIMITS.maxRules}`);
  rules.forEach((rule: unknown, position) => {
    const at = `interceptors[${position}]`;
    if (!isRecord(rule)) return refuse(at, rule, "an object");
    if (rule.index !== position) refuse(`${at}.index`, rule.index, String(position));
    if (!isPort(rule.port))
      refuse(`${at}.port`, rule.port, `an integer ${RENDER_LIMITS.port.minimum}–${RENDER_LIMITS.port.maximum}`);
    for (const field of ["originalPorts", "exceptPorts"] as const) {
      const ranges = rule[field];
      if (!Array.isArray(ranges)) return refuse(`${at}.${field}`, ranges, "a list of port ranges");
      ranges.forEach((range: unknown, i) => {
        if (!isRecord(range) || !isPort(range.first) || !isPort(range.last) || range.first > range.last) {
          refuse(
            `${at}.${field}[${i}]`,
            range,
            `a range { first, last } of ports ${RENDER_LIMITS.port.minimum}–${RENDER_LIMITS.port.maximum}, first ≤ last`,
          );
        }
      });
    }
    for (const field of ["sources", "exceptSources", "destinations"] as const) {
      const cidrs = rule[field];
      if (!Array.isArray(cidrs)) return refuse(`${at}.${field}`, cidrs, "a list of CIDRs");
      cidrs.forEach((cidr: unknown, i) => {
        if (!isCanonicalCidr(cidr))
          refuse(`${at}.${field}[${i}]`, cidr, "a network { family, address, prefixLength } in canonical form");
      });
    }
    for (const field of ["protocol", "family", "strategy"] as const) {
      const known: readonly string[] = RENDER_LIMITS[field];
      if (!known.includes(rule[field] as string)) refuse(`${at}.${field}`, rule[field], `one of ${known.join(", ")}`);
    }
    // The C has a steer path for TCP only, and reads onProxyDown on steer rules only.
    if (rule.strategy === "steer" && rule.protocol !== "tcp")
      refuse(`${at}.strategy`, rule.strategy, `"rewrite" for a ${String(rule.protocol)} rule`);
    if (rule.strategy === "steer" && !RENDER_LIMITS.onProxyDown.includes(rule.onProxyDown as "drop")) {
      refuse(`${at}.onProxyDown`, rule.onProxyDown, `one of ${RENDER_LIMITS.onProxyDown.join(", ")}`);
    }
    if (rule.strategy === "rewrite" && rule.onProxyDown !== undefined)
      refuse(`${at}.onProxyDown`, rule.onProxyDown, "absent on a rewrite rule");
  });
  if (policy.outbound !== undefined) assertOutboundRenderable(policy.outbound, rules.length, refuse);
}

/** The outbound section: numbers the C takes as case labels and constants, CIDRs as parsed bytes. */
function assertOutboundRenderable(
  outbound: unknown,
  firstIndex: number,
  refuse: (what: string, value: unknown, expected: string) => never,
): void {
  if (!isRecord(outbound)) return refuse("outbound", outbound, "an object");
  const exempt = outbound.exempt;
  if (!isRecord(exempt)) return refuse("outbound.exempt", exempt, "an object");
  const integers = (field: string, list: unknown, minimum: number, maximum: number) => {
    if (!Array.isArray(list)) return refuse(field, list, "a list");
    list.forEach((value: unknown, i) => {
      if (!Number.isInteger(value) || (value as number) < minimum || (value as number) > maximum)
        refuse(`${field}[${i}]`, value, `an integer ${minimum}–${maximum}`);
    });
  };
  integers("outbound.exempt.uids", exempt.uids, RENDER_LIMITS.uid.minimum, RENDER_LIMITS.uid.maximum);
  integers("outbound.exempt.marks", exempt.marks, RENDER_LIMITS.mark.minimum, RENDER_LIMITS.mark.maximum);
  // Exempt cgroups reach the C only as a count (their ids are written by apply).
  if (!Array.isArray(exempt.cgroups) || exempt.cgroups.length > RENDER_LIMITS.maxExemptCgroups)
    refuse("outbound.exempt.cgroups", exempt.cgroups, `a list of at most ${RENDER_LIMITS.maxExemptCgroups}`);
  const rules = outbound.rules;
  if (!Array.isArray(rules)) return refuse("outbound.rules", rules, "a list");
  if (firstIndex + rules.length > RENDER_LIMITS.maxRules)
    refuse("the rule count", firstIndex + rules.length, `at most ${RENDER_LIMITS.maxRules}`);
  rules.forEach((rule: unknown, position) => {
    const at = `outbound.rules[${position}]`;
    if (!isRecord(rule)) return refuse(at, rule, "an object");
    if (rule.index !== outboundSlot(firstIndex, position))
      refuse(`${at}.index`, rule.index, String(outboundSlot(firstIndex, position)));
    for (const field of ["originalPort", "port"] as const) {
      if (!isPort(rule[field]))
        refuse(`${at}.${field}`, rule[field], `an integer ${RENDER_LIMITS.port.minimum}–${RENDER_LIMITS.port.maximum}`);
    }
    if (!Array.isArray(rule.cidrs)) return refuse(`${at}.cidrs`, rule.cidrs, "a list");
    rule.cidrs.forEach((cidr: unknown, i) => {
      const where = `${at}.cidrs[${i}]`;
      if (!isRecord(cidr)) return refuse(where, cidr, "an object");
      if (typeof cidr.text !== "string" || !RENDER_LIMITS.cidrText.test(cidr.text))
        refuse(`${where}.text`, cidr.text, "an address/prefix");
      if (
        !Array.isArray(cidr.bytes) ||
        cidr.bytes.length !== 16 ||
        !cidr.bytes.every((byte: unknown) => Number.isInteger(byte) && (byte as number) >= 0 && (byte as number) <= 255)
      ) {
        refuse(`${where}.bytes`, cidr.bytes, "16 bytes");
      }
      if (!Number.isInteger(cidr.prefix) || (cidr.prefix as number) < 0 || (cidr.prefix as number) > 128)
        refuse(`${where}.prefix`, cidr.prefix, "an integer 0–128");
    });
  });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A Cidr exactly as validation makes it: known family, an address of it in canonical text, no host bits. */
function isCanonicalCidr(value: unknown): boolean {
  if (!isRecord(value) || typeof value.address !== "string" || !Number.isInteger(value.prefixLength)) return false;
  const reading = readCidr(`${value.address}/${String(value.prefixLength)}`);
  return (
    reading.ok && !reading.hostBits && reading.cidr.family === value.family && reading.cidr.address === value.address
  );
}

function isPort(value: unknown): value is number {
  return (
    Number.isInteger(value) &&
    (value as number) >= RENDER_LIMITS.port.minimum &&
    (value as number) <= RENDER_LIMITS.port.maximum
  );
}

/** A value for a one-line message: a string short, quoted and with control characters escaped. */
function excerpt(value: unknown): string {
  if (value === undefined) return "missing";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object" && value !== null) return "an object";
  if (typeof value !== "string") return String(value);
  const quoted = JSON.stringify(value);
  return quoted.length > 40 ? `${quoted.slice(0, 39)}…"` : quoted;
}
