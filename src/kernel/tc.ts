import { constants } from "node:os";
import path from "node:path";
import { CommandError, InterceptError } from "../errors.js";
import { TC_PROGRAM_PREFIX } from "../model/bpf-abi.js";
import type { Hook } from "../model/hooks.js";
import type { NetworkNamespace } from "../model/namespace.js";
import { classidOfSlot, LOADER_SLOT } from "../model/namespace-slot.js";
import { closeDescriptor, openPinnedObject, programNameOf } from "./bpf-syscall.js";
import {
  type Acknowledgement,
  attributeText,
  encodeRequest,
  errnoText,
  failure,
  findAttribute,
  type NetlinkMessage,
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_DUMP,
  NLM_F_EXCL,
  NLM_F_REQUEST,
  RouteSocket,
  stringValue,
  u32Value,
  withRouteSocket,
} from "./netlink.js";

/** Our filters' identity on a hook: only filters with this pref and handle are ever touched. */
export const FILTER_PREF = 18755;
export const FILTER_HANDLE = "0x1";

export interface TcFilter {
  pref: number;
  kind: string;
  handle?: string;
  programId?: number;
  programName?: string;
  /** A bpf filter's classid (TCA_BPF_CLASSID), when it has one: ours carry a namespace slot (slotOfClassid). */
  classid?: number;
}

/** What tc shows of one link: whether it has clsact, and the filters on each hook. */
export interface TcLinkState {
  clsact: boolean;
  filters: Record<Hook, TcFilter[]>;
}

/**
 * The qdiscs and both hooks' filters of every named link, by rtnetlink in
 * this process (the dumps `tc qdisc show` and `tc filter show dev L
 * ingress|egress` ask for), on one socket made in @netns. A link that
 * vanished since it was listed is left out (it has nothing of ours left to
 * plan for).
 */
export async function listLinkStates(netns: NetworkNamespace, links: string[]): Promise<Map<string, TcLinkState>> {
  const states = new Map<string, TcLinkState>();
  if (links.length === 0) return states;
  return withRouteSocket(netns, (socket) => {
    const qdiscs = socket.dump((seq) => encodeDump(RTM_GETQDISC, seq, 0, 0), "RTM_GETQDISC").flatMap(decodeQdisc);
    for (const link of links) {
      const ifindex = socket.linkIndex(link);
      if (ifindex === -constants.errno.ENODEV) continue;
      if (ifindex < 0) throw failure(`tc filter show dev ${link}`, -ifindex);
      const filters = (hook: Hook) =>
        socket
          .dump((seq) => encodeDump(RTM_GETTFILTER, seq, ifindex, HOOK_PARENT[hook]), "RTM_GETTFILTER")
          .flatMap(decodeFilter)
          .map(withProgramName);
      states.set(link, {
        clsact: qdiscs.some((qdisc) => qdisc.ifindex === ifindex && qdisc.kind === "clsact"),
        filters: { ingress: filters("ingress"), egress: filters("egress") },
      });
    }
    return states;
  });
}

/** @filter with its program's name, as the kernel tells it by the program's id (`tc filter show`'s "prog" name). */
function withProgramName(filter: TcFilter): TcFilter {
  return filter.programId === undefined ? filter : { ...filter, programName: programNameOf(filter.programId) };
}

/** A dump request of tc objects: every qdisc (@ifindex 0), or the filters on one link's hook (@parent). */
export function encodeDump(type: number, seq: number, ifindex: number, parent: number): Buffer {
  const tcmsg = encodeTcmsg({ ifindex, handle: 0, parent, info: 0 });
  return encodeRequest(type, NLM_F_REQUEST | NLM_F_DUMP, seq, tcmsg, []);
}

/** A qdisc of an RTM_GETQDISC dump (its link's index and kind); none for another message. */
export function decodeQdisc(message: NetlinkMessage): { ifindex: number; kind: string }[] {
  if (message.type !== RTM_NEWQDISC || message.payload.length < TCMSG_SIZE) return [];
  const kind = findAttribute(message.payload, TCMSG_SIZE, TCA_KIND);
  return kind === undefined ? [] : [{ ifindex: message.payload.readInt32LE(4), kind: attributeText(kind) }];
}

/**
 * A filter of an RTM_GETTFILTER dump, as `tc -j filter show` prints it:
 * its priority, kind, handle ("0x1") and, for bpf, its program's id (its
 * name is the kernel's to tell: withProgramName) and its classid if it has
 * one. None for the entry the kernel sends for each priority itself
 * (handle 0, no options), nor for another message.
 */
