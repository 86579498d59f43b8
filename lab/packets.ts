/**
 * Crafted Ethernet frames for BPF_PROG_TEST_RUN, and an independent
 * checksum check: everything here is computed from scratch, never with the
 * code under test.
 */
import ipaddr from "ipaddr.js";

export interface PacketSpec {
  family: "ipv4" | "ipv6";
  protocol: "tcp" | "udp";
  sport: number;
  dport: number;
  /** Source and destination address, of @family; default 198.18.0.2 → 198.18.0.1 (2001:db8::2 → ::1). */
  source?: string;
  destination?: string;
  payload?: Buffer;
  /** IPv4 options bytes (multiple of 4). */
  ipv4Options?: Buffer;
  /**
   * Fragment offset in 8-byte units, and the more-fragments flag: of the
   * IPv4 header, or of the IPv6 fragment header (44) in ipv6Extensions,
   * whose more-fragments flag defaults to set (a first fragment).
   */
  fragmentOffset?: number;
  moreFragments?: boolean;
  /** IPv6 extension headers before L4, by next-header number (0, 43, 60, 44). */
  ipv6Extensions?: number[];
  /** Write UDP checksum 0 ("no checksum", IPv4 only). */
  zeroUdpChecksum?: boolean;
  /** The TCP flags set; default PSH and ACK (a data segment). */
  tcpFlags?: TcpFlag[];
  /** The TCP sequence number; default 0x01020304. */
  seq?: number;
}

/** TCP header flag bits (byte 13), by name. */
export const TCP_FLAGS = { fin: 0x01, syn: 0x02, rst: 0x04, psh: 0x08, ack: 0x10, urg: 0x20 } as const;
export type TcpFlag = keyof typeof TCP_FLAGS;

const PROTOCOL = { tcp: 6, udp: 17 } as const;
const SOURCE_V4 = Buffer.from([198, 18, 0, 2]);
const DEST_V4 = Buffer.from([198, 18, 0, 1]);
const SOURCE_V6 = Buffer.from("20010db8000000000000000000000002", "hex");
const DEST_V6 = Buffer.from("20010db8000000000000000000000001", "hex");

type Addressed = Pick<PacketSpec, "family" | "protocol" | "source" | "destination">;

/** The source and destination of @spec, as bytes. */
function addresses(spec: Addressed): { source: Buffer; destination: Buffer } {
  const bytes = (text: string | undefined, fallback: Buffer) => {
    if (text === undefined) return fallback;
    const address = ipaddr.parse(text);
    if (address.kind() !== spec.family) throw new Error(`${text} is not an ${spec.family} address`);
    return Buffer.from(address.toByteArray());
  };
  return spec.family === "ipv4"
    ? { source: bytes(spec.source, SOURCE_V4), destination: bytes(spec.destination, DEST_V4) }
    : { source: bytes(spec.source, SOURCE_V6), destination: bytes(spec.destination, DEST_V6) };
}

export function buildPacket(spec: PacketSpec): Buffer {
  const l4 = buildL4(spec);
  return ethernetFrame(spec.family, spec.family === "ipv4" ? buildIpv4(spec, l4) : buildIpv6(spec, l4));
}

/**
 * The frames of one datagram cut into fragments as a sending host cuts it:
 * the whole L4 segment (its checksum over all of it) split into pieces of
 * at most @pieceBytes (a multiple of 8), each behind its own IPv4 header,
 * or behind the IPv6 header, @spec's ipv6Extensions (the unfragmentable
 * part) and a fragment header.
 */
export function buildFragments(spec: PacketSpec, pieceBytes: number): Buffer[] {
  if (pieceBytes % 8 !== 0) throw new Error("fragments carry multiples of 8 bytes");
  const segment = buildL4(spec);
  const frames: Buffer[] = [];
  for (let offset = 0; offset < segment.length; offset += pieceBytes) {
    const piece = segment.subarray(offset, offset + pieceBytes);
    const fragment = { ...spec, fragmentOffset: offset / 8, moreFragments: offset + pieceBytes < segment.length };
    const network =
      spec.family === "ipv4"
        ? buildIpv4(fragment, piece)
        : buildIpv6({ ...fragment, ipv6Extensions: [...(spec.ipv6Extensions ?? []), 44] }, piece);
    frames.push(ethernetFrame(spec.family, network));
  }
  return frames;
}

function ethernetFrame(family: PacketSpec["family"], network: Buffer): Buffer {
  const ethernet = Buffer.alloc(14);
  Buffer.from("020000000001020000000002", "hex").copy(ethernet);
  ethernet.writeUInt16BE(family === "ipv4" ? 0x0800 : 0x86dd, 12);
  return Buffer.concat([ethernet, network]);
}

function buildL4(spec: PacketSpec): Buffer {
  const payload = spec.payload ?? Buffer.from("hello, intercept");
  const header = Buffer.alloc(spec.protocol === "tcp" ? 20 : 8);
  header.writeUInt16BE(spec.sport, 0);
  header.writeUInt16BE(spec.dport, 2);
  if (spec.protocol === "tcp") {
    header.writeUInt32BE(spec.seq ?? 0x01020304, 4);
    header[12] = 5 << 4; // data offset
    header[13] = (spec.tcpFlags ?? ["psh", "ack"]).reduce((bits, flag) => bits | TCP_FLAGS[flag], 0);
    header.writeUInt16BE(65535, 14);
  } else {
    header.writeUInt16BE(8 + payload.length, 4);
  }
  const segment = Buffer.concat([header, payload]);
  const checksumAt = spec.protocol === "tcp" ? 16 : 6;
  if (!spec.zeroUdpChecksum) segment.writeUInt16BE(l4Checksum(spec, segment), checksumAt);
  return segment;
}

