import { CommandError } from "../errors.js";
import { TC_PROGRAM_PREFIX } from "../model/bpf-abi.js";
import type { Hook } from "../model/hooks.js";
import { run, runJson, runWithInput } from "./exec.js";
import { type NetworkNamespace } from "../model/namespace.js";

/** Our filters' identity on a hook: only filters with this pref and handle are ever touched. */
export const FILTER_PREF = 18755;
export const FILTER_HANDLE = "0x1";

export interface TcFilter {
  pref: number;
  kind: string;
  handle?: string;
  programId?: number;
  programName?: string;
}

/** What tc shows of one link: whether it has clsact, and the filters on each hook. */
export interface TcLinkState {
  clsact: boolean;
  filters: Record<Hook, TcFilter[]>;
}

interface TcFilterJson {
  pref: number;
  kind: string;
  options?: { handle?: string; prog?: { id: number; name: string } };
}

/**
 * The qdiscs and both hooks' filters of every named link, in one tc process
 * (`tc -batch`): one JSON line per command. A link that vanished since it
 * was listed makes its commands print nothing; then the links are asked one
 * by one, and a vanished link is left out of the result (it has nothing of
 * ours left to plan for).
 */
export async function listLinkStates(netns: NetworkNamespace, links: string[]): Promise<Map<string, TcLinkState>> {
  const commands = links.flatMap((link) => [
    `qdisc show dev ${link}`,
    `filter show dev ${link} ingress`,
    `filter show dev ${link} egress`,
  ]);
  const states = new Map<string, TcLinkState>();
  if (links.length === 0) return states;
  let lines: string[] = [];
  try {
    const output = await runWithInput("tc", ["-j", "-force", "-batch", "-"], `${commands.join("\n")}\n`, netns);
    lines = output.split("\n").filter((line) => line.trim());
  } catch (error) {
    // -force runs every command; tc still exits non-zero if one failed. Asked again one by one below.
    if (!(error instanceof CommandError)) throw error;
  }
  if (lines.length === commands.length) {
    links.forEach((link, index) =>
      states.set(link, toLinkState(lines.slice(index * 3, index * 3 + 3).map((line) => JSON.parse(line)))),
    );
    return states;
  }
  for (const link of links) {
    const state = await linkState(netns, link);
    if (state) states.set(link, state);
  }
  return states;
}

async function linkState(netns: NetworkNamespace, link: string): Promise<TcLinkState | undefined> {
  try {
    return toLinkState(
      await Promise.all([
        runJson<unknown[]>("tc", ["-j", "qdisc", "show", "dev", link], netns),
        runJson<unknown[]>("tc", ["-j", "filter", "show", "dev", link, "ingress"], netns),
        runJson<unknown[]>("tc", ["-j", "filter", "show", "dev", link, "egress"], netns),
      ]),
    );
  } catch (error) {
    if (isMissingLink(error)) return undefined;
    throw error;
  }
}

function toLinkState([qdiscs, ingress, egress]: unknown[]): TcLinkState {
  return {
    clsact: (qdiscs as { kind: string }[]).some((qdisc) => qdisc.kind === "clsact"),
    filters: { ingress: toFilters(ingress as TcFilterJson[]), egress: toFilters(egress as TcFilterJson[]) },
  };
}

function toFilters(filters: TcFilterJson[]): TcFilter[] {
  return filters
    .filter((filter) => filter.options) // tc prints a header entry per chain, without options
    .map((filter) => ({
      pref: filter.pref,
      kind: filter.kind,
      handle: filter.options?.handle,
      programId: filter.options?.prog?.id,
      programName: filter.options?.prog?.name,
    }));
}

/** In our slot (pref and handle): the only filters intercept may replace or delete. */
export function inOurSlot(filter: TcFilter): boolean {
  return filter.pref === FILTER_PREF && filter.handle === FILTER_HANDLE;
}

/** Ours: in our slot and running one of our programs (tc shows names cut to 15 characters). */
export function isOurs(filter: TcFilter): boolean {
  return inOurSlot(filter) && filter.kind === "bpf" && (filter.programName ?? "").startsWith(TC_PROGRAM_PREFIX);
}

