import { existsSync } from "node:fs";
import { batch, formattedEntries, mapKeys } from "../kernel/bpftool.js";
import { runJson } from "../kernel/exec.js";
import type { NetworkNamespace } from "../kernel/exec.js";
import { listLinks, type Link } from "../kernel/links.js";
import { namespaceKey } from "../kernel/namespace.js";
import { listDirs, pins } from "../kernel/pins.js";
import { HOOKS, inOurSlot, isOurs, listAllFilters, type Hook, type TcFilter } from "../kernel/tc.js";

export type { Link } from "../kernel/links.js";

/** One loaded version of a policy's program, as pinned. */
export interface LiveProgram {
  policy: string;
  /** Content hash recorded in the program's policy_meta map; "" when unreadable. */
  contentHash: string;
  /** The pin directory of this version. */
  dir: string;
  programIds: Record<Hook, number>;
  /** rule_state: enabled flag per rule index. */
  enabled: boolean[];
}

/** Our filters on one link, by hook, with the program id each runs. */
export interface LiveAttachment {
  link: Link;
  programIds: Partial<Record<Hook, number>>;
  /** Filters that are not ours, kept for status and safety checks. */
  foreign: Record<Hook, TcFilter[]>;
}

/** A foreign filter holding the pref and handle intercept uses, which apply must not replace. */
export function slotTakenBy(attachment: LiveAttachment): TcFilter | undefined {
  return [...attachment.foreign.ingress, ...attachment.foreign.egress].find(inOurSlot);
}

export interface LiveState {
  netns: NetworkNamespace;
  /** The namespace's pin directory key (its inode). */
  namespaceKey: string;
  links: Link[];
  programs: LiveProgram[];
  attachments: LiveAttachment[];
  /** ifindexes whose clsact qdisc intercept created. */
  ownedQdiscs: number[];
}

/** Stage 5: reads what the kernel holds now — the truth, not a state file. */
export async function readLiveState(netns: NetworkNamespace): Promise<LiveState> {
  const key = await namespaceKey(netns);
  const links = await listLinks(netns);
  const [programs, attachments, ownedQdiscs] = await Promise.all([
    readPrograms(key),
    readAttachments(netns, links.filter((link) => !link.loopback)),
    existsSync(pins.qdiscs(key)) ? mapKeys(pins.qdiscs(key)) : Promise.resolve([]),
  ]);
  return { netns, namespaceKey: key, links, programs, attachments, ownedQdiscs };
}

async function readPrograms(key: string): Promise<LiveProgram[]> {
  const versions: { policy: string; dir: string }[] = [];
  for (const policy of await listDirs(pins.namespace(key))) {
    for (const version of await listDirs(pins.policy(key, policy))) versions.push({ policy, dir: `${pins.policy(key, policy)}/${version}` });
  }
  // One bpftool process for all of them; a broken version (a crash mid-load) fails the batch,
  // and is then read alone, so it shows up as unreadable instead of hiding the others.
  const commands = versions.flatMap(({ dir }) => programCommands(dir));
  const outputs = await batch(commands, true).catch(async () => Promise.all(commands.map((c) => runJson("bpftool", ["-j", ...c]).catch(() => undefined))));
  return versions.map(({ policy, dir }, index) => toProgram(policy, dir, outputs.slice(index * 4, index * 4 + 4)));
}

function programCommands(dir: string): string[][] {
  return [
    ["prog", "show", "pinned", pins.program(dir, "ingress")],
    ["prog", "show", "pinned", pins.program(dir, "egress")],
    ["map", "dump", "pinned", pins.map(dir, "policy_meta")],
    ["map", "dump", "pinned", pins.map(dir, "rule_state")],
  ];
}

function toProgram(policy: string, dir: string, [ingress, egress, meta, state]: unknown[]): LiveProgram {
  const metaEntries = meta ? formattedEntries<{ content_hash: number[] | string }>(meta) : [];
  const stateEntries = state ? formattedEntries<{ enabled: number }>(state) : [];
  return {
    policy,
    contentHash: cString(metaEntries[0]?.value?.content_hash),
    dir,
    programIds: { ingress: (ingress as { id?: number } | undefined)?.id ?? 0, egress: (egress as { id?: number } | undefined)?.id ?? 0 },
    enabled: stateEntries.map((entry) => entry.value?.enabled === 1),
  };
}

async function readAttachments(netns: NetworkNamespace, links: Link[]): Promise<LiveAttachment[]> {
  const filters = await listAllFilters(netns, links.map((link) => link.name));
  return links.map((link, index) => {
    const attachment: LiveAttachment = { link, programIds: {}, foreign: { ingress: [], egress: [] } };
    for (const hook of HOOKS) {
      for (const filter of filters[index]![hook]) {
        if (isOurs(filter) && filter.programId) attachment.programIds[hook] = filter.programId;
        else attachment.foreign[hook].push(filter);
      }
    }
    return attachment;
  });
}

/** Whether any of our filters is on the link. */
export function isAttached(attachment: LiveAttachment | undefined): boolean {
  return attachment !== undefined && (attachment.programIds.ingress !== undefined || attachment.programIds.egress !== undefined);
}

/** Whether both hooks of the link run exactly @program's two programs. */
export function runsProgram(attachment: LiveAttachment, program: LiveProgram): boolean {
  return attachment.programIds.ingress === program.programIds.ingress && attachment.programIds.egress === program.programIds.egress;
}

/** The live program a link's filters run, if it is one of ours. */
export function programOnLink(live: LiveState, attachment: LiveAttachment): LiveProgram | undefined {
  return live.programs.find((program) => program.programIds.ingress === attachment.programIds.ingress);
}

/** bpftool prints a char array as its bytes; the string ends at the first NUL. */
function cString(chars: number[] | string | undefined): string {
  if (typeof chars === "string") return chars;
  const bytes = chars ?? [];
  const end = bytes.indexOf(0);
  return Buffer.from(end === -1 ? bytes : bytes.slice(0, end)).toString("latin1");
}
