import { execa } from "execa";
import { CommandError, InterceptError } from "../errors.js";
import { NETNS_DIR, type NetworkNamespace } from "../model/namespace.js";

/** What each tool is for, so a missing one gets a useful message. */
const PACKAGE_OF: Record<string, string> = {
  clang: "clang",
  bpftool: "bpftool",
  tc: "iproute2",
  ip: "iproute2",
  nsenter: "util-linux",
  ss: "iproute2",
  flock: "util-linux",
  setpriv: "util-linux",
  mount: "mount",
};

/**
 * The command line that runs @tool in @netns. A named namespace is entered
 * with `nsenter --net`, which, unlike `ip netns exec`, keeps this mount
 * namespace's /sys and so the pins under /sys/fs/bpf. The one place that
 * wraps a command for a namespace.
 */
export function inNamespace(netns: NetworkNamespace, tool: string, args: string[]): [file: string, args: string[]] {
  return netns.name ? ["nsenter", [`--net=${NETNS_DIR}/${netns.name}`, tool, ...args]] : [tool, args];
}

/** Runs a tool with an argument array (never a shell string), in @netns. */
export async function run(tool: string, args: string[], netns: NetworkNamespace = {}): Promise<string> {
  return runWithInput(tool, args, undefined, netns);
}

/** run(), with @input as the tool's standard input (batch modes). */
export async function runWithInput(
  tool: string,
  args: string[],
  input: string | undefined,
  netns: NetworkNamespace = {},
): Promise<string> {
  const [file, fileArgs] = inNamespace(netns, tool, args);
  // extendEnv: false, and no env: the child inherits ours as it is, where execa would first copy
  // process.env (a slow read of every variable) for each of the hundreds of commands of a fleet.
  const result = await execa(file, fileArgs, {
    reject: false,
    extendEnv: false,
    ...(input === undefined ? { stdin: "ignore" as const } : { input }),
  });
  if (result.failed) {
    if ((result as { code?: string }).code === "ENOENT") {
      throw new InterceptError("tool-missing", `${file} not found: install ${PACKAGE_OF[file] ?? file}`);
    }
    throw new CommandError(`${tool} ${args.join(" ")}`, String(result.stderr || result.message));
  }
  return String(result.stdout);
}

/** Runs a tool that prints JSON (`-j`), and parses it. */
export async function runJson<T>(tool: string, args: string[], netns: NetworkNamespace = {}): Promise<T> {
  const output = await run(tool, args, netns);
  return (output.trim() ? JSON.parse(output) : []) as T;
}

/**
 * Calls @handler on SIGINT and SIGTERM until the returned release() is
 * called. The listeners must stay registered while children may run:
 * execa's child cleanup (signal-exit) re-raises a signal that no other
 * listener holds, which would kill us before we clean up.
 */
export function onTerminationSignals(handler: (signal: NodeJS.Signals) => void): () => void {
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
  return () => {
    process.off("SIGINT", handler);
    process.off("SIGTERM", handler);
  };
}
