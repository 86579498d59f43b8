import { closeSync, constants as fsConstants, openSync } from "node:fs";
import { constants } from "node:os";
import path from "node:path";
import { CommandError, InterceptError, messageOf } from "../errors.js";
import { describeNamespace, NETNS_DIR, type NetworkNamespace } from "../model/namespace.js";
import { bindLibc } from "./libc.js";

/*
 * rtnetlink in this process, for the exchanges the agent makes per
 * namespace: give a namespace an id here (what `ip netns set NAME auto`
 * does) and read it back (what `ip netns list` shows), and, on a socket
 * made inside a namespace (RouteSocket.openIn, withRouteSocket), tc's
 * qdisc and filter requests (./tc.ts) and the dumps of its links, qdiscs
 * and filters (./survey.ts, ./tc.ts). Each was an `ip` or `tc` process,
 * and a spawn costs the agent ~13 ms of its CPU; a request here costs
 * microseconds. The messages are built and read by pure functions
 * (unit-tested against known bytes); the socket is libc's, bound through
 * koffi as flock(2) and bpf(2) are (./libc.ts, ./bpf-syscall.ts).
 */

/** <sys/socket.h>, <linux/netlink.h>: a NETLINK_ROUTE socket. */
const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_ROUTE = 0;
const MSG_DONTWAIT = 0x40;
/** struct sockaddr_nl: nl_family (u16), nl_pad (u16), nl_pid (u32: 0 is the kernel), nl_groups (u32). */
const SOCKADDR_NL_SIZE = 12;

/** struct nlmsghdr: nlmsg_len (u32), nlmsg_type (u16), nlmsg_flags (u16), nlmsg_seq (u32), nlmsg_pid (u32). */
export const NLMSG_HDRLEN = 16;
const NLMSG_ALIGNTO = 4;
export const NLMSG_ERROR = 2;
/** The end of a dump's answer. */
export const NLMSG_DONE = 3;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_ACK = 0x4;
/** NLM_F_ROOT | NLM_F_MATCH: every object of the kind, over as many datagrams as it takes. */
export const NLM_F_DUMP = 0x300;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
/** In an NLMSG_ERROR: the request's header only (NETLINK_CAP_ACK), then attributes (NETLINK_EXT_ACK). */
const NLM_F_CAPPED = 0x100;
const NLM_F_ACK_TLVS = 0x200;
/** <linux/netlink.h>: socket options (level SOL_NETLINK) and the extended ack's message attribute. */
const SOL_NETLINK = 270;
const NETLINK_CAP_ACK = 10;
const NETLINK_EXT_ACK = 11;
const NLMSGERR_ATTR_MSG = 1;
/** <sched.h>: setns(2)'s namespace type. */
const CLONE_NEWNET = 0x40000000;

/** <linux/rtnetlink.h>: namespace ids. */
export const RTM_NEWNSID = 88;
export const RTM_GETNSID = 90;
/** struct rtgenmsg (rtgen_family, u8), padded to NLMSG_ALIGNTO: what follows the header of an nsid message. */
const RTGENMSG_SIZE = 4;
const AF_UNSPEC = 0;

/** <linux/net_namespace.h>: an nsid message's attributes (struct rtattr: rta_len u16, rta_type u16, then the value). */
export const NETNSA_NSID = 1;
export const NETNSA_FD = 3;
const RTA_HDRLEN = 4;
/** NETNSA_NSID's value for "none": asked of RTM_NEWNSID, the kernel picks the id (`auto`); answered, there is none. */
export const NETNSA_NSID_NOT_ASSIGNED = -1;

/** A route attribute: a value's bytes, or nested attributes (written without NLA_F_NESTED, as tc does). */
export interface Attribute {
  type: number;
  value: Buffer | readonly Attribute[];
}

/** An attribute's bytes: rta_len, rta_type, the value, padded to NLMSG_ALIGNTO. */
export function encodeAttribute({ type, value }: Attribute): Buffer {
  const body = Buffer.isBuffer(value) ? value : Buffer.concat(value.map(encodeAttribute));
  const attribute = Buffer.alloc(align(RTA_HDRLEN + body.length));
  attribute.writeUInt16LE(RTA_HDRLEN + body.length, 0);
  attribute.writeUInt16LE(type, 2);
  body.copy(attribute, RTA_HDRLEN);
  return attribute;
}

/** <linux/netlink.h>: an attribute's type without its flags (NLA_F_NESTED, NLA_F_NET_BYTEORDER). */
const NLA_TYPE_MASK = 0x3fff;

