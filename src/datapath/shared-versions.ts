/**
 * Load once, attach everywhere. A version of tc programs that another
 * namespace has loaded already, complete and with the same content hash
 * and rule switches, is not loaded again: its programs and maps are pinned
 * into this namespace's folder too (BPF_OBJ_GET there, BPF_OBJ_PIN here),
 * the same kernel objects under a second name. The folder then reads
 * exactly as a version loaded here (observe, plan and unload are
 * unchanged), and the kernel frees the objects when the last folder
 * holding them is removed. Cost: a few dozen bpf(2) calls in this process,
 * against a bpftool process, the verifier and ~60 ms of CPU.
 *
 * Counters stay the namespace's own: each namespace that shares a version
 * claims a namespace slot in the version's namespace_slots map (atomic,
 * BPF_NOEXIST, so two processes never take the same one), its filters
 * carry the slot as their classid, and the programs count at that slot
 * (templates/bpf/lib/maps.h). Slot 0 is the namespace that loaded the
 * version. When every slot is taken, the namespace loads its own.
 *
 * The node's folder (`agent --cni`) is a donor too: its programs are the
 * ones the CNI plugin attached, without a classid (slot 0), and a
 * namespace the agent then reconciles shares them with a slot of its own.
 *
 * Versions with cgroup programs are not shared: a cgroup program counts
 * and records at slot 0, and its record maps are the namespace's own.
 */
import { existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import path from "node:path";
import { perCpuValue, pinnedArray, pinObject, updateElement, withPinned } from "../kernel/bpf-syscall.js";
import { NODE_PINS, PinLayout } from "../kernel/pins.js";
import { claimSlot, claimsPin, releaseClaim } from "../kernel/slot-claims.js";
import { cString, MAPS, ruleEnabled } from "../model/bpf-abi.js";
import { COUNTER_SLOTS, counterKey } from "../model/counters.js";
import { hostU32 } from "../model/host-order.js";
import { inodeOfNamespaceKey, isNamespaceKey } from "../model/namespace.js";
import type { VersionRef } from "../model/version.js";
import type { ProgramLoad } from "./types.js";

/** Whether @load may be shared: tc programs only (see above). */
export function isShareable(load: ProgramLoad): boolean {
  return load.hooks.length > 0 && (load.cgroupHooks ?? []).length === 0;
}

/**
 * Loads of shareable versions under way in this process (a fleet's burst),
 * by folder-independent identity: a namespace needing the same version
 * waits for the load, then shares it, so a burst of namespaces loads each
 * version once.
 */
const underway = new Map<string, Promise<void>>();

function identity(load: ProgramLoad): string {
  return `${load.ref.policy}/${load.ref.version}/${load.contentHash}`;
}

/** What becomes of a batch of loads: those shared (done), and those to load, with a release once they are. */
export interface LoadShares {
  shared: ProgramLoad[];
  toLoad: ProgramLoad[];
  /** Ends this namespace's turn on @toLoad's versions: waiting namespaces then share them (or load, if they failed). */
  release(): void;
}

/**
 * Shares what it can of @loads into @pins. Waits first for loads of the
 * same versions under way in this process; then, without waiting again,
 * shares each version another namespace holds and takes the turn on the
 * rest, so that two namespaces never wait on each other.
 */
export async function shareLoads(pins: PinLayout, loads: ProgramLoad[]): Promise<LoadShares> {
  const candidates = loads.filter(isShareable);
  for (;;) {
    const waits = candidates.map((load) => underway.get(identity(load))).filter((wait) => wait !== undefined);
    if (waits.length === 0) break;
    await Promise.allSettled(waits);
  }
  const shared = candidates.filter((load) => shareVersion(pins, load));
  const toLoad = loads.filter((load) => !shared.includes(load));
  let turns = toLoad.filter(isShareable).map((load) => takeTurn(identity(load)));
  const release = () => {
    for (const end of turns) end();
    turns = []; // released once: a later call must not end another namespace's turn on the same version
  };
  return { shared, toLoad, release };
}

/** Marks @key's load as under way here; the function given back ends it. */
function takeTurn(key: string): () => void {
  let end!: () => void;
  const turn = new Promise<void>((resolve) => {
    end = resolve;
  });
  underway.set(key, turn);
  return () => {
    if (underway.get(key) === turn) underway.delete(key);
    end();
  };
}

/**
 * Pins into @pins the version @load names from another namespace holding
 * it complete, and claims a slot in it; false when none does (or every
 * slot is taken, or the donor went away meanwhile): then it is loaded here.
 */
export function shareVersion(pins: PinLayout, load: ProgramLoad): boolean {
  const inode = inodeOfNamespaceKey(pins.namespaceKey);
  for (const donor of donors(pins)) {
    if (!holdsComplete(donor, load)) continue;
    // Emptied first, as a load empties it (a version half-pinned by a crash), and made before the claim (claimSlot).
    rmSync(pins.version(load.ref), { recursive: true, force: true });
    mkdirSync(pins.version(load.ref), { recursive: true });
    const slot = claimSlot(donor, load.ref, inode);
    if (slot === undefined) continue;
    if (zeroCounters(donor, load.ref, slot, load.enabled.length) && pinVersion(donor, pins, load.ref)) return true;
    releaseClaim(donor, load.ref, inode);
    rmSync(pins.version(load.ref), { recursive: true, force: true }); // a partial copy: names only, the objects stay
  }
  return false;
}

/** The folders beside @pins' that may hold a version to share: the other namespaces', and the node's (`agent --cni`). */
function donors(pins: PinLayout): PinLayout[] {
  let names: string[];
  try {
    names = readdirSync(pins.root);
  } catch {
    return []; // no pin root yet: nothing loaded anywhere
  }
  return names
    .filter((name) => (isNamespaceKey(name) || name === NODE_PINS) && name !== pins.namespaceKey)
    .map((name) => new PinLayout(name, pins.root));
}

/** Whether @donor holds @load's version complete: every program, the claims, its content hash and the same switches. */
function holdsComplete(donor: PinLayout, load: ProgramLoad): boolean {
  if (!load.hooks.every((hook) => existsSync(donor.program(load.ref, hook)))) return false;
  if (!existsSync(claimsPin(donor, load.ref))) return false; // loaded from an object made before namespace slots
  const meta = pinnedArray(donor.map(load.ref, MAPS.policy_meta.name))?.[0];
  if (meta === undefined || cString(meta) !== load.contentHash) return false;
  const enabled = pinnedArray(donor.map(load.ref, MAPS.rule_state.name))?.map(ruleEnabled);
  return enabled?.length === load.enabled.length && enabled.every((on, index) => on === load.enabled[index]);
}

/**
 * Zeroes @slot's counters in @ref's version: a slot is claimed again after
 * a namespace that held it is gone, and its counts are not this one's.
 */
function zeroCounters(donor: PinLayout, ref: VersionRef, slot: number, rules: number): boolean {
  const done = withPinned(donor.map(ref, MAPS.rule_counters.name), (fd) => {
    const zero = perCpuValue(MAPS.rule_counters.value.size);
    for (let rule = 0; rule < rules; rule++)
      for (const counter of COUNTER_SLOTS)
        if (
          updateElement(fd, Buffer.from(hostU32(counterKey(rule, counter, { namespaceSlot: slot, rules }))), zero) < 0
        )
          return false;
    return true;
  });
  return done === true;
}

/** Pins every object of @ref's version in @donor into @pins' folder; the content hash last, as a load records it. */
function pinVersion(donor: PinLayout, pins: PinLayout, ref: VersionRef): boolean {
  const from = donor.version(ref);
  const to = pins.version(ref);
  const entries = ["progs", "maps"].flatMap((dir) => {
    try {
      return readdirSync(path.join(from, dir)).map((name) => path.join(dir, name));
    } catch {
      return []; // the donor is unloading it: the pins below fail and the version is loaded here
    }
  });
  const last = path.join("maps", MAPS.policy_meta.name);
  if (!entries.includes(last)) return false;
  mkdirSync(path.join(to, "progs"), { recursive: true });
  mkdirSync(path.join(to, "maps"), { recursive: true });
  for (const entry of [...entries.filter((entry) => entry !== last), last]) {
    const pinned = withPinned(path.join(from, entry), (fd) => pinObject(fd, path.join(to, entry)) === 0);
    if (pinned !== true) return false;
  }
  return true;
}
