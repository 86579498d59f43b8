/**
 * The first packet of a connection, as `explain` hands it to a program
 * under BPF_PROG_TEST_RUN: an Ethernet frame with IPv4 or IPv6 and a TCP
 * SYN or a UDP datagram, checksums computed, no payload.
 */
import ipaddr from "ipaddr.js";
import type { InboundConnection } from "./explain-rules.js";

const ETHERTYPE = { ipv4: 0x0800, ipv6: 0x86dd } as const;
const PROTOCOL = { tcp: 6, udp: 17 } as const;
const TCP_SYN = 0x02;

export function firstPacket(connection: InboundConnection): Buffer {
  const { protocol, source, destination } = connection;
  const l4 = protocol === "tcp" ? tcpSyn(source.port, destination.port) : udpHeader(source.port, destination.port);
  const [from, to] = [source, destination].map((end) => Buffer.from(ipaddr.parse(end.address).toByteArray())) as [
    Buffer,
    Buffer,
  ];
  const pseudo = Buffer.concat([from, to, u16(0), Buffer.from([0, PROTOCOL[protocol]]), u16(l4.length)]);
  l4.writeUInt16BE(
    checksum(Buffer.concat([pseudo, l4])) || (protocol === "udp" ? 0xffff : 0),
    protocol === "tcp" ? 16 : 6,
  );
  const ip =
    destination.family === "ipv4"
      ? ipv4Header(from, to, protocol, l4.length)
      : ipv6Header(from, to, protocol, l4.length);
  const ethernet = Buffer.concat([
    Buffer.from([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]),
    u16(ETHERTYPE[destination.family]),
  ]);
  return Buffer.concat([ethernet, ip, l4]);
}

function tcpSyn(sport: number, dport: number): Buffer {
  const header = Buffer.alloc(20);
  header.writeUInt16BE(sport, 0);
  header.writeUInt16BE(dport, 2);
  header.writeUInt32BE(0x1000, 4); // sequence number
  header[12] = 5 << 4; // data offset: 5 words
  header[13] = TCP_SYN;
  header.writeUInt16BE(65535, 14); // window
  return header;
}

function udpHeader(sport: number, dport: number): Buffer {
  const header = Buffer.alloc(8);
  header.writeUInt16BE(sport, 0);
  header.writeUInt16BE(dport, 2);
  header.writeUInt16BE(8, 4);
  return header;
}

function ipv4Header(from: Buffer, to: Buffer, protocol: "tcp" | "udp", length: number): Buffer {
  const header = Buffer.alloc(20);
  header[0] = 0x45;
  header.writeUInt16BE(20 + length, 2);
  header[8] = 64; // TTL
  header[9] = PROTOCOL[protocol];
  from.copy(header, 12);
  to.copy(header, 16);
  header.writeUInt16BE(checksum(header), 10);
  return header;
}

function ipv6Header(from: Buffer, to: Buffer, protocol: "tcp" | "udp", length: number): Buffer {
  const header = Buffer.alloc(40);
  header[0] = 0x60;
  header.writeUInt16BE(length, 4);
  header[6] = PROTOCOL[protocol];
  header[7] = 64; // hop limit
  from.copy(header, 8);
  to.copy(header, 24);
  return header;
}

/** The Internet checksum (RFC 1071) of @data. */
function checksum(data: Buffer): number {
  let sum = 0;
  for (let i = 0; i < data.length; i += 2) sum += (data[i]! << 8) | (data[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function u16(value: number): Buffer {
  const buffer = Buffer.alloc(2);
  buffer.writeUInt16BE(value);
  return buffer;
}
