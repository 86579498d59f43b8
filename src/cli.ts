import { parseArgs, type ParseArgsConfig } from "node:util";
import type { AgentOptions } from "./agent/index.js";
import type { LogFormat } from "./agent/log.js";
import { formatDiagnostics } from "./diagnostics.js";
import { InterceptError, messageOf, PolicyError, UsageError } from "./errors.js";
import type { ListenAddress } from "./model/listen-address.js";
import { NETNS_GLOB, NETNS_NAME } from "./model/namespace.js";

const USAGE = `Usage: intercept <command> [options] [PATH…]

PATH is a policy file (.ts, .yaml, .yml) or a folder of them; default: policies/.

Commands:
  demo                                  see interception work in a sandbox of network namespaces
                                        (root; removes everything when done or interrupted)
  init     [DIR] [--force]              scaffold a policy repository (--force: overwrite its files)
  validate [PATH…] [--json]             check policies; every error of every file at once
  compile  [PATH…] [--check]            write generated/<policy>.bpf.c (--check: fail on drift)
  build    [PATH…] [--out DIR]          compile, then clang into BPF objects (--out: objects and a
                                        manifest for nodes without clang: --objects DIR)
  plan     [PATH…] [--netns NAME] [--objects DIR] [--json] [--detailed-exitcode] [--out FILE] [--no-color]
                                        what apply would change in the kernel (--out: save it)
  apply    [PATH…] [--netns NAME] [--objects DIR] [--yes] [--allow-empty] [--lock-timeout 10s] [--no-color]
                                        make the kernel match the policies
  apply    --plan FILE [--yes]          apply a saved plan exactly; refused if anything moved
  destroy  [--netns NAME] [--yes] [--lock-timeout 10s] [--no-color]
                                        remove everything intercept made in the namespace
  status   [PATH…] [--netns NAME] [--json]
                                        attached links, rules, counters
  agent    [PATH…] [--netns NAME | --netns-match GLOB…] [--objects DIR] [--keep] [--log-format text|json]
           [--metrics HOST:PORT]        keep the kernel matching the policies as links and
                                        files change; on SIGINT/SIGTERM remove it all (--keep: leave it);
                                        --netns-match (repeatable): every namespace in /var/run/netns
                                        whose name matches, followed as they come and go

Options:
  --netns NAME   act inside the network namespace NAME (as listed by \`ip netns\`)
  --yes          do not ask for confirmation (never asked when stdin is not a terminal)
  --lock-timeout how long apply and destroy wait while another intercept process changes the
                 namespace (default 10s; 0: fail at once)
  -h, --help     show this help
  --version      print intercept's version

Exit codes: 0 success (plan --detailed-exitcode: 0 no changes, 2 changes), 1 error, 2 bad usage.
`;

type Options = NonNullable<ParseArgsConfig["options"]>;

const NETNS = { netns: { type: "string" } } as const;
const COLOUR = { "no-color": { type: "boolean", default: false } } as const;
const JSON_OUTPUT = { json: { type: "boolean", default: false } } as const;
const CONFIRM = { yes: { type: "boolean", short: "y", default: false } } as const;
const LOCK = { "lock-timeout": { type: "string", default: "10s" } } as const;
const OBJECTS = { objects: { type: "string" } } as const;

/** Each command's own options: anything else on its command line is a usage error. */
const COMMANDS = {
  demo: { options: {}, paths: false },
  init: { options: { force: { type: "boolean", default: false } }, paths: true },
  validate: { options: { ...JSON_OUTPUT }, paths: true },
  compile: { options: { check: { type: "boolean", default: false } }, paths: true },
  build: { options: { out: { type: "string" } }, paths: true },
  plan: { options: { ...NETNS, ...OBJECTS, ...JSON_OUTPUT, ...COLOUR, "detailed-exitcode": { type: "boolean", default: false }, out: { type: "string" } }, paths: true },
  apply: { options: { ...NETNS, ...OBJECTS, ...COLOUR, ...CONFIRM, ...LOCK, plan: { type: "string" }, "allow-empty": { type: "boolean", default: false } }, paths: true },
  destroy: { options: { ...NETNS, ...COLOUR, ...CONFIRM, ...LOCK }, paths: false },
  status: { options: { ...NETNS, ...OBJECTS, ...JSON_OUTPUT }, paths: true },
  agent: { options: { ...NETNS, ...OBJECTS, ...LOCK, "netns-match": { type: "string", multiple: true }, keep: { type: "boolean", default: false }, "log-format": { type: "string", default: "text" }, metrics: { type: "string" } }, paths: true },
} as const satisfies Record<string, { options: Options; paths: boolean }>;

