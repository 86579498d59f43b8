/**
 * Numbers as the kernel's maps hold them: in this host's byte order, the
 * way a BPF program on this machine reads a __u32 or __u64. (Addresses and
 * ports in packets are in network order; map keys and values the C
 * declares as __u32/__u64 are not.)
 */
import { endianness } from "node:os";

const LITTLE = endianness() === "LE";

/** @value as the @size bytes (1, 2, 4 or 8) of an unsigned integer in host order. */
export function hostOrder(value: number | bigint, size: 1 | 2 | 4 | 8): number[] {
  const buffer = Buffer.alloc(size);
  if (size === 8) {
    if (LITTLE) buffer.writeBigUInt64LE(BigInt(value));
    else buffer.writeBigUInt64BE(BigInt(value));
  } else if (LITTLE) {
    buffer.writeUIntLE(Number(value), 0, size);
  } else {
    buffer.writeUIntBE(Number(value), 0, size);
  }
  return [...buffer];
}

/** A __u32 in host order. */
export function hostU32(value: number): number[] {
  return hostOrder(value, 4);
}

/** A __u64 in host order. */
export function hostU64(value: number | bigint): number[] {
  return hostOrder(value, 8);
}

/** The __u32 at @offset of @bytes, in host order. */
export function readHostU32(bytes: Buffer, offset: number): number {
  return LITTLE ? bytes.readUInt32LE(offset) : bytes.readUInt32BE(offset);
}

/** The __u64 at @offset of @bytes, in host order, as a number (counters stay far below 2^53). */
export function readHostU64(bytes: Buffer, offset: number): number {
  return Number(LITTLE ? bytes.readBigUInt64LE(offset) : bytes.readBigUInt64BE(offset));
}

/** A byte as bpftool takes it: two hex digits. */
export function hexByte(byte: number): string {
  return byte.toString(16).padStart(2, "0");
}
