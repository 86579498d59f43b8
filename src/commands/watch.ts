import { readdir } from "node:fs/promises";
import { InterceptError, PolicyError } from "../errors.js";
import { watchNamespace, type FlowWatch } from "../flows/session.js";
import { flowLine, type FlowView } from "../flows/view.js";
import { KernelHost } from "../host/kernel.js";
import { onTerminationSignals } from "../kernel/exec.js";
import { NETNS_DIR, type NetworkNamespace } from "../model/namespace.js";
import type { FlowVerdict } from "../model/bpf-abi.js";
import { globMatch } from "../glob.js";
import { describeNamespace } from "../kernel/namespace.js";
import { outputHeader } from "../model/output-format.js";
import { desiredState, validPolicies } from "../reconcile/index.js";
import { programBuilder } from "./objects.js";
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
export async function watchCommand(paths: string[], options: WatchCommandOptions): Promise<number> {
  const naming = await namingPolicies(paths, options.objects);
  const namespaces = options.netnsMatch ? await matchingNamespaces(options.netnsMatch) : [options.netns ?? {}];
  if (namespaces.length === 0)
    throw new InterceptError("netns-not-found", `no network namespace matches ${options.netnsMatch!.join(", ")}`);
  const watches: FlowWatch[] = [];
  const stopAll = () => Promise.all(watches.map((watch) => watch.stop()));
  const forget = onTerminationSignals(() => void stopAll());
  const host = new KernelHost();
  // Beside an agent run with --flows, its relay; else the ring buffer itself, under its one-reader lock.
  const sources = {
    relay: true,
    lockReader: (key: string) => host.lockFlowReader(key, "intercept watch"),
  };
  try {
    for (const netns of namespaces)
      watches.push(await watchNamespace(netns, { ...naming, ...sources, enable: options.enable }));
    const printing = Promise.all(watches.map((watch) => print(watch, options)));
    await Promise.all(watches.map((watch) => watch.ready));
    const described = namespaces.map((netns, i) => `${describeNamespace(netns)}${sourceNote(watches[i]!, options)}`);
    process.stderr.write(`watching ${described.join(", ")}\n`);
    await printing;
  } finally {
    forget();
    await stopAll();
    host.close();
  }
  return 0;
}

/** Where the records come from: the agent's relay, or the ring buffer (its records on with --enable). */
function sourceNote(watch: FlowWatch, options: WatchCommandOptions): string {
  if (watch.source === "agent") return " (from the agent run with --flows, which keeps the records on)";
  return options.enable ? " (records on)" : "";
}

async function print(watch: FlowWatch, options: WatchCommandOptions): Promise<void> {
  for await (const { view } of watch.entries) {
    if (!selected(view, options)) continue;
    process.stdout.write(
      options.json ? `${JSON.stringify({ ...outputHeader("flow"), ...view })}\n` : `${flowLine(view)}\n`,
    );
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
async function namingPolicies(paths: string[], objects: string | undefined) {
  try {
    const { loaded, policies } = await validPolicies(paths);
    return { loaded, desired: await desiredState(loaded, policies, await programBuilder(objects)) };
  } catch (error) {
    const why =
      error instanceof PolicyError
        ? policiesNote(error)
        : error instanceof InterceptError && error.code === "tool-missing"
          ? `${error.message}: rules are shown by slot (pass --objects DIR)`
          : undefined;
    if (why === undefined) throw error;
    process.stderr.write(`${why.replace("shown by index", "shown by slot")}\n`);
    return {};
  }
}

async function matchingNamespaces(globs: string[]): Promise<NetworkNamespace[]> {
  const names = await readdir(NETNS_DIR).catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return [] as string[]; // no namespace was ever named on this host
    throw error;
  });
  return names
    .filter((name) => globs.some((glob) => globMatch(glob, name)))
    .sort()
    .map((name) => ({ name }));
}