export type Command = keyof typeof COMMANDS;

/** Parses arguments and runs one command; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  try {
    return await dispatch(argv);
  } catch (error) {
    return reportError(error);
  }
}

async function dispatch(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === "--version") return (await import("./commands/version.js")).versionCommand();
  if (command === undefined || command === "-h" || command === "--help" || command === "help") {
    process.stdout.write(USAGE);
    return command === undefined ? 2 : 0;
  }
  if (!(command in COMMANDS)) throw new UsageError(`unknown command "${command}" (see intercept --help)`);
  const spec = COMMANDS[command as Command];
  const { values, positionals } = parseCommand(command, rest, spec.options);
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (!spec.paths && positionals.length > 0) throw new UsageError(`${command} takes no PATH (got "${positionals[0]}")`);
  // Every value is checked here, before any command touches the kernel.
  const netns = values.netns === undefined ? undefined : { name: namespaceName(values.netns as string) };
  const colour = !values["no-color"] && Boolean(process.stdout.isTTY) && !process.env.NO_COLOR;
  // Each command imports only what it uses: start-up time is most of a no-change plan.
  switch (command as Command) {
    case "demo": return (await import("./commands/demo.js")).demoCommand();
    case "init": return (await import("./commands/init.js")).initCommand(positionals, { force: Boolean(values.force) });
    case "validate": return (await import("./commands/validate.js")).validateCommand(positionals, { json: Boolean(values.json) });
    case "compile": return (await import("./commands/compile.js")).compileCommand(positionals, { check: Boolean(values.check) });
    case "build": return (await import("./commands/compile.js")).buildCommand(positionals, { ...(values.out !== undefined && { out: nonEmpty("--out", values.out as string) }) });
    case "plan": return (await import("./commands/plan.js")).planCommand(positionals, {
      netns: netns ?? {}, json: Boolean(values.json), colour, detailedExitcode: Boolean(values["detailed-exitcode"]),
      ...(values.out !== undefined && { out: nonEmpty("--out", values.out as string) }),
      ...objectsOption(values),
    });
    case "apply": return (await import("./commands/plan.js")).applyCommand(positionals, {
      netns, colour, yes: Boolean(values.yes), allowEmpty: Boolean(values["allow-empty"]), lockTimeoutMs: duration("--lock-timeout", values["lock-timeout"] as string),
      ...(values.plan !== undefined && { plan: nonEmpty("--plan", values.plan as string) }),
      ...objectsOption(values),
    });
    case "destroy": return (await import("./commands/plan.js")).destroyCommand({ netns, colour, yes: Boolean(values.yes), lockTimeoutMs: duration("--lock-timeout", values["lock-timeout"] as string) });
    case "status": return (await import("./commands/status.js")).statusCommand(positionals, { netns: netns ?? {}, json: Boolean(values.json), ...objectsOption(values) });
    case "agent": return (await import("./agent/index.js")).runAgent(positionals, agentOptions(values));
  }
}

/**
 * `intercept agent`'s command line, checked as the CLI checks it, without
 * running anything: what a deployment's arguments mean (the Kubernetes
 * manifest's test reads its DaemonSet's arguments with it).
 */
export function parseAgentArguments(args: string[]): { paths: string[]; options: AgentOptions } {
  const { values, positionals } = parseCommand("agent", args, COMMANDS.agent.options);
  return { paths: positionals, options: agentOptions(values) };
}

/** The options of every command, by name: each flag's type and whether it may be repeated. */
export function commandOptions(command: Command): Readonly<Record<string, { type: "string" | "boolean"; multiple?: boolean }>> {
  return COMMANDS[command].options;
}

