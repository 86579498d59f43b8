/**
 * The layout of the prefix tries (`prefixes_v4`, `prefixes_v6`), in one
 * place for whoever fills them: the C side is struct prefix_key_v4/_v6 in
 * templates/bpf/lib/prefixes.h. A key is the prefix length counting the
 * list number's bits too, the list number, then the address; both numbers
 * in host byte order, the address in network order. The value is one byte,
 * enum prefix_verdict.
 */
import { endianness } from "node:os";
import type { PrefixEntry } from "./match.js";

/** The list number's bits at the start of every key (PREFIX_LIST_BITS). */
export const PREFIX_LIST_BITS = 32;

/** The map an entry goes into. */
export function prefixMap(entry: PrefixEntry): "prefixes_v4" | "prefixes_v6" {
  return entry.family === "ipv4" ? "prefixes_v4" : "prefixes_v6";
}

/** An entry's key and value, as bytes. */
export function prefixBytes(entry: PrefixEntry): { key: number[]; value: number[] } {
  return {
    key: [...hostU32(PREFIX_LIST_BITS + entry.prefixLength), ...hostU32(entry.list), ...entry.address],
    value: [entry.selected ? 1 : 0],
  };
}

function hostU32(value: number): number[] {
  const buffer = Buffer.alloc(4);
  if (endianness() === "LE") buffer.writeUInt32LE(value);
  else buffer.writeUInt32BE(value);
  return [...buffer];
}
