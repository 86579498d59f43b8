/**
 * The outbound section: its defaults, and the checks the schema cannot
 * express. Problems point at the later of two conflicting places, with a
 * note at the earlier one, like the interceptor checks (semantic.ts).
 */
import ipaddr from "ipaddr.js";
import type { Outbound, OutboundRule as OutboundRuleInput } from "../api.js";
import { cgroupPathProblem, cgroupWithin } from "../cgroup-path.js";
import { diagnosticAt, quoted, type Diagnostic, type DiagnosticCode, type DiagnosticNote } from "../diagnostics.js";
import type { LoadedPolicy } from "../load/index.js";
import { outboundSlot } from "../model/rule-slots.js";
import type { MappedCidr, OutboundPolicy, OutboundRule, ValidPolicy } from "./model.js";
import { mayShareNamespace } from "./namespaces.js";

/** IPv4 in the 16-byte form: ::ffff:0:0/96. */
const V4_MAPPED_PREFIX = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
const LOOPBACK = { ipv4: [...V4_MAPPED_PREFIX, 127, 0, 0, 1], ipv6: [...Array(15).fill(0), 1] };

/** The outbound section with defaults filled in; its rules' map keys start at @firstIndex (after the interceptors). */
export function normaliseOutbound(outbound: Outbound, firstIndex: number): OutboundPolicy {
  return {
    cgroups: [...outbound.cgroups],
    exempt: {
      uids: [...(outbound.exempt.uids ?? [])],
      cgroups: [...(outbound.exempt.cgroups ?? [])],
      marks: [...(outbound.exempt.marks ?? [])],
    },
    rules: outbound.rules.map((rule, position) => outboundRule(rule, position, outboundSlot(firstIndex, position))),
  };
}

function outboundRule(rule: OutboundRuleInput, position: number, index: number): OutboundRule {
  return {
    index,
    position,
    originalPort: rule.originalPort,
    port: rule.port,
    cidrs: (rule.cidrs ?? []).map((text) => {
      const parsed = parseCidr(text);
      if (parsed.kind === "invalid") throw new Error(`unchecked CIDR ${JSON.stringify(text)}: ${parsed.why}`);
      return parsed.cidr;
    }),
    enabled: rule.enabled ?? true,
    ...(rule.description !== undefined && { description: rule.description }),
  };
}

type ParsedCidr = { kind: "valid"; cidr: MappedCidr } | { kind: "invalid"; why: string; suggestion?: string };

/** A CIDR as written ("10.0.0.0/8", "fd00::/8"), in the datapath's 16-byte form; host bits set are an error. */
export function parseCidr(text: string): ParsedCidr {
  let address: ipaddr.IPv4 | ipaddr.IPv6;
  let prefix: number;
  try {
    [address, prefix] = ipaddr.parseCIDR(text);
  } catch {
    return { kind: "invalid", why: "is not a CIDR (an address, /, a prefix length: 10.0.0.0/8, fd00::/8)" };
  }
  const family = address.kind();
  const bytes = address.toByteArray();
  const network = masked(bytes, prefix);
  const canonical = `${ipaddr.fromByteArray(network).toString()}/${prefix}`;
  if (network.some((byte, i) => byte !== bytes[i])) {
    return { kind: "invalid", why: `has host bits set: the network is ${canonical}`, suggestion: canonical };
  }
  const mapped = family === "ipv4" ? [...V4_MAPPED_PREFIX, ...network] : network;
  return {
    kind: "valid",
    cidr: { family, bytes: mapped, prefix: family === "ipv4" ? prefix + 96 : prefix, text: canonical },
  };
}

function masked(bytes: number[], prefix: number): number[] {
  return bytes.map((byte, i) => byte & (0xff << (8 - Math.max(0, Math.min(8, prefix - i * 8)))) & 0xff);
}