export function decodeFilter(message: NetlinkMessage): TcFilter[] {
  const { payload } = message;
  if (message.type !== RTM_NEWTFILTER || payload.length < TCMSG_SIZE) return [];
  const kind = findAttribute(payload, TCMSG_SIZE, TCA_KIND);
  const options = findAttribute(payload, TCMSG_SIZE, TCA_OPTIONS);
  if (kind === undefined || options === undefined) return [];
  const filter: TcFilter = {
    pref: payload.readUInt32LE(16) >>> 16,
    kind: attributeText(kind),
    handle: `0x${payload.readUInt32LE(8).toString(16)}`,
  };
  if (filter.kind !== "bpf") return [filter];
  const id = findAttribute(options, 0, TCA_BPF_ID);
  if (id && id.length >= 4) filter.programId = id.readUInt32LE(0);
  const classid = findAttribute(options, 0, TCA_BPF_CLASSID);
  if (classid && classid.length >= 4) filter.classid = classid.readUInt32LE(0);
  return [filter];
}

/** In our slot (pref and handle): the only filters intercept may replace or delete. */
export function inOurSlot(filter: TcFilter): boolean {
  return filter.pref === FILTER_PREF && filter.handle === FILTER_HANDLE;
}

/** Ours: in our slot and running one of our programs (tc shows names cut to 15 characters). */
export function isOurs(filter: TcFilter): boolean {
  return inOurSlot(filter) && filter.kind === "bpf" && (filter.programName ?? "").startsWith(TC_PROGRAM_PREFIX);
}

/** <linux/pkt_sched.h>, <linux/rtnetlink.h>: the clsact qdisc and its hooks, as tc sends them. */
export const RTM_NEWQDISC = 36;
export const RTM_DELQDISC = 37;
export const RTM_GETQDISC = 38;
export const RTM_NEWTFILTER = 44;
export const RTM_DELTFILTER = 45;
export const RTM_GETTFILTER = 46;
const TC_H_CLSACT = 0xfffffff1;
const CLSACT_HANDLE = 0xffff0000;
const HOOK_PARENT: Record<Hook, number> = { ingress: 0xfffffff2, egress: 0xfffffff3 };
export const TCA_KIND = 1;
const TCA_OPTIONS = 2;
/** <linux/pkt_cls.h>: cls_bpf's options. */
const TCA_BPF_CLASSID = 3;
const TCA_BPF_FD = 6;
const TCA_BPF_NAME = 7;
const TCA_BPF_FLAGS = 8;
const TCA_BPF_FLAG_ACT_DIRECT = 1;
/** The program's id, in a dumped bpf filter's options. */
const TCA_BPF_ID = 11;
/** <linux/if_ether.h>: every protocol, as tc's `replace` defaults it (in network order in tcm_info). */
const ETH_P_ALL = 0x0003;
/** struct tcmsg: tcm_family (u8) and padding, tcm_ifindex (i32), tcm_handle, tcm_parent, tcm_info (u32). */
export const TCMSG_SIZE = 20;

interface Tcmsg {
  ifindex: number;
  handle: number;
  parent: number;
  /** A filter's priority (high 16 bits) and protocol (low 16, network order); 0 for a qdisc. */
  info: number;
}

export function encodeTcmsg({ ifindex, handle, parent, info }: Tcmsg): Buffer {
  const tcmsg = Buffer.alloc(TCMSG_SIZE); // tcm_family AF_UNSPEC and padding: zeros
  tcmsg.writeInt32LE(ifindex, 4);
  tcmsg.writeUInt32LE(handle >>> 0, 8);
  tcmsg.writeUInt32LE(parent >>> 0, 12);
  tcmsg.writeUInt32LE(info >>> 0, 16);
  return tcmsg;
}

/** A filter's tcm_info: its priority and protocol (network order). */
function filterInfo(protocol: number): number {
  return ((FILTER_PREF << 16) | (((protocol & 0xff) << 8) | (protocol >> 8))) >>> 0;
}

const clsactTcmsg = (ifindex: number) => encodeTcmsg({ ifindex, handle: CLSACT_HANDLE, parent: TC_H_CLSACT, info: 0 });

/** `tc qdisc add dev LINK clsact`: RTM_NEWQDISC, exclusive. */
export function encodeAddClsact(seq: number, ifindex: number): Buffer {
  const flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE;
  return encodeRequest(RTM_NEWQDISC, flags, seq, clsactTcmsg(ifindex), [clsactKind]);
}

