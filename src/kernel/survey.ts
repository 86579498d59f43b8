import type { NetworkNamespace } from "../model/namespace.js";
import type { Link } from "./links.js";
import {
  encodeRequest,
  IFINFOMSG_SIZE,
  IFLA_IFNAME,
  type NetlinkMessage,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  RTM_GETLINK,
  RTM_NEWLINK,
  type RouteSocket,
  withRouteSocket,
} from "./netlink.js";
import { RTM_NEWQDISC, TCA_KIND, TCMSG_SIZE } from "./tc.js";

/*
 * A namespace's links and qdiscs, read by rtnetlink in this process: the
 * dumps `ip link show` and `tc qdisc show` ask for. Each was a process
 * (`ip -batch` entering namespaces for many, or `ip` alone), and a spawn
 * costs the agent ~15 ms of its CPU; a dump costs microseconds. The
 * messages are built and read by the pure functions below, unit-tested
 * against bytes the kernel sent.
 */

/** A namespace's links, and which of them have a qdisc that tc filters hang on. */
export interface LinkSurvey {
  links: Link[];
  /**
   * Links with a clsact or ingress qdisc: only they can hold a tc filter on
   * the ingress or egress hook (a classic tc filter needs its qdisc), so
   * only their filters need to be asked for.
   */
  filterHolders: Set<string>;
}

/** The qdiscs on which ingress and egress filters are attached. */
const FILTER_QDISCS = new Set(["clsact", "ingress"]);

/** <linux/rtnetlink.h>: the qdisc dump's request. */
const RTM_GETQDISC = 38;
/** <linux/if_arp.h> ARPHRD_LOOPBACK, <linux/if.h> IFF_LOOPBACK. */
const ARPHRD_LOOPBACK = 772;
const IFF_LOOPBACK = 0x8;
/** struct rtattr: rta_len (u16), rta_type (u16), then the value, padded to 4 bytes. */
const RTA_HDRLEN = 4;

/**
 * The names `ip -j link` gives a link's ARPHRD_* type (iproute2's
 * lib/ll_types.c), for the types a namespace commonly has; any other is
 * shown as ip shows it, "[number]". Only "ether" decides anything here
 * (intercept attaches to Ethernet links); the others name a link in a
 * message.
 */
const LINK_TYPES = new Map<number, string>([
  [1, "ether"],
  [32, "infiniband"],
  [280, "can"],
  [512, "ppp"],
  [768, "ipip"],
  [769, "tunnel6"],
  [772, "loopback"],
  [776, "sit"],
  [778, "gre"],
  [801, "ieee802.11"],
  [823, "gre6"],
  [824, "netlink"],
  [65534, "none"],
  [65535, "void"],
]);

/**
 * The links and filter qdiscs of @netns (the namespace this process runs
 * in when unnamed), from two rtnetlink dumps on one socket made there.
 */
export async function surveyLinks(netns: NetworkNamespace): Promise<LinkSurvey> {
  return withRouteSocket(netns, (socket) => {
    const links = dump(socket, RTM_GETLINK, IFINFOMSG_SIZE, "RTM_GETLINK").flatMap(decodeLink);
    const qdiscs = dump(socket, RTM_GETQDISC, TCMSG_SIZE, "RTM_GETQDISC").flatMap(decodeQdisc);
    const names = new Map(links.map((link) => [link.ifindex, link.name]));
    const filterHolders = new Set(
      qdiscs.filter((qdisc) => FILTER_QDISCS.has(qdisc.kind)).flatMap((qdisc) => names.get(qdisc.ifindex) ?? []),
    );
    return { links, filterHolders };
  });
}

/** The links of @netns (the namespace this process runs in when unnamed): `ip link show`'s dump. */
export async function listLinks(netns: NetworkNamespace): Promise<Link[]> {
  return withRouteSocket(netns, (socket) =>
    dump(socket, RTM_GETLINK, IFINFOMSG_SIZE, "RTM_GETLINK").flatMap(decodeLink),
  );
}

function dump(socket: RouteSocket, type: number, headerSize: number, what: string): NetlinkMessage[] {
  return socket.dump((seq) => encodeDumpRequest(type, seq, headerSize), what);
}

/**
 * A dump request of @type: the header and a zeroed family header of
 * @headerSize bytes (AF_UNSPEC, no filter: every link, every qdisc).
 */
export function encodeDumpRequest(type: number, seq: number, headerSize: number): Buffer {
  return encodeRequest(type, NLM_F_REQUEST | NLM_F_DUMP, seq, Buffer.alloc(headerSize), []);
}

/** A link of an RTM_GETLINK dump; none for another message or one without a name. */
export function decodeLink(message: NetlinkMessage): Link[] {
  if (message.type !== RTM_NEWLINK || message.payload.length < IFINFOMSG_SIZE) return [];
  const { payload } = message;
  const type = payload.readUInt16LE(2);
  const name = stringAttribute(payload, IFINFOMSG_SIZE, IFLA_IFNAME);
  if (name === undefined) return [];
  return [
    {
      ifindex: payload.readInt32LE(4),
      name,
      loopback: type === ARPHRD_LOOPBACK || (payload.readUInt32LE(8) & IFF_LOOPBACK) !== 0,
      linkType: LINK_TYPES.get(type) ?? `[${type}]`,
    },
  ];
}

/** A qdisc of an RTM_GETQDISC dump (its link's index and kind); none for another message. */
export function decodeQdisc(message: NetlinkMessage): { ifindex: number; kind: string }[] {
  if (message.type !== RTM_NEWQDISC || message.payload.length < TCMSG_SIZE) return [];
  const kind = stringAttribute(message.payload, TCMSG_SIZE, TCA_KIND);
  return kind === undefined ? [] : [{ ifindex: message.payload.readInt32LE(4), kind }];
}

/** The string attribute @type among the attributes from @offset (NUL-terminated), if present. */
function stringAttribute(payload: Buffer, offset: number, type: number): string | undefined {
  while (offset + RTA_HDRLEN <= payload.length) {
    const length = payload.readUInt16LE(offset);
    if (length < RTA_HDRLEN || offset + length > payload.length) return undefined;
    if (payload.readUInt16LE(offset + 2) === type) {
      const value = payload.subarray(offset + RTA_HDRLEN, offset + length);
      const end = value.indexOf(0);
      return value.toString("utf8", 0, end === -1 ? value.length : end);
    }
    offset += Math.ceil(length / 4) * 4;
  }
  return undefined;
}
