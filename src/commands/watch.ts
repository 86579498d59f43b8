import { InterceptError, PolicyError } from "../errors.js";
import { watchNamespace, type FlowWatch } from "../flows/session.js";
import { flowJson, flowLine, type FlowView } from "../flows/view.js";
import type { Host } from "../host/types.js";
import { describeNamespace, type NetworkNamespace } from "../model/namespace.js";
import type { FlowVerdict } from "../model/bpf-abi.js";
import { globMatch } from "../glob.js";
import { desiredState, validPolicies } from "../reconcile/index.js";
import type { CommandContext, Output } from "./context.js";
import { policiesNote } from "./status.js";

export interface WatchCommandOptions {
  /** One namespace (undefined: the current one), or the globs of --netns-match. */
  netns?: NetworkNamespace;
  netnsMatch?: string[];
  policies: string[];
  port?: number;
  verdicts: FlowVerdict[];
  json: boolean;
  enable: boolean;
  objects?: string;
}

/** `intercept watch`: the datapath's records, as they come, until SIGINT or SIGTERM. */
export async function watchCommand(
  context: CommandContext,
  paths: string[],
  options: WatchCommandOptions,
): Promise<number> {
  const { host } = context;
  const naming = await namingPolicies(context, paths, options.objects);
  const namespaces = options.netnsMatch ? await matchingNamespaces(host, options.netnsMatch) : [options.netns ?? {}];
  if (namespaces.length === 0)
    throw new InterceptError("netns-not-found", `no network namespace matches ${options.netnsMatch!.join(", ")}`);
  const watches: FlowWatch[] = [];
  const stopAll = () => Promise.all(watches.map((watch) => watch.stop()));
  const forget = host.onTerminationSignals(() => void stopAll());
  // Beside an agent run with --flows, its relay; else the ring buffer itself, under its one-reader lock.
  const sources = {
    relay: true,
    lockReader: (key: string) => host.lockFlowReader(key, "intercept watch"),
  };
  try {
    for (const netns of namespaces)
      watches.push(await watchNamespace(netns, { ...naming, ...sources, enable: options.enable }));
    const printing = Promise.all(watches.map((watch) => print(watch, options, context.stdout)));
    await Promise.all(watches.map((watch) => watch.ready));
    const described = namespaces.map((netns, i) => `${describeNamespace(netns)}${sourceNote(watches[i]!, options)}`);
    context.stderr.write(`watching ${described.join(", ")}\n`);
    await printing;
  } finally {
    forget();
    await stopAll();
  }
  return 0;
}

/** Where the records come from: the agent's relay, or the ring buffer (its records on with --enable). */
function sourceNote(watch: FlowWatch, options: WatchCommandOptions): string {
  if (watch.source === "agent") return " (from the agent run with --flows, which keeps the records on)";
  return options.enable ? " (records on)" : "";
}

/**
 * Text written at once, at most (about): a write a record cost a busy
 * machine dearly, and a string past V8's largest ordinary object (128 KiB)
 * is given pages of its own, a page fault each time they are touched.
 */
const PRINT_CHUNK = 64 * 1024;

/** Prints @watch's records as they come: a few writes a batch. */
async function print(watch: FlowWatch, options: WatchCommandOptions, stdout: Output): Promise<void> {
  const format = options.json ? flowJson : flowLine;
  for await (const batch of watch.entries) {
    let text = "";
    for (const { view } of batch) {
      if (!selected(view, options)) continue;
      text += `${format(view)}\n`;
      if (text.length < PRINT_CHUNK) continue;
      stdout.write(text);
      text = "";
    }
    if (text.length > 0) stdout.write(text);
  }
}

/** Whether @view passes the filters: policy, port (asked for or targeted), verdict. */
export function selected(
  view: FlowView,
  options: Pick<WatchCommandOptions, "policies" | "port" | "verdicts">,
): boolean {
  if (options.policies.length > 0 && !options.policies.includes(view.policy ?? "")) return false;
  if (options.verdicts.length > 0 && !options.verdicts.includes(view.verdict)) return false;
  if (options.port !== undefined && view.destination?.port !== options.port && view.target?.port !== options.port)
    return false;
  return true;
}

/**
 * The policies that name rules and give their file:line; the records are
 * still shown, by slot, when there are none or they are invalid.
 */
async function namingPolicies(context: CommandContext, paths: string[], objects: string | undefined) {
  try {
    const { loaded, policies } = await validPolicies(paths);
    return { loaded, desired: await desiredState(loaded, policies, await context.programBuilder(objects)) };
  } catch (error) {
    const why =
      error instanceof PolicyError
        ? policiesNote(error)
        : error instanceof InterceptError && error.code === "tool-missing"
          ? `${error.message}: rules are shown by slot (pass --objects DIR)`
          : undefined;
    if (why === undefined) throw error;
    context.stderr.write(`${why.replace("shown by index", "shown by slot")}\n`);
    return {};
  }
}

async function matchingNamespaces(host: Host, globs: string[]): Promise<NetworkNamespace[]> {
  return [...(await host.listNamespaces()).keys()]
    .filter((name) => globs.some((glob) => globMatch(glob, name)))
    .sort()
    .map((name) => ({ name }));
}