/** `tc qdisc del dev LINK clsact`: RTM_DELQDISC. */
export function encodeDeleteClsact(seq: number, ifindex: number): Buffer {
  return encodeRequest(RTM_DELQDISC, NLM_F_REQUEST | NLM_F_ACK, seq, clsactTcmsg(ifindex), [clsactKind]);
}

const clsactKind = { type: TCA_KIND, value: stringValue("clsact") };
const bpfKind = { type: TCA_KIND, value: stringValue("bpf") };

/**
 * `tc filter replace dev LINK HOOK pref FILTER_PREF handle FILTER_HANDLE
 * bpf direct-action object-pinned PIN [classid CLASSID]`: RTM_NEWTFILTER,
 * created or replaced (NLM_F_CREATE without NLM_F_EXCL), on every
 * protocol, running the program open at @programFd; named as tc names a
 * pinned program. @classid, when given, is what cls_bpf hands the program
 * as skb->tc_classid (a namespace slot's, classidOfSlot); without it the
 * request is what it was before namespace slots.
 */
export function encodeReplaceFilter(
  seq: number,
  ifindex: number,
  hook: Hook,
  programFd: number,
  pin: string,
  classid?: number,
): Buffer {
  const tcmsg = encodeTcmsg({
    ifindex,
    handle: Number(FILTER_HANDLE),
    parent: HOOK_PARENT[hook],
    info: filterInfo(ETH_P_ALL),
  });
  const options = [
    ...(classid === undefined ? [] : [{ type: TCA_BPF_CLASSID, value: u32Value(classid) }]),
    { type: TCA_BPF_FD, value: u32Value(programFd) },
    { type: TCA_BPF_NAME, value: stringValue(`${path.basename(pin)}:[*fsobj]`) },
    { type: TCA_BPF_FLAGS, value: u32Value(TCA_BPF_FLAG_ACT_DIRECT) },
  ];
  const flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;
  return encodeRequest(RTM_NEWTFILTER, flags, seq, tcmsg, [bpfKind, { type: TCA_OPTIONS, value: options }]);
}

/** `tc filter del dev LINK HOOK pref FILTER_PREF handle FILTER_HANDLE bpf`: RTM_DELTFILTER, of any protocol. */
export function encodeDeleteFilter(seq: number, ifindex: number, hook: Hook): Buffer {
  const tcmsg = encodeTcmsg({ ifindex, handle: Number(FILTER_HANDLE), parent: HOOK_PARENT[hook], info: filterInfo(0) });
  return encodeRequest(RTM_DELTFILTER, NLM_F_REQUEST | NLM_F_ACK, seq, tcmsg, [bpfKind]);
}

export interface FilterTarget {
  hook: Hook;
  programPin: string;
  /**
   * The namespace slot the program counts this link's packets under
   * (src/model/namespace-slot.ts), carried as the filter's classid; none,
   * or the loader's slot 0, attaches without a classid.
   */
  namespaceSlot?: number;
}

/** One step of an attach: a link's clsact qdisc, or our filter on some of its hooks, in order. */
export type TcStep = { op: "clsact"; link: string } | { op: "filters"; link: string; filters: FilterTarget[] };

/** How far a run of steps got: @done steps made, and why the next failed. */
export interface StepsResult {
  done: number;
  error?: unknown;
}

/**
 * Makes @steps in order in @netns, stopping at the first that fails, by
 * rtnetlink from this process: no tc process (a spawn cost the agent
 * ~15 ms of CPU; a request costs microseconds, and a link's hooks switch
 * microseconds apart). The requests are those tc sends for the same
 * commands, and a failure reads as tc's would, named by the step's tc
 * command (describeStep).
 */
export function attachSteps(netns: NetworkNamespace, steps: readonly TcStep[]): StepsResult {
  let done = 0;
  try {
    withRouteSocket(netns, (socket) => {
      const indexes = new Map<string, number>();
      for (const step of steps) {
        const ifindex = indexes.get(step.link) ?? linkIndex(socket, step.link, describeStep(step));
        indexes.set(step.link, ifindex);
        if (step.op === "clsact") expectAck(socket, encodeAddClsact, [ifindex], describeStep(step));
        else for (const filter of step.filters) replaceFilter(socket, ifindex, filter, describeStep(step));
        done += 1;
      }
    });
    return { done };
  } catch (error) {
    return { done, error };
  }
}

/** The tc command a step is, for its errors. */
export function describeStep(step: TcStep): string {
  return step.op === "clsact" ? `tc qdisc add dev ${step.link} clsact` : describeFilters(step.link, step.filters);
}