function agentOptions(values: ParsedCommand["values"]): AgentOptions {
  const match = values["netns-match"] as string[] | undefined;
  if (match !== undefined && values.netns !== undefined) throw new UsageError("--netns and --netns-match cannot be used together: one namespace, or every matching one");
  return {
    namespaces: match === undefined ? { kind: "one", netns: values.netns === undefined ? {} : { name: namespaceName(values.netns as string) } } : { kind: "matching", globs: match.map(namespaceGlob) },
    keep: Boolean(values.keep), logFormat: logFormat(values["log-format"] as string), lockTimeoutMs: duration("--lock-timeout", values["lock-timeout"] as string),
    ...(values.metrics !== undefined && { metrics: listenAddress(values.metrics as string) }),
    ...objectsOption(values),
  };
}

/** Option values by name (each command's options are its own); positionals are paths. */
interface ParsedCommand {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

function parseCommand(command: string, args: string[], options: Options): ParsedCommand {
  try {
    return parseArgs({ args, options: { ...options, help: { type: "boolean", short: "h", default: false } }, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError(`${command}: ${messageOf(error).replace(/\. To specify a positional argument.*$/, "")}`);
  }
}

/** `ip netns` names are file names under /var/run/netns: no slashes, no leading dot. */
function namespaceName(value: string): string {
  if (!NETNS_NAME.test(value)) {
    throw new UsageError(`--netns: "${value.slice(0, 64)}" is not a network namespace name (letters, digits, _ . -)`);
  }
  return value;
}

/** A --netns-match glob: the characters of a namespace name, and * and ?. */
function namespaceGlob(value: string): string {
  if (!NETNS_GLOB.test(value)) {
    throw new UsageError(`--netns-match: "${value.slice(0, 64)}" is not a glob of network namespace names (letters, digits, _ . - and * ?)`);
  }
  return value;
}

function objectsOption(values: ParsedCommand["values"]): { objects?: string } {
  return values.objects === undefined ? {} : { objects: nonEmpty("--objects", values.objects as string) };
}

function nonEmpty(flag: string, value: string): string {
  if (value === "") throw new UsageError(`${flag} needs a file name`);
  return value;
}

/** "10s", "500ms", "2m" or a number of seconds, as Terraform's -lock-timeout takes them; in ms. */
function duration(flag: string, value: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(value);
  if (!match) throw new UsageError(`${flag}: "${value.slice(0, 32)}" is not a duration (e.g. 10s, 500ms, 2m, 0)`);
  return Number(match[1]) * { ms: 1, s: 1000, m: 60_000 }[match[2] as "ms" | "s" | "m" ?? "s"];
}

function logFormat(value: string): LogFormat {
  if (value !== "text" && value !== "json") throw new UsageError(`--log-format must be text or json, not "${value.slice(0, 32)}"`);
  return value;
}

/** An address the agent can listen on for metrics: src/model/listen-address.ts. */
export type { ListenAddress };

/**
 * "HOST:PORT", "[V6]:PORT", ":PORT" or "PORT" (host then 127.0.0.1: metrics
 * are never exposed unless asked). Whether it can be bound is checked when
 * the agent starts, before it touches the kernel.
 */
export function listenAddress(value: string): ListenAddress {
  const match = /^(?:(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):)?(\d{1,5})$/.exec(value);
  const port = Number(match?.[2]);
  if (!match || port > 65535) throw new UsageError(`--metrics: "${value.slice(0, 64)}" is not HOST:PORT (e.g. 127.0.0.1:9464)`);
  const host = (match[1] ?? "").replace(/^\[|\]$/g, "") || "127.0.0.1";
  return { host, port };
}

/** One line per error, never a stack: codes decide the exit status, not names or messages. */
function reportError(error: unknown): number {
  if (error instanceof PolicyError) {
    const colour = Boolean(process.stderr.isTTY) && !process.env.NO_COLOR;
    process.stderr.write(`${formatDiagnostics(error.diagnostics, { colour })}\nintercept: ${error.message}\n`);
    return error.exitCode;
  }
  if (error instanceof InterceptError) {
    process.stderr.write(`intercept: ${error.message}\n${error.code === "usage" ? "Run `intercept --help` for usage.\n" : ""}`);
    return error.exitCode;
  }
  // Not one of ours: a bug. Still one line; the stack only when asked for.
  process.stderr.write(`intercept: internal error: ${messageOf(error).split("\n")[0]} (set INTERCEPT_DEBUG=1 for the stack)\n`);
  if (process.env.INTERCEPT_DEBUG && error instanceof Error) process.stderr.write(`${error.stack}\n`);
  return 1;
}