/** Whether two networks share an address. */
function overlaps(a: MappedCidr, b: MappedCidr): boolean {
  const shorter = Math.min(a.prefix, b.prefix);
  const [x, y] = [masked(a.bytes, shorter), masked(b.bytes, shorter)];
  return x.every((byte, i) => byte === y[i]);
}

function contains(cidr: MappedCidr, address: number[]): boolean {
  return overlaps(cidr, { family: cidr.family, bytes: address, prefix: 128, text: "" });
}

/** The destinations a rule's cidrs leave open: all when it has none. */
function rulesOverlap(a: OutboundRule, b: OutboundRule): boolean {
  if (a.cidrs.length === 0 || b.cidrs.length === 0) return true;
  return a.cidrs.some((x) => b.cidrs.some((y) => overlaps(x, y)));
}

function reachesLoopback(rule: OutboundRule): boolean {
  return (
    rule.cidrs.length === 0 || rule.cidrs.some((cidr) => contains(cidr, LOOPBACK.ipv4) || contains(cidr, LOOPBACK.ipv6))
  );
}

/**
 * Checks of one policy's outbound section, on the parts that passed the
 * schema (@passed tells by JSON pointer): cgroup paths, CIDRs, the
 * exemption, and rules against each other.
 */
export function checkOutbound(loaded: LoadedPolicy, passed: (pointer: string) => boolean): Diagnostic[] {
  const outbound = (loaded.value as { outbound?: Partial<Outbound> }).outbound;
  if (typeof outbound !== "object" || outbound === null || Array.isArray(outbound)) return [];
  const diagnostics: Diagnostic[] = [];
  const at = (
    code: DiagnosticCode,
    pointer: string,
    message: string,
    extra: { notes?: DiagnosticNote[]; suggestion?: string } = {},
    part: "key" | "value" = "value",
  ) => diagnostics.push(diagnosticAt(code, loaded.sourceMap.locate(pointer, part), message, extra));
  const note = (pointer: string, message: string, part: "key" | "value" = "value"): DiagnosticNote => ({
    ...loaded.sourceMap.locate(pointer, part),
    message,
  });

  // cgroups: each a usable path, none twice, none inside another, none both captured and exempt.
  const cgroups: { path: string; pointer: string; exempt: boolean }[] = [];
  const lists = [
    { list: outbound.cgroups, pointer: "/outbound/cgroups", exempt: false },
    { list: outbound.exempt?.cgroups, pointer: "/outbound/exempt/cgroups", exempt: true },
  ];
  for (const { list, pointer, exempt } of lists) {
    if (!Array.isArray(list)) continue;
    list.forEach((path, index) => {
      const item = `${pointer}/${index}`;
      if (typeof path !== "string" || !passed(item)) return;
      const problem = cgroupPathProblem(path);
      if (problem) at("outbound/cgroup-path", item, `cgroup ${quoted(path)} ${problem}`);
      else cgroups.push({ path, pointer: item, exempt });
    });
  }
  cgroups.forEach((cgroup, i) => {
    for (const earlier of cgroups.slice(0, i)) {
      const what = (c: typeof cgroup) => (c.exempt ? "exempt" : "captured");
      if (cgroup.path === earlier.path) {
        at(
          cgroup.exempt === earlier.exempt ? "outbound/duplicate-cgroup" : "outbound/exempt-captured",
          cgroup.pointer,
          cgroup.exempt === earlier.exempt
            ? `cgroup ${quoted(cgroup.path)} is named twice`
            : `cgroup ${quoted(cgroup.path)} is both captured and exempt`,
          { notes: [note(earlier.pointer, `${what(earlier)} here`)] },
        );
        return;
      }
      const [inner, outer] = cgroupWithin(cgroup.path, earlier.path)
        ? [cgroup, earlier]
        : cgroupWithin(earlier.path, cgroup.path)
          ? [earlier, cgroup]
          : [];
      if (!inner || !outer) continue;
      if (outer.exempt && !inner.exempt) {
        at(
          "outbound/exempt-captured",
          cgroup.pointer,
          `captured cgroup ${quoted(inner.path)} lies inside exempt cgroup ${quoted(outer.path)}: its connections would never be captured`,
          { notes: [note(earlier.pointer, `${what(earlier)} here`)] },
        );
        return;
      }
      if (!outer.exempt && !inner.exempt) {
        at(
          "outbound/duplicate-cgroup",
          cgroup.pointer,
          `cgroup ${quoted(inner.path)} lies inside captured cgroup ${quoted(outer.path)}, which captures its connections already`,
          { notes: [note(earlier.pointer, "captured here")] },
        );
        return;
      }
    }
  });

  const exempt = outbound.exempt;
  if (
    typeof exempt === "object" &&
    exempt !== null &&
    !Array.isArray(exempt) &&
    passed("/outbound/exempt") &&
    !exempt.uids &&
    !exempt.cgroups &&
    !exempt.marks
  ) {
    at(
      "outbound/no-exemption",
      "/outbound/exempt",
      "outbound.exempt names nobody: give the proxy's uids, cgroups or marks, or its own connections to the original destinations would be sent back to it",
    );
  }

  if (Array.isArray(outbound.rules)) checkRules(outbound.rules, passed, at, note);
  return diagnostics;
}

