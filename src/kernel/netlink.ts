import { createRequire } from "node:module";
import { constants } from "node:os";
import { CommandError, InterceptError } from "../errors.js";

/*
 * rtnetlink in this process, for the one exchange the agent makes per
 * namespace in its own namespace: give a namespace an id here (what
 * `ip netns set NAME auto` does) and read it back (what `ip netns list`
 * shows). Each was an `ip` process, and a spawn costs the agent ~13 ms
 * of its CPU; a request here costs microseconds. The messages are built
 * and read by the pure functions below (unit-tested against known
 * bytes); the socket is libc's, bound through koffi as flock(2) is.
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
export const NLM_F_REQUEST = 0x1;
export const NLM_F_ACK = 0x4;

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

/** An nsid answer's NETNSA_NSID (NETNSA_NSID_NOT_ASSIGNED: the namespace has none here); undefined if absent. */
export function decodeNsid(message: NetlinkMessage): number | undefined {
  const attributes = message.payload;
  for (let offset = RTGENMSG_SIZE; offset + RTA_HDRLEN <= attributes.length; ) {
    const length = attributes.readUInt16LE(offset);
    if (length < RTA_HDRLEN || offset + length > attributes.length) break;
    if (attributes.readUInt16LE(offset + 2) === NETNSA_NSID && length >= RTA_HDRLEN + 4)
      return attributes.readInt32LE(offset + RTA_HDRLEN);
    offset += align(length);
  }
  return undefined;
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
  errno: () => number;
}

let libcCalls: Libc | undefined;

/** libc's socket calls, bound once through koffi (its prebuilt binaries: nothing compiled at install). */
function libc(): Libc {
  if (libcCalls) return libcCalls;
  try {
    // koffi is CommonJS with a native addon: required, not imported, so commands that never use netlink never load it.
    const koffi = createRequire(import.meta.url)("koffi") as typeof import("koffi");
    const lib = koffi.load("libc.so.6");
    libcCalls = {
      socket: lib.func("int socket(int domain, int type, int protocol)") as Libc["socket"],
      sendto: lib.func(
        "long sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)",
      ) as Libc["sendto"],
      recv: lib.func("long recv(int fd, void *buf, size_t len, int flags)") as Libc["recv"],
      close: lib.func("int close(int fd)") as Libc["close"],
      errno: () => koffi.errno(),
    };
  } catch (error) {
    throw new InterceptError("tool-missing", `cannot bind socket calls from libc: ${(error as Error).message}`);
  }
  return libcCalls;
}

/** The biggest answer we take: an nsid answer or an error is under 100 bytes. */
const RECEIVE_BUFFER = 8192;

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
    return new RouteSocket(calls, fd);
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

  private nextSeq(): number {
    this.seq = (this.seq + 1) >>> 0;
    return this.seq;
  }

  /** Sends @request; the messages of the answer that carries @seq (earlier strays are dropped). */
  private exchange(request: Buffer, seq: number, what: string): [NetlinkMessage, ...NetlinkMessage[]] {
    if (this.fd < 0) throw new InterceptError("command-failed", `rtnetlink ${what}: the socket is closed`);
    for (;;) {
      const sent = Number(this.calls.sendto(this.fd, request, request.length, 0, this.address, SOCKADDR_NL_SIZE));
      if (sent >= 0) break;
      const errno = this.calls.errno();
      if (errno !== constants.errno.EINTR) throw failure(`rtnetlink ${what}: sendto`, errno);
    }
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

/** A failed socket call: a privilege error for EPERM/EACCES, else the call and its errno. */
export function failure(what: string, errno: number): InterceptError {
  if (errno === constants.errno.EPERM || errno === constants.errno.EACCES)
    return new InterceptError("privilege", `${what}: ${errnoName(errno)} (needs CAP_NET_ADMIN)`);
  return new CommandError(what, errnoName(errno));
}