function buildIpv4(spec: PacketSpec, l4: Buffer): Buffer {
  const options = spec.ipv4Options ?? Buffer.alloc(0);
  const header = Buffer.alloc(20 + options.length);
  header[0] = 0x40 | (header.length / 4);
  header.writeUInt16BE(header.length + l4.length, 2);
  header.writeUInt16BE((spec.moreFragments ? 0x2000 : 0) | (spec.fragmentOffset ?? 0), 6);
  header[8] = 64;
  header[9] = PROTOCOL[spec.protocol];
  const { source, destination } = addresses(spec);
  source.copy(header, 12);
  destination.copy(header, 16);
  options.copy(header, 20);
  header.writeUInt16BE(onesComplement(sum16(header)), 10);
  return Buffer.concat([header, l4]);
}

function buildIpv6(spec: PacketSpec, l4: Buffer): Buffer {
  const chain = [...(spec.ipv6Extensions ?? []), PROTOCOL[spec.protocol]];
  const extensions = (spec.ipv6Extensions ?? []).map((type, index) => {
    // Every header here is 8 bytes (length field 0). Routing: type 0, segments left 0.
    const extension = Buffer.alloc(8);
    extension[0] = chain[index + 1]!;
    if (type === 44) {
      extension.writeUInt16BE(((spec.fragmentOffset ?? 0) << 3) | ((spec.moreFragments ?? true) ? 1 : 0), 2);
      extension.writeUInt32BE(0x1234abcd, 4); // identification
    } else if (type !== 43) {
      extension[2] = 1; // hop-by-hop / destination options: one PadN option
      extension[3] = 4; // filling the remaining 4 bytes
    }
    return extension;
  });
  const header = Buffer.alloc(40);
  header[0] = 0x60;
  const payload = Buffer.concat([...extensions, l4]);
  header.writeUInt16BE(payload.length, 4);
  header[6] = chain[0]!;
  header[7] = 64;
  const { source, destination } = addresses(spec);
  source.copy(header, 8);
  destination.copy(header, 24);
  return Buffer.concat([header, payload]);
}

function sum16(data: Buffer, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < data.length; i += 2) sum += data.readUInt16BE(i);
  if (data.length % 2) sum += data[data.length - 1]! << 8;
  return sum;
}

function onesComplement(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** The TCP/UDP checksum over pseudo-header and segment, with the checksum field taken as written. */
function l4Checksum(spec: Addressed, segment: Buffer): number {
  const { family, protocol } = spec;
  const { source, destination } = addresses(spec);
  const pseudo =
    family === "ipv4"
      ? Buffer.concat([
          source,
          destination,
          Buffer.from([0, PROTOCOL[protocol], segment.length >> 8, segment.length & 0xff]),
        ])
      : Buffer.concat([source, destination, u32(segment.length), Buffer.from([0, 0, 0, PROTOCOL[protocol]])]);
  const result = onesComplement(sum16(segment, sum16(pseudo)));
  return protocol === "udp" && result === 0 ? 0xffff : result;
}

function u32(value: number): Buffer {
  const buffer = Buffer.alloc(4);
  buffer.writeUInt32BE(value);
  return buffer;
}

/** The parts of a frame a test asserts on, read independently of the datapath. */
export interface ParsedPacket {
  l4Offset: number;
  sport: number;
  dport: number;
  checksum: number;
  /** True when the L4 checksum verifies (or is UDP/IPv4 "none"). */
  checksumValid: boolean;
}

/**
 * Reassembles the L4 segment that @frames (every fragment of one datagram,
 * in order) carry, and says whether its checksum verifies from scratch.
 */
export function fragmentsChecksumValid(frames: Buffer[], spec: Addressed): boolean {
  const segment = Buffer.concat(frames.map((frame) => frame.subarray(fragmentPayloadOffset(frame, spec.family))));
  return segmentChecksumValid(segment, spec);
}

/** Where a fragment's share of the datagram starts: after IHL, or after the IPv6 fragment header. */
function fragmentPayloadOffset(frame: Buffer, family: PacketSpec["family"]): number {
  if (family === "ipv4") return 14 + (frame[14]! & 0x0f) * 4;
  let next = frame[14 + 6]!;
  let offset = 14 + 40;
  while (next !== 44) {
    next = frame[offset]!;
    offset += (frame[offset + 1]! + 1) * 8;
  }
  return offset + 8;
}

function segmentChecksumValid(segment: Buffer, spec: Addressed): boolean {
  const checksumAt = spec.protocol === "tcp" ? 16 : 6;
  const checksum = segment.readUInt16BE(checksumAt);
  const copy = Buffer.from(segment);
  copy.writeUInt16BE(0, checksumAt);
  return (spec.protocol === "udp" && spec.family === "ipv4" && checksum === 0) || checksum === l4Checksum(spec, copy);
}

export function parsePacket(frame: Buffer, spec: Addressed): ParsedPacket {
  let l4Offset: number;
  if (spec.family === "ipv4") {
    l4Offset = 14 + (frame[14]! & 0x0f) * 4;
  } else {
    l4Offset = 14 + 40;
    let next = frame[14 + 6]!;
    while (next !== PROTOCOL[spec.protocol]) {
      next = frame[l4Offset]!;
      l4Offset += (frame[l4Offset + 1]! + 1) * 8; // a fragment header's reserved byte there is 0: 8 bytes
    }
  }
  const segment = frame.subarray(l4Offset);
  const checksumAt = spec.protocol === "tcp" ? 16 : 6;
  const checksum = segment.readUInt16BE(checksumAt);
  const checksumValid = segmentChecksumValid(segment, spec);
  return { l4Offset, sport: segment.readUInt16BE(0), dport: segment.readUInt16BE(2), checksum, checksumValid };
}
