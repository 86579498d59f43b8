/**
 * Resource addresses, as plans name what they change (Terraform's
 * `aws_instance.web`): program.<policy>, attachment.<link>,
 * rule.<policy>[<index>], qdisc.<link>, cgroup.<path>, exemption.<policy>,
 * registry.qdiscs (the owned-qdisc registry), pins.empty (pins left empty).
 * Built only by formatAddress; parseAddress reads one back.
 */
import { isProgramName } from "./composition.js";
import { isPolicyName } from "./policy-name.js";

export type ResourceAddress =
  /** A loaded, pinned program version: a policy's own, or a composition's (src/model/composition.ts). */
  | { kind: "program"; policy: string }
  /** Our filters on a link's tc hooks. */
  | { kind: "attachment"; link: string }
  /** A rule's enabled flag, by its slot (src/model/rule-slots.ts). */
  | { kind: "rule"; policy: string; index: number }
  /** A clsact qdisc intercept made. */
  | { kind: "qdisc"; link: string }
  /** Our programs on a cgroup, by its path below the cgroup2 mount. */
  | { kind: "cgroup"; path: string }
  /** The exempt cgroups of a program's version: a policy's own, or a composition's. */
  | { kind: "exemption"; policy: string }
  /** The registry of the clsact qdiscs intercept made, by ifindex. */
  | { kind: "registry" }
  /** Pins of ours left empty by an interrupted run. */
  | { kind: "pins" };

export function formatAddress(address: ResourceAddress): string {
  switch (address.kind) {
    case "program":
    case "exemption":
      return `${address.kind}.${address.policy}`;
    case "rule":
      return `rule.${address.policy}[${address.index}]`;
    case "attachment":
    case "qdisc":
      return `${address.kind}.${address.link}`;
    case "cgroup":
      return `cgroup.${address.path}`;
    case "registry":
      return "registry.qdiscs";
    case "pins":
      return "pins.empty";
  }
}

const RULE = /^([^[\]]+)\[(0|[1-9][0-9]{0,9})\]$/;

/** The address @text names; undefined when it is not an address formatAddress could have made. */
export function parseAddress(text: string): ResourceAddress | undefined {
  const dot = text.indexOf(".");
  if (dot === -1) return undefined;
  const kind = text.slice(0, dot);
  const rest = text.slice(dot + 1);
  if (rest === "") return undefined;
  switch (kind) {
    case "program":
      return isProgramName(rest) ? { kind, policy: rest } : undefined;
    case "exemption":
      return isProgramName(rest) ? { kind, policy: rest } : undefined;
    case "rule": {
      const match = RULE.exec(rest);
      return match && isPolicyName(match[1]!) ? { kind, policy: match[1]!, index: Number(match[2]) } : undefined;
    }
    case "attachment":
    case "qdisc":
      return /[\s/]/.test(rest) ? undefined : { kind, link: rest };
    case "cgroup":
      return { kind, path: rest };
    case "registry":
      return rest === "qdiscs" ? { kind } : undefined;
    case "pins":
      return rest === "empty" ? { kind } : undefined;
    default:
      return undefined;
  }
}