/** How a failed filter replacement names itself. */
export function describeFilters(link: string, filters: FilterTarget[]): string {
  return `tc filter replace dev ${link} ${filters.map((f) => f.hook).join(",")}`;
}

export async function addClsact(netns: NetworkNamespace, link: string): Promise<void> {
  const { error } = attachSteps(netns, [{ op: "clsact", link }]);
  if (error !== undefined) throw error;
}

/** Attaches, or atomically swaps, our direct-action filter on each hook, in order. */
export async function replaceFilters(netns: NetworkNamespace, link: string, filters: FilterTarget[]): Promise<void> {
  const { error } = attachSteps(netns, [{ op: "filters", link, filters }]);
  if (error !== undefined) throw error;
}

/** Removes a clsact qdisc; a link that is already gone took it with it. */
export async function deleteClsact(netns: NetworkNamespace, link: string): Promise<void> {
  removeFromLink(netns, link, `tc qdisc del dev ${link} clsact`, encodeDeleteClsact);
}

/**
 * Removes our filter; a link that is already gone has nothing left to
 * remove, nor has a priority held by a filter of another kind (the kernel
 * keeps one kind per priority and protocol, and refuses ours beside
 * another protocol's: ours cannot be there).
 */
export async function deleteFilter(netns: NetworkNamespace, link: string, hook: Hook): Promise<void> {
  const command = `tc filter del dev ${link} ${hook} pref ${FILTER_PREF} handle ${FILTER_HANDLE} bpf`;
  try {
    removeFromLink(netns, link, command, (seq, ifindex) => encodeDeleteFilter(seq, ifindex, hook));
  } catch (error) {
    if (!(error instanceof CommandError && /filter kind does not match/.test(error.stderr))) throw error;
  }
}

function removeFromLink(
  netns: NetworkNamespace,
  link: string,
  command: string,
  encode: (seq: number, ifindex: number) => Buffer,
): void {
  try {
    withRouteSocket(netns, (socket) => expectAck(socket, encode, [linkIndex(socket, link, command)], command));
  } catch (error) {
    if (!isMissingLink(error)) throw error;
  }
}

/** The namespace's index of @link, or tc's error for a missing one. */
function linkIndex(socket: RouteSocket, link: string, command: string): number {
  const index = socket.linkIndex(link);
  if (index === -constants.errno.ENODEV) throw new CommandError(command, `Cannot find device "${link}"`);
  if (index < 0) throw refusal(command, { errno: -index });
  return index;
}

function replaceFilter(socket: RouteSocket, ifindex: number, filter: FilterTarget, command: string): void {
  const programFd = openPinnedObject(filter.programPin);
  if (programFd < 0)
    throw new CommandError(
      command,
      `Couldn't retrieve pinned program '${filter.programPin}': ${errnoText(-programFd)}`,
    );
  try {
    const classid = classidOfSlot(filter.namespaceSlot ?? LOADER_SLOT);
    const encode = (seq: number) =>
      encodeReplaceFilter(seq, ifindex, filter.hook, programFd, filter.programPin, classid);
    expectAck(socket, encode, [], command);
  } finally {
    closeDescriptor(programFd);
  }
}

/** Sends the request @encode makes (its sequence number first, then @args) and throws the kernel's refusal. */
function expectAck<A extends unknown[]>(
  socket: RouteSocket,
  encode: (seq: number, ...args: A) => Buffer,
  args: A,
  command: string,
): void {
  const answer = socket.acknowledged((seq) => encode(seq, ...args));
  if (answer.errno !== 0) throw refusal(command, answer);
}

/**
 * A refusal as tc prints it: the kernel's message ("Error: … .") when it
 * gave one, else "RTNETLINK answers: " and the errno's text; EPERM is a
 * privilege error.
 */
function refusal(command: string, { errno, extack }: Acknowledgement): InterceptError {
  if (errno === constants.errno.EPERM) return failure(command, errno);
  if (extack) return new CommandError(command, `Error: ${extack}${extack.endsWith(".") ? "" : "."}`);
  return new CommandError(command, `RTNETLINK answers: ${errnoText(errno)}`);
}

/** tc's ways of saying the link (or its qdisc) does not exist; or its namespace is gone, and took it along. */
function isMissingLink(error: unknown): boolean {
  if (error instanceof InterceptError && error.code === "netns-not-found") return true;
  return error instanceof CommandError && /Cannot find device|No such file|not find/i.test(error.stderr);
}
