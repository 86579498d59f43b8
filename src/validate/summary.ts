/**
 * A rule in one short line, the way plan, status and metrics name it:
 *
 *   tcp 8000 → 9000
 *   tcp *:!22,15020-15021 → 15006                 every port but 22, 15020 and 15021
 *   tcp 9000-9100:!9050 to 198.18.0.1 → 9443       to one address
 *   udp ipv6 53 from 10.0.0.0/8,!10.1.0.0/16 → 5353
 *
 * Ports as written (normalised), then `:!` and the exceptions; `to` the
 * destinations, `from` the sources with their exceptions marked `!`; the
 * family only when nothing else shows it. Long lists are cut after a few
 * entries with a count, so a label stays short.
 */
import { cidrText } from "./addresses.js";
import type { Cidr, PortRange, Rule } from "./model.js";
import { EVERY_PORT, portRangeText } from "./selectors.js";

/** Entries of one list shown before the rest is counted. */
const SHOWN_ENTRIES = 3;

export function ruleSummary(rule: Rule): string {
  const parts: string[] = [rule.protocol];
  const addressed = rule.sources.length + rule.exceptSources.length + rule.destinations.length > 0;
  if (rule.family !== "any" && !addressed) parts.push(rule.family);
  parts.push(portsText(rule.originalPorts, rule.exceptPorts));
  if (rule.destinations.length > 0) parts.push("to", listText(rule.destinations.map(cidrText)));
  if (rule.sources.length + rule.exceptSources.length > 0) {
    parts.push(
      "from",
      listText([...rule.sources.map(cidrText), ...rule.exceptSources.map((cidr: Cidr) => `!${cidrText(cidr)}`)]),
    );
  }
  parts.push("→", String(rule.port));
  return parts.join(" ");
}

/** "*", "8000,9000-9100", "*:!22,15020-15021". */
function portsText(ports: PortRange[], except: PortRange[]): string {
  const every = ports.length === 1 && ports[0]!.first === EVERY_PORT.first && ports[0]!.last === EVERY_PORT.last;
  const included = every ? "*" : listText(ports.map(portRangeText));
  return except.length === 0 ? included : `${included}:!${listText(except.map(portRangeText))}`;
}

function listText(entries: string[]): string {
  if (entries.length <= SHOWN_ENTRIES + 1) return entries.join(",");
  return `${entries.slice(0, SHOWN_ENTRIES).join(",")},…(+${entries.length - SHOWN_ENTRIES})`;
}