/**
 * The value of attribute @type among the attributes that start at @offset
 * of @attributes (a message's payload, or a nested attribute's value);
 * undefined when absent, or when a malformed attribute ends the walk.
 */
export function findAttribute(attributes: Buffer, offset: number, type: number): Buffer | undefined {
  while (offset + RTA_HDRLEN <= attributes.length) {
    const length = attributes.readUInt16LE(offset);
    if (length < RTA_HDRLEN || offset + length > attributes.length) return undefined;
    if ((attributes.readUInt16LE(offset + 2) & NLA_TYPE_MASK) === type)
      return attributes.subarray(offset + RTA_HDRLEN, offset + length);
    offset += align(length);
  }
  return undefined;
}

/** A string attribute's text: up to its NUL. */
export function attributeText(value: Buffer): string {
  const end = value.indexOf(0);
  return value.toString("utf8", 0, end === -1 ? value.length : end);
}

/** A 32-bit unsigned attribute value. */
export function u32Value(value: number): Buffer {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32LE(value >>> 0);
  return bytes;
}

/** A string attribute value: its bytes and a NUL. */
export function stringValue(value: string): Buffer {
  return Buffer.from(`${value}\0`);
}

/**
 * A request: the header, the message type's fixed part (@fixed: a tcmsg,
 * an ifinfomsg, …) and @attributes. nlmsg_pid 0: the kernel fills in our port.
 */
export function encodeRequest(
  type: number,
  flags: number,
  seq: number,
  fixed: Buffer,
  attributes: readonly Attribute[],
): Buffer {
  const message = Buffer.concat([Buffer.alloc(NLMSG_HDRLEN), fixed, ...attributes.map(encodeAttribute)]);
  message.writeUInt32LE(message.length, 0);
  message.writeUInt16LE(type, 4);
  message.writeUInt16LE(flags, 6);
  message.writeUInt32LE(seq, 8);
  return message;
}

/** <linux/rtnetlink.h>, <linux/if_link.h>: one link by name. */
export const RTM_NEWLINK = 16;
export const RTM_GETLINK = 18;
export const IFLA_IFNAME = 3;
const IFLA_EXT_MASK = 29;
const RTEXT_FILTER_SKIP_STATS = 1 << 3;
/** struct ifinfomsg: ifi_family (u8), pad, ifi_type (u16), ifi_index (i32), ifi_flags, ifi_change (u32). */
export const IFINFOMSG_SIZE = 16;

/** RTM_GETLINK of the link called @name, its statistics left out of the answer. */
export function encodeLinkRequest(seq: number, name: string): Buffer {
  return encodeRequest(RTM_GETLINK, NLM_F_REQUEST, seq, Buffer.alloc(IFINFOMSG_SIZE), [
    { type: IFLA_IFNAME, value: stringValue(name) },
    { type: IFLA_EXT_MASK, value: u32Value(RTEXT_FILTER_SKIP_STATS) },
  ]);
}

/** One netlink message as read: its header's fields and its payload (after the header, before the padding). */
export interface NetlinkMessage {
  type: number;
  flags: number;
  seq: number;
  payload: Buffer;
}

const align = (length: number) => Math.ceil(length / NLMSG_ALIGNTO) * NLMSG_ALIGNTO;

/**
 * An nsid request (RTM_NEWNSID or RTM_GETNSID): the header, an rtgenmsg
 * of AF_UNSPEC, and each of @attributes as a 32-bit signed value.
 */
export function encodeNsidRequest(
  type: number,
  flags: number,
  seq: number,
  attributes: readonly (readonly [type: number, value: number])[],
): Buffer {
  const length = NLMSG_HDRLEN + RTGENMSG_SIZE + attributes.length * align(RTA_HDRLEN + 4);
  const message = Buffer.alloc(length);
  message.writeUInt32LE(length, 0);
  message.writeUInt16LE(type, 4);
  message.writeUInt16LE(flags, 6);
  message.writeUInt32LE(seq, 8);
  // nlmsg_pid 0: the kernel fills in our port. rtgen_family AF_UNSPEC and its padding: zeros.
  message.writeUInt8(AF_UNSPEC, NLMSG_HDRLEN);
  let offset = NLMSG_HDRLEN + RTGENMSG_SIZE;
  for (const [attribute, value] of attributes) {
    message.writeUInt16LE(RTA_HDRLEN + 4, offset);
    message.writeUInt16LE(attribute, offset + 2);
    message.writeInt32LE(value, offset + RTA_HDRLEN);
    offset += align(RTA_HDRLEN + 4);
  }
  return message;
}

