import type { NetworkNamespace } from "../model/namespace.js";
import type { Link } from "./links.js";
import {
  attributeText,
  encodeRequest,
  findAttribute,
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
import { decodeQdisc, encodeDump, RTM_GETQDISC } from "./tc.js";

/*
 * A namespace's links and qdiscs, read by rtnetlink in this process: the
 * dumps `ip link show` and `tc qdisc show` ask for. Each was a process
 * (`ip -batch` entering namespaces for many, or `ip` alone), and a spawn
 * costs the agent ~15 ms of its CPU; a dump costs microseconds. The
 * messages are built and read by pure functions (here and in ./tc.ts),
 * unit-tested on messages laid out as the kernel sends them; an e2e test
 * compares the survey with `ip -j link` in a namespace.
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

/** <linux/if_arp.h> ARPHRD_LOOPBACK, <linux/if.h> IFF_LOOPBACK. */
const ARPHRD_LOOPBACK = 772;
const IFF_LOOPBACK = 0x8;

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
    const qdiscs = socket.dump((seq) => encodeDump(RTM_GETQDISC, seq, 0, 0), "RTM_GETQDISC").flatMap(decodeQdisc);
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
  const name = findAttribute(payload, IFINFOMSG_SIZE, IFLA_IFNAME);
  if (name === undefined) return [];
  return [
    {
      ifindex: payload.readInt32LE(4),
      name: attributeText(name),
      loopback: type === ARPHRD_LOOPBACK || (payload.readUInt32LE(8) & IFF_LOOPBACK) !== 0,
      linkType: LINK_TYPES.get(type) ?? `[${type}]`,
    },
  ];
}