export async function addClsact(netns: NetworkNamespace, link: string): Promise<void> {
  await run("tc", ["qdisc", "add", "dev", link, "clsact"], netns);
}

/** addClsact, as a line of a tc batch. */
export function clsactCommand(link: string): string {
  return `qdisc add dev ${link} clsact`;
}

/** Removes a clsact qdisc; a link that is already gone took it with it. */
export async function deleteClsact(netns: NetworkNamespace, link: string): Promise<void> {
  try {
    await run("tc", ["qdisc", "del", "dev", link, "clsact"], netns);
  } catch (error) {
    if (!isMissingLink(error)) throw error;
  }
}

/**
 * Attaches, or atomically swaps, our direct-action filter on each hook, in
 * order, in one tc process (`tc -batch`): the hooks switch microseconds
 * apart instead of a process start apart. tc stops at the first failing
 * command. Link names cannot hold whitespace and pin paths are ours, so
 * the batch lines split as written.
 */
export async function replaceFilters(netns: NetworkNamespace, link: string, filters: FilterTarget[]): Promise<void> {
  try {
    await tcBatch(netns, filterCommands(link, filters));
  } catch (error) {
    if (!(error instanceof CommandError)) throw error;
    throw new CommandError(describeFilters(link, filters), error.stderr);
  }
}

export interface FilterTarget {
  hook: Hook;
  programPin: string;
}

/** replaceFilters, as lines of a tc batch. */
export function filterCommands(link: string, filters: FilterTarget[]): string[] {
  return filters.map(({ hook, programPin }) =>
    [
      "filter",
      "replace",
      "dev",
      link,
      hook,
      "pref",
      String(FILTER_PREF),
      "handle",
      FILTER_HANDLE,
      "bpf",
      "direct-action",
      "object-pinned",
      programPin,
    ].join(" "),
  );
}

/** How a failed replaceFilters names itself. */
export function describeFilters(link: string, filters: FilterTarget[]): string {
  return `tc filter replace dev ${link} ${filters.map((f) => f.hook).join(",")}`;
}

/** A `tc -batch` that failed; @line is the failed command's (1-based), when tc got to say which. */
export class TcBatchError extends CommandError {
  constructor(
    stderr: string,
    readonly line: number | undefined,
  ) {
    super("tc -batch", stderr);
  }
}

/**
 * Runs @commands in order in one tc process (`tc -batch`), stopping at the
 * first that fails. tc then names its line ("Command failed -:N"), which is
 * taken out of the error's stderr and given as its line. A tc that never
 * ran its commands (nsenter could not enter the namespace) fails on line 1
 * having done nothing; one that did not say (killed) has no line.
 */
export async function tcBatch(netns: NetworkNamespace, commands: string[]): Promise<void> {
  try {
    await runWithInput("tc", ["-batch", "-"], `${commands.join("\n")}\n`, netns);
  } catch (error) {
    if (!(error instanceof CommandError)) throw error;
    const failed = /^Command failed -:(\d+)$/m.exec(error.stderr);
    const stderr = error.stderr.replace(/^Command failed -:\d+\n?/m, "");
    const line = failed ? Number(failed[1]) : /^nsenter: /.test(error.stderr) ? 1 : undefined;
    throw new TcBatchError(stderr, line);
  }
}

/** Removes our filter; a link that is already gone has nothing left to remove. */
export async function deleteFilter(netns: NetworkNamespace, link: string, hook: Hook): Promise<void> {
  try {
    await run(
      "tc",
      ["filter", "del", "dev", link, hook, "pref", String(FILTER_PREF), "handle", FILTER_HANDLE, "bpf"],
      netns,
    );
  } catch (error) {
    if (!isMissingLink(error)) throw error;
  }
}

/** tc's ways of saying the link (or its qdisc) does not exist. */
function isMissingLink(error: unknown): boolean {
  return error instanceof CommandError && /Cannot find device|No such file|not find/i.test(error.stderr);
}
