/**
 * Namespace slots (load once, src/datapath/shared-versions.ts): each
 * namespace that shares a version holds a slot in the version's
 * namespace_slots map, a hash of slot → the namespace's inode. A slot is
 * claimed with BPF_NOEXIST, so two processes never take the same one;
 * slot 0 is never claimed: it is the namespace that loaded the version.
 * Read and written with bpf(2) from this process.
 */
import { existsSync } from "node:fs";
import path from "node:path";
import {
  BPF_NOEXIST,
  deleteElement,
  lookupElement,
  mapKeys,
  maxEntries,
  updateElement,
  withPinned,
} from "./bpf-syscall.js";
import { listEntries, type PinLayout } from "./pins.js";
import { MAPS } from "../model/bpf-abi.js";
import { hostU32 } from "../model/host-order.js";
import { isProgramName } from "../model/composition.js";
import { inodeOfNamespaceKey, isNamespaceKey, namespaceKeyOf } from "../model/namespace.js";
import { NAMESPACE_SLOTS } from "../model/namespace-slot.js";
import { isVersionName, type VersionRef } from "../model/version.js";

/** Where a version's claims map is pinned. */
export function claimsPin(pins: PinLayout, ref: VersionRef): string {
  return pins.map(ref, MAPS.namespace_slots.name);
}

/**
 * Claims the first free slot of @ref's version in @donor for the namespace
 * @inode; undefined when none is free. A claim of the same inode is
 * dropped first: its namespace is gone (an inode is used again once its
 * namespace is), since a namespace never shares a version its folder holds.
 * When every slot is taken, the claims of namespaces whose folder is gone
 * (removed without giving them back: a crash) are dropped and it tries once
 * more. The claimant's folder exists before it claims (shareVersion), so
 * that a claim is never taken for stale.
 */
export function claimSlot(donor: PinLayout, ref: VersionRef, inode: bigint): number | undefined {
  return withPinned(claimsPin(donor, ref), (fd) => {
    const owner = inodeValue(inode);
    for (const slot of slotsHeldBy(fd, (value) => value.equals(owner))) deleteElement(fd, slotKey(slot));
    return freeSlot(fd, owner) ?? (dropOrphans(fd, donor.root) > 0 ? freeSlot(fd, owner) : undefined);
  });
}

/**
 * Claims the first free slot below the program's capacity: its claims map
 * has one entry a slot it keeps apart (COUNTER_NAMESPACES), 0 included,
 * and a packet of a slot beyond it would count at 0.
 */
function freeSlot(fd: number, owner: Buffer): number | undefined {
  const capacity = Math.min(maxEntries(fd) ?? 0, NAMESPACE_SLOTS);
  for (let slot = 1; slot < capacity; slot++)
    if (updateElement(fd, slotKey(slot), owner, BPF_NOEXIST) === 0) return slot;
  return undefined;
}

/** Drops the claims of namespaces without a folder under @root; how many. */
function dropOrphans(fd: number, root: string): number {
  const orphans = slotsHeldBy(fd, (value) => !existsSync(path.join(root, namespaceKeyOf(value.readBigUInt64LE(0)))));
  for (const slot of orphans) deleteElement(fd, slotKey(slot));
  return orphans.length;
}

/** The slots whose claimant's inode (8 bytes) @matches. */
function slotsHeldBy(fd: number, matches: (value: Buffer) => boolean): number[] {
  const value = Buffer.alloc(8);
  return mapKeys(fd, 4)
    .filter((key) => lookupElement(fd, key, value) === 0 && matches(value))
    .map((key) => key.readUInt32LE(0));
}

function slotKey(slot: number): Buffer {
  return Buffer.from(hostU32(slot));
}

/** The slot the namespace @pins is for holds in its version @ref: 0 when it loaded the version (or the version has no claims). */
export function slotOf(pins: PinLayout, ref: VersionRef): number {
  if (!isNamespaceKey(pins.namespaceKey)) return 0; // the node's folder: loaded there, never shared into
  const owner = inodeValue(inodeOfNamespaceKey(pins.namespaceKey));
  const slot = withPinned(claimsPin(pins, ref), (fd) => slotsHeldBy(fd, (value) => value.equals(owner))[0]);
  return slot ?? 0;
}

/** Gives back the slot the namespace @inode holds in @ref's version in @pins, if any. */
export function releaseClaim(pins: PinLayout, ref: VersionRef, inode: bigint): void {
  const owner = inodeValue(inode);
  withPinned(claimsPin(pins, ref), (fd) => {
    // A claim that cannot be deleted is dropped by the next claim that finds every slot taken (claimSlot).
    for (const slot of slotsHeldBy(fd, (value) => value.equals(owner))) deleteElement(fd, slotKey(slot));
  });
}

/** Before @pins' version @ref is unpinned: its slot, if it shares the version, is free again. */
export function releaseSlot(pins: PinLayout, ref: VersionRef): void {
  if (!isNamespaceKey(pins.namespaceKey)) return;
  releaseClaim(pins, ref, inodeOfNamespaceKey(pins.namespaceKey));
}

/** Before a namespace's folder is removed: the slots it holds in every version it shares are free again. */
export async function releaseNamespaceSlots(pins: PinLayout): Promise<void> {
  for (const policy of (await listEntries(pins.namespaceDir, "directories")).filter(isProgramName))
    for (const version of (await listEntries(pins.policy(policy), "directories")).filter(isVersionName))
      releaseSlot(pins, { policy, version });
}

function inodeValue(inode: bigint): Buffer {
  const value = Buffer.alloc(8);
  value.writeBigUInt64LE(inode);
  return value;
}
