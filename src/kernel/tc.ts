import { CommandError } from "../errors.js";
import { run, runJson, runWithInput, type NetworkNamespace } from "./exec.js";

export type Hook = "ingress" | "egress";
export const HOOKS: Hook[] = ["ingress", "egress"];

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

interface TcFilterJson {
  pref: number;
  kind: string;
  options?: { handle?: string; prog?: { id: number; name: string } };
}

/** The filters on one hook of a link, one entry per filter (not per chain header). */
export async function listFilters(netns: NetworkNamespace, link: string, hook: Hook): Promise<TcFilter[]> {
  return toFilters(await runJson<TcFilterJson[]>("tc", ["-j", "filter", "show", "dev", link, hook], netns));
}

/**
 * Both hooks of every link in one tc process (`tc -batch`). tc prints one
 * JSON line per command and nothing for a failed one (a link that just
 * vanished), so when the count is off each hook is asked on its own.
 */
export async function listAllFilters(netns: NetworkNamespace, links: string[]): Promise<Record<Hook, TcFilter[]>[]> {
  const commands = links.flatMap((link) => HOOKS.map((hook) => `filter show dev ${link} ${hook}`));
  const output = await runWithInput("tc", ["-j", "-force", "-batch", "-"], `${commands.join("\n")}\n`, netns).catch(() => "");
  const lines = output.split("\n").filter((line) => line.trim());
  if (lines.length !== commands.length) {
    return Promise.all(links.map(async (link) => ({
      ingress: await listFilters(netns, link, "ingress").catch(() => []),
      egress: await listFilters(netns, link, "egress").catch(() => []),
    })));
  }
  return links.map((_, index) => ({
    ingress: toFilters(JSON.parse(lines[index * 2]!)),
    egress: toFilters(JSON.parse(lines[index * 2 + 1]!)),
  }));
}

function toFilters(filters: TcFilterJson[]): TcFilter[] {
  return filters
    .filter((filter) => filter.options)
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
  return inOurSlot(filter) && filter.kind === "bpf" && (filter.programName ?? "").startsWith("intercept_");
}

export async function hasClsact(netns: NetworkNamespace, link: string): Promise<boolean> {
  const qdiscs = await runJson<{ kind: string }[]>("tc", ["-j", "qdisc", "show", "dev", link], netns);
  return qdiscs.some((qdisc) => qdisc.kind === "clsact");
}

export async function addClsact(netns: NetworkNamespace, link: string): Promise<void> {
  await run("tc", ["qdisc", "add", "dev", link, "clsact"], netns);
}

export async function deleteClsact(netns: NetworkNamespace, link: string): Promise<void> {
  await run("tc", ["qdisc", "del", "dev", link, "clsact"], netns);
}

/** Attaches, or atomically swaps, our direct-action filter for a pinned program. */
export async function replaceFilter(netns: NetworkNamespace, link: string, hook: Hook, programPin: string): Promise<void> {
  await run(
    "tc",
    ["filter", "replace", "dev", link, hook, "pref", String(FILTER_PREF), "handle", FILTER_HANDLE,
      "bpf", "direct-action", "object-pinned", programPin],
    netns,
  );
}

/** Removes our filter; a link that is already gone has nothing left to remove. */
export async function deleteFilter(netns: NetworkNamespace, link: string, hook: Hook): Promise<void> {
  try {
    await run("tc", ["filter", "del", "dev", link, hook, "pref", String(FILTER_PREF), "handle", FILTER_HANDLE, "bpf"], netns);
  } catch (error) {
    if (!(error instanceof CommandError && /Cannot find device|No such file|not find/i.test(error.stderr))) throw error;
  }
}