type At = (
  code: DiagnosticCode,
  pointer: string,
  message: string,
  extra?: { notes?: DiagnosticNote[]; suggestion?: string },
  part?: "key" | "value",
) => void;
type Note = (pointer: string, message: string, part?: "key" | "value") => DiagnosticNote;

/** CIDRs, then rules against each other: none captures a proxy's port on loopback, no two capture one destination. */
function checkRules(inputs: OutboundRuleInput[], passed: (pointer: string) => boolean, at: At, note: Note): void {
  const rules: OutboundRule[] = [];
  inputs.forEach((input, position) => {
    const pointer = `/outbound/rules/${position}`;
    if (!passed(pointer)) return;
    let valid = true;
    (input.cidrs ?? []).forEach((text, i) => {
      const parsed = parseCidr(text);
      if (parsed.kind === "invalid") {
        valid = false;
        at(
          "outbound/bad-cidr",
          `${pointer}/cidrs/${i}`,
          `${quoted(text)} ${parsed.why}`,
          parsed.suggestion ? { suggestion: JSON.stringify(parsed.suggestion) } : {},
        );
      }
    });
    if (valid) rules.push(outboundRule(input, position, position));
  });
  const place = (rule: OutboundRule, field: string) => `/outbound/rules/${rule.position}/${field}`;
  for (const rule of rules) {
    const proxy = rules.find((other) => other.port === rule.originalPort);
    if (proxy && reachesLoopback(rule)) {
      at(
        "outbound/captures-proxy",
        place(rule, "originalPort"),
        `originalPort ${rule.originalPort} is the proxy port of outbound.rules[${proxy.position}]: this rule would capture connections to the proxy itself${rule.cidrs.length === 0 ? " (limit it with cidrs that leave out 127.0.0.1 and ::1)" : ""}`,
        { notes: [note(place(proxy, "port"), `the proxy listens on ${proxy.port} here`, "key")] },
        "key",
      );
    }
    const earlier = rules.find(
      (other) =>
        other.position < rule.position && other.originalPort === rule.originalPort && rulesOverlap(other, rule),
    );
    if (earlier) {
      at(
        "outbound/overlapping-rules",
        place(rule, "originalPort"),
        `outbound.rules[${rule.position}] captures connections to port ${rule.originalPort} that outbound.rules[${earlier.position}] captures already${earlier.cidrs.length > 0 && rule.cidrs.length > 0 ? " (their cidrs overlap)" : ""}`,
        {
          notes: [
            note(place(earlier, "originalPort"), `outbound.rules[${earlier.position}] captures them here`, "key"),
          ],
        },
        "key",
      );
    }
  }
}