/** The messages of one datagram as the kernel sent it; a truncated or malformed one ends the list with an error. */
export function decodeMessages(datagram: Buffer): NetlinkMessage[] {
  const messages: NetlinkMessage[] = [];
  for (let offset = 0; offset + NLMSG_HDRLEN <= datagram.length; ) {
    const length = datagram.readUInt32LE(offset);
    if (length < NLMSG_HDRLEN || offset + length > datagram.length)
      throw new InterceptError("command-failed", `rtnetlink: malformed message (length ${length} at ${offset})`);
    messages.push({
      type: datagram.readUInt16LE(offset + 4),
      flags: datagram.readUInt16LE(offset + 6),
      seq: datagram.readUInt32LE(offset + 8),
      payload: datagram.subarray(offset + NLMSG_HDRLEN, offset + length),
    });
    offset += align(length);
  }
  return messages;
}

/** An NLMSG_ERROR's errno (struct nlmsgerr: int error, negative, then the request's header): 0 is an ack. */
export function decodeError(message: NetlinkMessage): number {
  if (message.payload.length < 4) throw new InterceptError("command-failed", "rtnetlink: truncated error message");
  return 0 - message.payload.readInt32LE(0); // 0, not -0, for an ack
}

/** What an NLMSG_ERROR says: its errno (0: an ack) and the kernel's extended ack message, if it gave one. */
export interface Acknowledgement {
  errno: number;
  extack?: string;
}

/**
 * An NLMSG_ERROR read whole: struct nlmsgerr (int error, then the
 * request's header, and the request's payload unless NLM_F_CAPPED), then,
 * with NLM_F_ACK_TLVS, attributes of which NLMSGERR_ATTR_MSG is the
 * kernel's message (a C string).
 */
export function decodeAcknowledgement(message: NetlinkMessage): Acknowledgement {
  const errno = decodeError(message);
  if (!(message.flags & NLM_F_ACK_TLVS) || message.payload.length < 4 + NLMSG_HDRLEN) return { errno };
  const payload = message.payload;
  const request = message.flags & NLM_F_CAPPED ? NLMSG_HDRLEN : payload.readUInt32LE(4);
  const text = findAttribute(payload, 4 + align(request), NLMSGERR_ATTR_MSG);
  return text === undefined ? { errno } : { errno, extack: attributeText(text) };
}

/** An nsid answer's NETNSA_NSID (NETNSA_NSID_NOT_ASSIGNED: the namespace has none here); undefined if absent. */
export function decodeNsid(message: NetlinkMessage): number | undefined {
  const nsid = findAttribute(message.payload, RTGENMSG_SIZE, NETNSA_NSID);
  return nsid !== undefined && nsid.length >= 4 ? nsid.readInt32LE(0) : undefined;
}

/** An errno's name, for a message ("EPERM"); its number if Node does not know it. */
export function errnoName(errno: number): string {
  return Object.entries(constants.errno).find(([, value]) => value === errno)?.[0] ?? `errno ${errno}`;
}

interface Libc {
  socket: (domain: number, type: number, protocol: number) => number;
  sendto: (fd: number, buf: Buffer, len: number, flags: number, addr: Buffer, addrlen: number) => number | bigint;
  recv: (fd: number, buf: Buffer, len: number, flags: number) => number | bigint;
  close: (fd: number) => number;
  setns: (fd: number, type: number) => number;
  setsockopt: (fd: number, level: number, name: number, value: Buffer, length: number) => number;
  strerror: (errno: number) => string;
  errno: () => number;
}

let libcCalls: Libc | undefined;

/** libc's socket calls, bound once (./libc.ts). */
function libc(): Libc {
  if (libcCalls) return libcCalls;
  const { koffi, lib } = bindLibc("socket calls");
  libcCalls = {
    socket: lib.func("int socket(int domain, int type, int protocol)") as Libc["socket"],
    sendto: lib.func(
      "long sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)",
    ) as Libc["sendto"],
    recv: lib.func("long recv(int fd, void *buf, size_t len, int flags)") as Libc["recv"],
    close: lib.func("int close(int fd)") as Libc["close"],
    setns: lib.func("int setns(int fd, int nstype)") as Libc["setns"],
    setsockopt: lib.func(
      "int setsockopt(int fd, int level, int name, const void *value, uint32_t length)",
    ) as Libc["setsockopt"],
    strerror: lib.func("const char *strerror(int errnum)") as Libc["strerror"],
    errno: () => koffi.errno(),
  };
  return libcCalls;
}

/** strerror(3) of @errno, as tc and ip print it ("No such device"). */
export function errnoText(errno: number): string {
  return libc().strerror(errno);
}

/**
 * The biggest answer we take: an nsid answer or an error is under 100
 * bytes, a link's (RTEXT_FILTER_SKIP_STATS) a few KiB.
 */
