/**
 * bpf(2), called from this process: the few commands that need no bpftool
 * process (13 ms of fork each, agent CPU): open and pin objects, read and
 * write map entries, name a program by id. Bound once through koffi, as
 * flock(2) and the netlink socket calls are (./libc.ts). Each call returns
 * a result or a negative errno; the callers word the failure.
 */
import { readFileSync } from "node:fs";
import { constants } from "node:os";
import { InterceptError } from "../errors.js";
import { cString } from "../model/bpf-abi.js";
import { hostU32 } from "../model/host-order.js";
import { bindLibc } from "./libc.js";
import { failure } from "./netlink.js";

/** bpf(2)'s number on x86_64 and aarch64 (<asm/unistd.h>). */
const BPF_SYSCALL: Partial<Record<string, number>> = { x64: 321, arm64: 280 };

/** <linux/bpf.h>: enum bpf_cmd, the commands used here. */
const BPF_MAP_CREATE = 0;
const BPF_MAP_LOOKUP_ELEM = 1;
const BPF_MAP_UPDATE_ELEM = 2;
const BPF_MAP_DELETE_ELEM = 3;
const BPF_MAP_GET_NEXT_KEY = 4;
const BPF_OBJ_PIN = 6;
const BPF_OBJ_GET = 7;
const BPF_PROG_GET_FD_BY_ID = 13;
const BPF_OBJ_GET_INFO_BY_FD = 15;

/** BPF_MAP_UPDATE_ELEM's flags: any, only a new key, only an existing key. */
export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;

/** struct bpf_prog_info up to its name: name[BPF_OBJ_NAME_LEN] at offset 64. */
const PROG_INFO_NAME_OFFSET = 64;
const BPF_OBJ_NAME_LEN = 16;
/** BPF_PROG_GET_FD_BY_ID's union bpf_attr: prog_id, next_id, open_flags. */
const PROG_GET_FD_ATTR_SIZE = 12;

interface BpfCalls {
  /** BPF_OBJ_GET / BPF_OBJ_PIN: union bpf_attr's pathname, bpf_fd, file_flags, path_fd. */
  object: (command: number, pathname: string, fd: number) => number;
  /** The map element commands: map_fd, key, value (or next_key), flags. */
  element: (command: number, fd: number, key: Buffer | null, value: Buffer | null, flags: number) => number;
  /** BPF_OBJ_GET_INFO_BY_FD: the object's info (struct bpf_prog_info, bpf_map_info) into @info. */
  info: (fd: number, info: Buffer) => number;
  /** Any command, with union bpf_attr as bytes. */
  raw: (command: number, attr: Buffer) => number;
  close: (fd: number) => number;
  errno: () => number;
}

let calls: BpfCalls | undefined;

function bpf(): BpfCalls {
  if (calls) return calls;
  const number = BPF_SYSCALL[process.arch];
  if (number === undefined)
    throw new InterceptError("tool-missing", `no bpf(2) syscall number known for ${process.arch}`);
  const { koffi, lib } = bindLibc("bpf(2)");
  const syscall = lib.func("long syscall(long number, ...)");
  const objectAttr = koffi.struct("bpf_object_attr", {
    pathname: "const char *",
    bpf_fd: "uint32",
    file_flags: "uint32",
    path_fd: "int32",
    pad: "uint32",
  });
  const elementAttr = koffi.struct("bpf_element_attr", {
    map_fd: "uint32",
    pad: "uint32",
    key: "void *",
    value: "void *",
    flags: "uint64",
  });
  const infoAttr = koffi.struct("bpf_object_info_attr", { bpf_fd: "uint32", info_len: "uint32", info: "void *" });
  const call = (command: number, type: unknown, attr: object) =>
    Number(syscall(number, "int", command, koffi.pointer(type as never), attr, "uint32", koffi.sizeof(type as never)));
  calls = {
    object: (command, pathname, fd) =>
      call(command, objectAttr, { pathname, bpf_fd: fd, file_flags: 0, path_fd: 0, pad: 0 }),
    element: (command, fd, key, value, flags) => call(command, elementAttr, { map_fd: fd, pad: 0, key, value, flags }),
    raw: (command, attr) => Number(syscall(number, "int", command, "void *", attr, "uint32", attr.length)),
    info: (fd, info) => call(BPF_OBJ_GET_INFO_BY_FD, infoAttr, { bpf_fd: fd, info_len: info.length, info }),
    close: lib.func("int close(int fd)") as BpfCalls["close"],
    errno: () => koffi.errno(),
  };
  return calls;
}