/**
 * Whether a policy has tc programs for links: one with interceptors, or
 * without an outbound section (the classic form, even with no rule). An
 * outbound-only policy touches no link.
 */
export function attachesToLinks(policy: Pick<ValidPolicy, "rules" | "outbound">): boolean {
  return policy.rules.length > 0 || policy.outbound === undefined;
}

interface NamedPolicy {
  loaded: LoadedPolicy;
  policy: ValidPolicy;
}

/**
 * Across policies: policies that capture one cgroup compose into one
 * program there, so their outbound rules are checked against each other as
 * one policy's are (at the later policy's rule, with a note at the
 * earlier's, in its own file); a cgroup one policy captures may not be
 * another's exemption. Policies that can never share a namespace are apart.
 */
export function checkOutboundAcrossPolicies(checked: readonly NamedPolicy[]): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  const withOutbound = checked.filter((entry) => entry.policy.outbound !== undefined);
  withOutbound.forEach((earlier, i) => {
    for (const later of withOutbound.slice(i + 1)) {
      if (!mayShareNamespace(earlier.policy, later.policy)) continue;
      diagnostics.push(...exemptCapturedAcross(earlier, later), ...exemptCapturedAcross(later, earlier));
      const shared = later.policy.outbound!.cgroups.find((path) => earlier.policy.outbound!.cgroups.includes(path));
      if (shared !== undefined) diagnostics.push(...overlappingRulesAcross(earlier, later, shared));
    }
  });
  return diagnostics;
}

/** @exempting's exempt cgroups that @capturing captures: located at the exemption, a note at the capture. */
function exemptCapturedAcross(capturing: NamedPolicy, exempting: NamedPolicy): Diagnostic[] {
  const captured = capturing.policy.outbound!.cgroups;
  return exempting.policy.outbound!.exempt.cgroups.flatMap((path, i) => {
    const at = captured.indexOf(path);
    if (at === -1) return [];
    return [
      diagnosticAt(
        "outbound/exempt-captured",
        exempting.loaded.sourceMap.locate(`/outbound/exempt/cgroups/${i}`),
        `cgroup ${quoted(path)} is exempt here and captured by policy ${quoted(capturing.policy.name)}: the proxy's own connections would be captured`,
        { notes: [{ ...capturing.loaded.sourceMap.locate(`/outbound/cgroups/${at}`), message: "captured here" }] },
      ),
    ];
  });
}

/** @later's outbound rules that capture what one of @earlier's captures on cgroup @shared, which both capture. */
function overlappingRulesAcross(earlier: NamedPolicy, later: NamedPolicy, shared: string): Diagnostic[] {
  const place = (rule: OutboundRule, field: string) => `/outbound/rules/${rule.position}/${field}`;
  return later.policy.outbound!.rules.flatMap((rule) => {
    const other = earlier.policy.outbound!.rules.find(
      (candidate) => candidate.originalPort === rule.originalPort && rulesOverlap(candidate, rule),
    );
    if (!other) return [];
    const name = `${earlier.policy.name}: outbound.rules[${other.position}]`;
    return [
      diagnosticAt(
        "outbound/overlapping-rules",
        later.loaded.sourceMap.locate(place(rule, "originalPort"), "key"),
        `outbound.rules[${rule.position}] captures connections to port ${rule.originalPort} that ${name} captures already on cgroup ${quoted(shared)}${other.cidrs.length > 0 && rule.cidrs.length > 0 ? " (their cidrs overlap)" : ""}: give each a cidrs list of its own, or one rule to both`,
        {
          notes: [
            {
              ...earlier.loaded.sourceMap.locate(place(other, "originalPort"), "key"),
              message: `${name} captures them here`,
            },
          ],
        },
      ),
    ];
  });
}