const RECEIVE_BUFFER = 32768;

/**
 * A NETLINK_ROUTE socket in this process's network namespace (close-on-exec).
 * Requests are answered at once: rtnetlink handles a request within the
 * sender's sendto(2), so the answer is queued when it returns and is read
 * without waiting (a missing one is an error, never a hang of the agent).
 */
export class RouteSocket {
  private seq = 0;
  private readonly buffer = Buffer.alloc(RECEIVE_BUFFER);
  private readonly address = Buffer.alloc(SOCKADDR_NL_SIZE);

  private constructor(
    private readonly calls: Libc,
    private fd: number,
  ) {
    this.address.writeUInt16LE(AF_NETLINK, 0); // nl_pid 0, nl_groups 0: to the kernel
  }

  static open(): RouteSocket {
    const calls = libc();
    const fd = calls.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) throw failure("socket(AF_NETLINK, NETLINK_ROUTE)", calls.errno());
    // The kernel's own words on a refusal, and acks without a copy of the request (best effort: an
    // older kernel without them still answers, with an errno only).
    const one = u32Value(1);
    calls.setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, one, one.length);
    calls.setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, one, one.length);
    return new RouteSocket(calls, fd);
  }

  /**
   * A NETLINK_ROUTE socket of the network namespace open at @nsFd: made
   * there and bound to it for its life. This thread joins that namespace
   * for the socket(2) call alone (setns(2) moves only the calling thread;
   * nothing else runs on the JavaScript thread meanwhile) and returns to
   * its own at once. One that could not return would act in the wrong
   * namespace from then on: the process aborts rather than go on.
   */
  static openIn(nsFd: number): RouteSocket {
    const calls = libc();
    const own = openSync("/proc/thread-self/ns/net", "r"); // close-on-exec, as Node opens every file;
    try {
      if (calls.setns(nsFd, CLONE_NEWNET) !== 0) throw failure("setns(CLONE_NEWNET)", calls.errno());
      try {
        return RouteSocket.open();
      } finally {
        if (calls.setns(own, CLONE_NEWNET) !== 0) process.abort();
      }
    } finally {
      closeSync(own);
    }
  }

  close(): void {
    if (this.fd >= 0) this.calls.close(this.fd);
    this.fd = -1;
  }

  /**
   * Gives the namespace open at @nsFd an id here, the kernel's choice
   * (RTM_NEWNSID, NETNSA_NSID -1), acknowledged: 0 once done, else the
   * errno (EEXIST: it had one already, as `ip` reports "Peer netns
   * already has a nsid assigned"; EINVAL: @nsFd is not a namespace).
   */
  assignNsid(nsFd: number): number {
    const seq = this.nextSeq();
    const [answer] = this.exchange(
      encodeNsidRequest(RTM_NEWNSID, NLM_F_REQUEST | NLM_F_ACK, seq, [
        [NETNSA_FD, nsFd],
        [NETNSA_NSID, NETNSA_NSID_NOT_ASSIGNED],
      ]),
      seq,
      "RTM_NEWNSID",
    );
    if (answer.type !== NLMSG_ERROR)
      throw new InterceptError("command-failed", `rtnetlink RTM_NEWNSID: answered by message type ${answer.type}`);
    return decodeError(answer);
  }

  /**
   * The id here of the namespace open at @nsFd (RTM_GETNSID):
   * NETNSA_NSID_NOT_ASSIGNED when it has none; a negative errno when the
   * kernel refused (-EINVAL: @nsFd is not a namespace).
   */
  nsid(nsFd: number): number {
    const seq = this.nextSeq();
    const [answer] = this.exchange(
      encodeNsidRequest(RTM_GETNSID, NLM_F_REQUEST, seq, [[NETNSA_FD, nsFd]]),
      seq,
      "RTM_GETNSID",
    );
    if (answer.type === NLMSG_ERROR) return 0 - decodeError(answer);
    return decodeNsid(answer) ?? NETNSA_NSID_NOT_ASSIGNED;
  }

  /** Sends the request @encode makes with the next sequence number (NLM_F_ACK set) and reads its acknowledgement. */
  acknowledged(encode: (seq: number) => Buffer): Acknowledgement {
    const seq = this.nextSeq();
    const request = encode(seq);
    const type = request.readUInt16LE(4);
    const [answer] = this.exchange(request, seq, `message type ${type}`);
    if (answer.type !== NLMSG_ERROR)
      throw new InterceptError("command-failed", `rtnetlink ${type}: answered by message type ${answer.type}`);
    return decodeAcknowledgement(answer);
  }

  /**
   * The index of the link called @name in the socket's namespace
   * (RTM_GETLINK by IFLA_IFNAME, as tc resolves a `dev`), or -errno
   * (-ENODEV: no such link).
   */
  linkIndex(name: string): number {
    const seq = this.nextSeq();
    const [answer] = this.exchange(encodeLinkRequest(seq, name), seq, "RTM_GETLINK");
    if (answer.type === NLMSG_ERROR) return -decodeError(answer) || -constants.errno.EPROTO;
    if (answer.type !== RTM_NEWLINK || answer.payload.length < IFINFOMSG_SIZE)
      throw new InterceptError("command-failed", `rtnetlink RTM_GETLINK: answered by message type ${answer.type}`);
    return answer.payload.readInt32LE(4);
  }

  /** The sequence number of a new request. */
  private nextSeq(): number {
    this.seq = (this.seq + 1) >>> 0;
    return this.seq;
  }

  /** Sends @request; the messages of the answer that carries @seq (earlier strays are dropped). */
  /**
   * Sends the dump request @encode makes with the next sequence number;
   * every message of the answer up to its NLMSG_DONE. The kernel makes a
   * dump's next datagram while the last is read, within recv(2): it is
   * there without waiting.
   */
  dump(encode: (seq: number) => Buffer, what: string): NetlinkMessage[] {
    const seq = this.nextSeq();
    this.send(encode(seq), what);
    const answer: NetlinkMessage[] = [];
    for (;;) {
      for (const message of this.receive(seq, what)) {
        if (message.type === NLMSG_DONE) return answer;
        if (message.type === NLMSG_ERROR) throw failure(`rtnetlink ${what}`, decodeError(message));
        answer.push({ ...message, payload: Buffer.from(message.payload) }); // the next recv reuses the buffer
      }
    }
  }

  /** Sends @request; the messages of the answer that carries @seq (earlier strays are dropped). */
  private exchange(request: Buffer, seq: number, what: string): [NetlinkMessage, ...NetlinkMessage[]] {
    this.send(request, what);
    return this.receive(seq, what);
  }

  private send(request: Buffer, what: string): void {
    if (this.fd < 0) throw new InterceptError("command-failed", `rtnetlink ${what}: the socket is closed`);
    for (;;) {
      const sent = Number(this.calls.sendto(this.fd, request, request.length, 0, this.address, SOCKADDR_NL_SIZE));
      if (sent >= 0) return;
      const errno = this.calls.errno();
      if (errno !== constants.errno.EINTR) throw failure(`rtnetlink ${what}: sendto`, errno);
    }
  }

  /** The messages carrying @seq of the next datagram that has any. */
  private receive(seq: number, what: string): [NetlinkMessage, ...NetlinkMessage[]] {
    for (;;) {
      const received = Number(this.calls.recv(this.fd, this.buffer, this.buffer.length, MSG_DONTWAIT));
      if (received < 0) {
        const errno = this.calls.errno();
        if (errno === constants.errno.EINTR) continue;
        throw failure(`rtnetlink ${what}: no answer`, errno);
      }
      const messages = decodeMessages(this.buffer.subarray(0, received)).filter((message) => message.seq === seq);
      if (messages.length > 0) return messages as [NetlinkMessage, ...NetlinkMessage[]];
    }
  }
}