/** A call's result, or -errno when it failed. */
function result(value: number): number {
  return value < 0 ? -bpf().errno() : value;
}

/** BPF_MAP_CREATE's union bpf_attr up to the map's name: map_type, key_size, value_size, max_entries, then map_name[16] at 28. */
const MAP_CREATE_ATTR_SIZE = 48;
const MAP_CREATE_NAME_OFFSET = 28;
const BPF_MAP_TYPE_HASH = 1;

/** A hash map's shape, as `bpftool map create … type hash` takes it. */
export interface HashMapShape {
  name: string;
  keySize: number;
  valueSize: number;
  entries: number;
}

/** Creates a hash map of @shape and pins it at @pin: 0, or -errno (EEXIST: one is pinned there already). */
export function createPinnedHashMap(pin: string, shape: HashMapShape): number {
  const attr = Buffer.alloc(MAP_CREATE_ATTR_SIZE);
  [BPF_MAP_TYPE_HASH, shape.keySize, shape.valueSize, shape.entries].forEach((value, index) =>
    attr.writeUInt32LE(value, index * 4),
  );
  attr.write(shape.name.slice(0, BPF_OBJ_NAME_LEN - 1), MAP_CREATE_NAME_OFFSET, "latin1");
  const fd = result(bpf().raw(BPF_MAP_CREATE, attr));
  if (fd < 0) return fd;
  try {
    return pinObject(fd, pin); // the pin holds the map once the descriptor is closed
  } finally {
    closeDescriptor(fd);
  }
}

/** struct bpf_prog_info's id, and struct bpf_map_info's value size and max_entries (<linux/bpf.h>). */
const PROG_INFO_ID_OFFSET = 4;
const MAP_INFO_VALUE_SIZE_OFFSET = 12;
const MAP_INFO_MAX_ENTRIES_OFFSET = 16;

/** The kernel id of the program pinned at @pin; undefined when nothing is pinned there. */
export function pinnedProgramId(pin: string): number | undefined {
  return withPinned(pin, (fd) => {
    const info = Buffer.alloc(PROG_INFO_NAME_OFFSET);
    return bpf().info(fd, info) < 0 ? undefined : info.readUInt32LE(PROG_INFO_ID_OFFSET);
  });
}

/** The max_entries of the map @fd; undefined when it cannot be told. */
export function maxEntries(fd: number): number | undefined {
  const info = Buffer.alloc(MAP_INFO_MAX_ENTRIES_OFFSET + 4);
  return bpf().info(fd, info) < 0 ? undefined : info.readUInt32LE(MAP_INFO_MAX_ENTRIES_OFFSET);
}

/** Every value of the array map pinned at @pin, in index order; undefined when it cannot be read. */
export function pinnedArray(pin: string): Buffer[] | undefined {
  return withPinned(pin, (fd) => {
    const info = Buffer.alloc(MAP_INFO_MAX_ENTRIES_OFFSET + 4);
    if (bpf().info(fd, info) < 0) return undefined;
    const size = info.readUInt32LE(MAP_INFO_VALUE_SIZE_OFFSET);
    const values: Buffer[] = [];
    for (let index = 0; index < info.readUInt32LE(MAP_INFO_MAX_ENTRIES_OFFSET); index++) {
      const value = Buffer.alloc(size);
      if (lookupElement(fd, Buffer.from(hostU32(index)), value) < 0) return undefined;
      values.push(value);
    }
    return values;
  });
}

/** The keys of the hash map pinned at @pin, each @size bytes; undefined when it cannot be opened. */
export function pinnedMapKeys(pin: string, size: number): Buffer[] | undefined {
  return withPinned(pin, (fd) => mapKeys(fd, size));
}

/** @use of a descriptor of the object pinned at @pin, closed after; undefined when it cannot be opened. */
export function withPinned<T>(pin: string, use: (fd: number) => T): T | undefined {
  const fd = openPinnedObject(pin);
  if (fd < 0) return undefined;
  try {
    return use(fd);
  } finally {
    closeDescriptor(fd);
  }
}

/**
 * A program's name by its kernel id, as `tc filter show` prints it:
 * BPF_PROG_GET_FD_BY_ID, then its bpf_prog_info cut after the name (the
 * kernel fills what fits); undefined when it cannot be told (gone meanwhile).
 */
