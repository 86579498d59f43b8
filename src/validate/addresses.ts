/**
 * IP networks for source and destination selectors: reading a CIDR as
 * written (ipaddr.js parses the addresses; node:net decides what counts as
 * one, strictly: no leading zeros, no zone), its network form, and CIDR
 * lists as sets of addresses (src/validate/intervals.ts) per family.
 */
import { isIP } from "node:net";
import ipaddr from "ipaddr.js";
import { normalSet, type Interval, type IntervalSet } from "./intervals.js";
import type { Cidr } from "./model.js";

export type Family = Cidr["family"];
export const FAMILIES: readonly Family[] = ["ipv4", "ipv6"];

/** Address bits per family. */
export const ADDRESS_BITS: Record<Family, number> = { ipv4: 32, ipv6: 128 };

/** What reading a written CIDR gave: a network, or why not. */
export type CidrReading =
  | { ok: true; cidr: Cidr /** host bits were set: @cidr is the network form */; hostBits: boolean }
  | { ok: false; reason: string };

/**
 * Reads "10.0.0.0/8", "fd00::/8", or one address ("198.18.0.1", a /32 or
 * /128). A CIDR with host bits set ("10.1.2.3/8") is read as its network,
 * and says so: validation refuses it and suggests the network form.
 */
export function readCidr(text: string): CidrReading {
  const slash = text.indexOf("/");
  const addressText = slash === -1 ? text : text.slice(0, slash);
  const lengthText = slash === -1 ? undefined : text.slice(slash + 1);
  const version = isIP(addressText);
  if (version === 0 || addressText.includes("%"))
    return { ok: false, reason: `${addressText === "" ? "no address" : "not an IPv4 or IPv6 address"}` };
  const family: Family = version === 4 ? "ipv4" : "ipv6";
  const bits = ADDRESS_BITS[family];
  if (lengthText !== undefined && !/^(0|[1-9][0-9]{0,2})$/.test(lengthText))
    return { ok: false, reason: `the prefix length must be a number 0–${bits}` };
  const prefixLength = lengthText === undefined ? bits : Number(lengthText);
  if (prefixLength > bits)
    return { ok: false, reason: `an ${family === "ipv4" ? "IPv4" : "IPv6"} prefix length is at most ${bits}` };
  const value = toNumber(ipaddr.parse(addressText).toByteArray());
  const network = value & prefixMask(family, prefixLength);
  return { ok: true, cidr: cidrOf(family, network, prefixLength), hostBits: network !== value };
}

/** "10.0.0.0/8"; one address without its /32 or /128. */
export function cidrText(cidr: Cidr): string {
  return cidr.prefixLength === ADDRESS_BITS[cidr.family] ? cidr.address : `${cidr.address}/${cidr.prefixLength}`;
}

/** The addresses a CIDR holds, as numbers of its family. */
export function cidrInterval(cidr: Cidr): Interval {
  const first = addressNumber(cidr);
  return { first, last: first | hostMask(cidr.family, cidr.prefixLength) };
}

/** The network address as a number. */
export function addressNumber(cidr: Cidr): bigint {
  return toNumber(ipaddr.parse(cidr.address).toByteArray());
}

/** The network address's bytes, in network order (4 or 16). */
export function addressBytes(cidr: Cidr): number[] {
  return ipaddr.parse(cidr.address).toByteArray();
}

/** Every address of @family whose first @prefixLength bits are those of @network. */
export function prefixMask(family: Family, prefixLength: number): bigint {
  const bits = BigInt(ADDRESS_BITS[family]);
  return ((1n << bits) - 1n) ^ hostMask(family, prefixLength);
}

function hostMask(family: Family, prefixLength: number): bigint {
  return (1n << BigInt(ADDRESS_BITS[family] - prefixLength)) - 1n;
}

/** The whole address space of a family, as a set. */
export function everyAddress(family: Family): IntervalSet {
  return [{ first: 0n, last: (1n << BigInt(ADDRESS_BITS[family])) - 1n }];
}

/** The addresses of the @family members of @cidrs, as a set. */
export function addressSet(cidrs: readonly Cidr[], family: Family): IntervalSet {
  return normalSet(cidrs.filter((cidr) => cidr.family === family).map(cidrInterval));
}

/** One address of @family, as text. */
export function addressText(family: Family, value: bigint): string {
  return ipaddr.fromByteArray(toBytes(value, ADDRESS_BITS[family] / 8)).toString();
}

/**
 * The fewest CIDRs that hold exactly the addresses of @set: the normal form
 * of a CIDR list (10.0.0.0/9 and 10.128.0.0/9 are 10.0.0.0/8).
 */
export function cidrsOf(set: IntervalSet, family: Family): Cidr[] {
  const bits = ADDRESS_BITS[family];
  const cidrs: Cidr[] = [];
  for (const { first, last } of set) {
    let start = first;
    while (start <= last) {
      // The largest block aligned at @start that does not run past @last.
      let length = bits;
      while (length > 0) {
        const block = 1n << BigInt(bits - length + 1);
        if (start % block !== 0n || start + block - 1n > last) break;
        length--;
      }
      cidrs.push(cidrOf(family, start, length));
      start += 1n << BigInt(bits - length);
    }
  }
  return cidrs;
}

/** A CIDR list in its normal form: each family's set as the fewest CIDRs, IPv4 first. */
export function normalCidrs(cidrs: readonly Cidr[]): Cidr[] {
  return FAMILIES.flatMap((family) => cidrsOf(addressSet(cidrs, family), family));
}

/** The families @cidrs holds addresses of. */
export function familiesOf(cidrs: readonly Cidr[]): Family[] {
  return FAMILIES.filter((family) => cidrs.some((cidr) => cidr.family === family));
}

function cidrOf(family: Family, network: bigint, prefixLength: number): Cidr {
  return { family, address: addressText(family, network), prefixLength };
}

function toNumber(bytes: number[]): bigint {
  return bytes.reduce((value, byte) => (value << 8n) | BigInt(byte), 0n);
}

function toBytes(value: bigint, count: number): number[] {
  return Array.from({ length: count }, (_, i) => Number((value >> BigInt(8 * (count - 1 - i))) & 0xffn));
}