/**
 * Runs @use with a NETLINK_ROUTE socket of @netns, closed after it. A
 * namespace whose file is gone is reported as `nsenter` would have been.
 */
export function withRouteSocket<T>(netns: NetworkNamespace, use: (socket: RouteSocket) => T): T {
  let socket: RouteSocket;
  if (netns.name === undefined) socket = RouteSocket.open();
  else {
    const file = path.join(NETNS_DIR, netns.name);
    let nsFd: number;
    try {
      nsFd = openSync(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ENOENT") throw new InterceptError("netns-not-found", `${describeNamespace(netns)} does not exist`);
      throw new InterceptError("file-access", `cannot open ${file}: ${code ?? messageOf(error)}`);
    }
    try {
      socket = RouteSocket.openIn(nsFd);
    } finally {
      closeSync(nsFd);
    }
  }
  try {
    return use(socket);
  } finally {
    socket.close();
  }
}

/** A failed socket call: a privilege error for EPERM/EACCES, else the call and its errno. */
export function failure(what: string, errno: number): InterceptError {
  if (errno === constants.errno.EPERM || errno === constants.errno.EACCES)
    return new InterceptError("privilege", `${what}: ${errnoName(errno)} (needs CAP_NET_ADMIN)`);
  return new CommandError(what, errnoName(errno));
}