export function programNameOf(id: number): string | undefined {
  const byId = Buffer.alloc(PROG_GET_FD_ATTR_SIZE); // prog_id, next_id, open_flags
  byId.writeUInt32LE(id, 0);
  const fd = result(bpf().raw(BPF_PROG_GET_FD_BY_ID, byId));
  if (fd < 0) return undefined;
  try {
    const info = Buffer.alloc(PROG_INFO_NAME_OFFSET + BPF_OBJ_NAME_LEN);
    return bpf().info(fd, info) < 0 ? undefined : cString(info.subarray(PROG_INFO_NAME_OFFSET));
  } finally {
    closeDescriptor(fd);
  }
}

/** A descriptor of the BPF object pinned at @pin (BPF_OBJ_GET), or -errno; close it with closeDescriptor. */
export function openPinnedObject(pin: string): number {
  return result(bpf().object(BPF_OBJ_GET, pin, 0));
}

/** Pins the object @fd refers to at @pin (BPF_OBJ_PIN): 0, or -errno (EEXIST when something is pinned there). */
export function pinObject(fd: number, pin: string): number {
  return result(bpf().object(BPF_OBJ_PIN, pin, fd));
}

export function closeDescriptor(fd: number): void {
  bpf().close(fd);
}

/** Reads @key's value into @value: 0, or -errno (ENOENT: no such key). */
export function lookupElement(fd: number, key: Buffer, value: Buffer): number {
  return result(bpf().element(BPF_MAP_LOOKUP_ELEM, fd, key, value, 0));
}

/** Writes @key's value (@flags: BPF_ANY, BPF_NOEXIST): 0, or -errno (EEXIST under BPF_NOEXIST). */
export function updateElement(fd: number, key: Buffer, value: Buffer, flags = BPF_ANY): number {
  return result(bpf().element(BPF_MAP_UPDATE_ELEM, fd, key, value, flags));
}

/** Deletes @key: 0, or -errno (ENOENT: not there). */
export function deleteElement(fd: number, key: Buffer): number {
  return result(bpf().element(BPF_MAP_DELETE_ELEM, fd, key, null, 0));
}

/** Every key of the map @fd (a hash map's, in its order), each @size bytes. */
export function mapKeys(fd: number, size: number): Buffer[] {
  const keys: Buffer[] = [];
  let previous: Buffer | null = null;
  for (;;) {
    const next = Buffer.alloc(size);
    if (result(bpf().element(BPF_MAP_GET_NEXT_KEY, fd, previous, next, 0)) < 0) return keys; // ENOENT: the last
    keys.push(next);
    previous = next;
  }
}

let possibleCpus: number | undefined;

/**
 * How many CPUs a per-CPU map holds a value for: the kernel's possible
 * CPUs (/sys/devices/system/cpu/possible, "0-1"), as libbpf counts them.
 */
export function perCpuCount(): number {
  if (possibleCpus !== undefined) return possibleCpus;
  const ranges = readFileSync("/sys/devices/system/cpu/possible", "utf8").trim().split(",");
  possibleCpus = ranges.reduce((count, range) => {
    const [first, last] = range.split("-").map(Number);
    return count + (last === undefined ? 1 : last - first! + 1);
  }, 0);
  return possibleCpus;
}

/** A per-CPU map's value buffer: each CPU's value, 8-byte aligned, as the kernel copies them. */
export function perCpuValue(size: number): Buffer {
  return Buffer.alloc(perCpuStride(size) * perCpuCount());
}

function perCpuStride(size: number): number {
  return Math.ceil(size / 8) * 8;
}

/**
 * Every CPU's value of each of @keys (u32, host order) in the per-CPU map
 * pinned at @pin, whose values are @valueSize bytes: one bpf(2) call a
 * key on one descriptor. A key the map does not hold gives no values. For
 * reading a few entries of a large map, where `bpftool map dump` would
 * print every entry.
 */
export function lookupPerCpu(pin: string, keys: readonly number[], valueSize: number): Buffer[][] {
  const fd = openPinnedObject(pin);
  if (fd < 0) throw failure(`bpf(BPF_OBJ_GET) ${pin}`, -fd);
  try {
    const stride = perCpuStride(valueSize);
    return keys.map((number) => {
      const values = perCpuValue(valueSize);
      const done = lookupElement(fd, Buffer.from(hostU32(number)), values);
      if (done === -constants.errno.ENOENT) return [];
      if (done < 0) throw failure(`bpf(BPF_MAP_LOOKUP_ELEM) ${pin}`, -done);
      return Array.from({ length: perCpuCount() }, (_, cpu) => values.subarray(cpu * stride, cpu * stride + valueSize));
    });
  } finally {
    closeDescriptor(fd);
  }
}
