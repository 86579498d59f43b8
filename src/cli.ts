import { parseArgs, type ParseArgsConfig } from "node:util";
import type { AgentOptions } from "./agent/index.js";
import type { CniOptions } from "./agent/cni.js";
import type { CommandContext } from "./commands/context.js";
import type { LogFormat } from "./agent/log.js";
import { closestMatch, renderCommandHelp, renderOverview } from "./commands/help.js";
import { errorDocument, printJson } from "./commands/output.js";
import { COMMAND_NAMES, COMMANDS, isCommand, longNames, optionsOf, type Command } from "./commands/table.js";
import { formatDiagnostics } from "./diagnostics.js";
import { InterceptError, messageOf, PolicyError, UsageError } from "./errors.js";
import type { Host } from "./host/types.js";
import type { ListenAddress } from "./model/listen-address.js";
import { FLOW_VERDICTS, type FlowVerdict } from "./model/bpf-abi.js";
import { DEFAULT_CNI_BIN_DIR, DEFAULT_CNI_CONF_DIR } from "./model/cni.js";
import { NETNS_GLOB, NETNS_NAME } from "./model/namespace.js";

export type { Command } from "./commands/table.js";

/** Option values by name (aliases folded into their option's name); positionals are paths. */
interface ParsedCommand {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

/** A parsed command line: what each command's runner gets. */
interface Invocation extends ParsedCommand {
  /** Colour on stdout: a terminal, and neither --no-color nor NO_COLOR. */
  colour: boolean;
}

/** Whether @stream may be coloured: a terminal, and neither --no-color nor NO_COLOR. */
function colourFor(stream: NodeJS.WriteStream, values: ParsedCommand["values"]): boolean {
  return !values["no-color"] && Boolean(stream.isTTY) && !process.env.NO_COLOR;
}

type Runner = (invocation: Invocation) => Promise<number>;

/**
 * What each command runs: its option values checked first (a bad one is
 * refused before anything heavy is loaded), then it imports only what it
 * uses (start-up time is most of a no-change plan). A command in the table
 * without a runner here does not compile.
 */
const RUNNERS: Record<Command, Runner> = {
  demo: async () => (await import("./commands/demo.js")).demoCommand(await commandContext()),
  init: async ({ values, positionals }) =>
    (await import("./commands/init.js")).initCommand(positionals, { force: Boolean(values.force) }),
  validate: async ({ values, positionals }) =>
    (await import("./commands/validate.js")).validateCommand(positionals, {
      json: Boolean(values.json),
      colour: colourFor(process.stderr, values),
    }),
  compile: async ({ values, positionals }) =>
    (await import("./commands/compile.js")).compileCommand(positionals, { check: Boolean(values.check) }),
  build: async ({ values, positionals }) => {
    const options = { ...(values.out !== undefined && { out: nonEmpty("--out", values.out as string) }) };
    return (await import("./commands/compile.js")).buildCommand(positionals, options);
  },
  plan: async ({ values, positionals, colour }) => {
    const options = {
      netns: namespaceOption(values) ?? {},
      json: Boolean(values.json),
      colour,
      detailedExitcode: Boolean(values["detailed-exitcode"]),
      ...(values.out !== undefined && { out: nonEmpty("--out", values.out as string) }),
      ...objectsOption(values),
    };
    return (await import("./commands/plan.js")).planCommand(await commandContext(), positionals, options);
  },
  apply: async ({ values, positionals, colour }) => {
    const options = {
      netns: namespaceOption(values),
      colour,
      yes: Boolean(values.yes),
      allowEmpty: Boolean(values["allow-empty"]),
      ...lockOptions(values),
      ...(values.plan !== undefined && { plan: nonEmpty("--plan", values.plan as string) }),
      ...objectsOption(values),
    };
    return (await import("./commands/apply.js")).applyCommand(await commandContext(), positionals, options);
  },
  destroy: async ({ values, colour }) => {
    const options = { netns: namespaceOption(values), colour, yes: Boolean(values.yes), ...lockOptions(values) };
    return (await import("./commands/destroy.js")).destroyCommand(await commandContext(), options);
  },
  status: async ({ values, positionals }) => {
    const options = { netns: namespaceOption(values) ?? {}, json: Boolean(values.json), ...objectsOption(values) };
    return (await import("./commands/status.js")).statusCommand(await commandContext(), positionals, options);
  },
  watch: async ({ values, positionals }) => {
    const match = values["netns-match"] as string[] | undefined;
    if (match !== undefined && values.netns !== undefined)
      throw new UsageError("--netns and --netns-match cannot be used together: one namespace, or every matching one");
    const netns = namespaceOption(values);
    const options = {
      ...(netns && { netns }),
      ...(match && { netnsMatch: match.map(namespaceGlob) }),
      policies: (values.policy as string[] | undefined) ?? [],
      ...(values.port !== undefined && { port: portOption("--port", values.port as string) }),
      verdicts: ((values.verdict as string[] | undefined) ?? []).map(verdictOption),
      json: Boolean(values.json),
      enable: Boolean(values.enable),
      ...objectsOption(values),
    };
    return (await import("./commands/watch.js")).watchCommand(await commandContext(), positionals, options);
  },
  explain: async ({ values, positionals }) => {
    const options = {
      netns: namespaceOption(values) ?? {},
      to: values.to as string | undefined,
      from: values.from as string | undefined,
      udp: Boolean(values.udp),
      cgroup: values.cgroup as string | undefined,
      uid: values.uid as string | undefined,
      json: Boolean(values.json),
      ...objectsOption(values),
    };
    return (await import("./commands/explain.js")).explainCommand(await commandContext(), positionals, options);
  },
  agent: async ({ values, positionals }) => {
    const options = agentOptions(values);
    const [{ runAgent }, host] = await Promise.all([import("./agent/index.js"), kernelHost()]);
    return runAgent(positionals, options, host);
  },
  cni: async ({ values, positionals }) => {
    const action = positionals[0];
    if (positionals.length !== 1 || (action !== "install" && action !== "uninstall"))
      throw new UsageError("cni takes one action: install or uninstall");
    return (await import("./commands/cni.js")).cniCommand(await commandContext(), action, cniOptions(values));
  },
  completion: async ({ positionals }) => (await import("./commands/completion.js")).completionCommand(positionals),
  version: async () => (await import("./commands/version.js")).versionCommand(),
  help: async ({ positionals }) => {
    if (positionals.length > 1) throw new UsageError(`help takes one command, got ${positionals.length}`);
    const topic = positionals[0];
    process.stdout.write(topic === undefined ? renderOverview() : renderCommandHelp(knownCommand(topic)));
    return 0;
  },
};

/**
 * The one place the machine is chosen: the agent and every command that
 * looks at or changes the kernel run on this KernelHost (tests give them a
 * FakeHost instead).
 */
async function kernelHost(): Promise<Host> {
  const { KernelHost } = await import("./host/kernel.js");
  return new KernelHost();
}

/** What a command runs on: the machine, clang or --objects (announced on a terminal), the process's streams. */
async function commandContext(): Promise<CommandContext> {
  const [host, { programBuilder }] = await Promise.all([kernelHost(), import("./commands/objects.js")]);
  return { host, programBuilder, stdout: process.stdout, stderr: process.stderr };
}

/** Parses arguments and runs one command; returns the exit code (0 success, 1 error, 2 only plan --detailed-exitcode's changes). */
export async function main(argv: string[]): Promise<number> {
  try {
    return await dispatch(argv);
  } catch (error) {
    const command = argv[0] !== undefined && isCommand(argv[0]) ? argv[0] : undefined;
    return reportError(error, { command, json: wantsJson(argv), colour: !argv.includes("--no-color") });
  }
}

async function dispatch(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined) {
    process.stderr.write(renderOverview());
    return 1;
  }
  if (first === "-h" || first === "--help") return RUNNERS.help({ values: {}, positionals: [], colour: false });
  if (first === "-v" || first === "--version") return RUNNERS.version({ values: {}, positionals: [], colour: false });
  const command = knownCommand(first);
  const parsed = parseCommand(command, rest);
  if (parsed.values.help) {
    process.stdout.write(renderCommandHelp(command));
    return 0;
  }
  if (COMMANDS[command].positionals === "none" && parsed.positionals.length > 0) {
    throw new UsageError(`${command} takes no PATH (got "${parsed.positionals[0]}")`);
  }
  return RUNNERS[command]({ ...parsed, colour: colourFor(process.stdout, parsed.values) });
}

/** @name as a command, or a usage error that suggests the closest one. */
function knownCommand(name: string): Command {
  if (isCommand(name)) return name;
  if (name.startsWith("-")) {
    const hint = closestMatch(name, ["--help", "--version"]);
    throw new UsageError(
      `a command comes first, then its options (got "${name.slice(0, 64)}"${hint ? `: did you mean ${hint}?` : ""})`,
    );
  }
  const hint = closestMatch(name, COMMAND_NAMES);
  throw new UsageError(`unknown command "${name.slice(0, 64)}"${hint ? `: did you mean "${hint}"?` : ""}`);
}

/**
 * `intercept agent`'s command line, checked as the CLI checks it, without
 * running anything: what a deployment's arguments mean (the Kubernetes
 * manifest's test reads its DaemonSet's arguments with it).
 */
export function parseAgentArguments(args: string[]): { paths: string[]; options: AgentOptions } {
  const { values, positionals } = parseCommand("agent", args);
  return { paths: positionals, options: agentOptions(values) };
}

/** A command's line parsed as the CLI parses it (aliases folded), its values not yet checked: a usage error if it is not one. */
export function parseCommandLine(command: Command, args: string[]): ParsedCommand {
  return parseCommand(command, args);
}

/** The options a command accepts, by name (aliases and global ones included): each flag's type and whether it may be repeated. */
export function commandOptions(
  command: Command,
): Readonly<Record<string, { type: "string" | "boolean"; multiple?: boolean }>> {
  return Object.fromEntries(
    Object.entries(parserOptions(command)).map(([name, option]) => [
      name,
      { type: option.type, ...(option.multiple && { multiple: true }) },
    ]),
  );
}

function agentOptions(values: ParsedCommand["values"]): AgentOptions {
  const match = values["netns-match"] as string[] | undefined;
  if (match !== undefined && values.netns !== undefined)
    throw new UsageError("--netns and --netns-match cannot be used together: one namespace, or every matching one");
  if (values.cni === true && match === undefined)
    throw new UsageError("--cni needs --netns-match: the plugin captures the pods' namespaces the agent serves");
  return {
    namespaces:
      match === undefined
        ? { kind: "one", netns: namespaceOption(values) ?? {} }
        : { kind: "matching", globs: match.map(namespaceGlob) },
    keep: Boolean(values.keep),
    flows: Boolean(values.flows),
    logFormat: logFormat((values["log-format"] as string | undefined) ?? "text"),
    lockTimeoutMs: lockTimeout(values),
    resyncMs: resyncInterval((values["resync-interval"] as string | undefined) ?? "30s"),
    ...(values.metrics !== undefined && { metrics: listenAddress(values.metrics as string) }),
    ...objectsOption(values),
    ...(values.cni === true && { cni: cniOptions(values) }),
  };
}

/** --cni-bin-dir, --cni-conf-dir and --cni-failure, with their defaults. */
function cniOptions(values: ParsedCommand["values"]): CniOptions {
  const failure = (values["cni-failure"] as string | undefined) ?? "closed";
  if (failure !== "closed" && failure !== "open")
    throw new UsageError(`--cni-failure must be closed or open (got "${failure.slice(0, 32)}")`);
  return {
    binDir: (values["cni-bin-dir"] as string | undefined) ?? DEFAULT_CNI_BIN_DIR,
    confDir: (values["cni-conf-dir"] as string | undefined) ?? DEFAULT_CNI_CONF_DIR,
    failurePolicy: failure,
  };
}

/** The table's options as parseArgs takes them: each alias an option of its own, folded back after parsing. */
function parserOptions(command: Command): NonNullable<ParseArgsConfig["options"]> {
  return Object.fromEntries(
    Object.entries(optionsOf(command)).flatMap(([name, spec]) => [
      [name, { type: spec.type, ...(spec.short && { short: spec.short }), ...(spec.multiple && { multiple: true }) }],
      ...(spec.aliases ?? []).map((alias) => [alias, { type: spec.type, ...(spec.multiple && { multiple: true }) }]),
    ]),
  );
}

function parseCommand(command: Command, args: string[]): ParsedCommand {
  let parsed: ParsedCommand;
  try {
    parsed = parseArgs({
      args,
      options: parserOptions(command),
      allowPositionals: true,
      strict: true,
    }) as ParsedCommand;
  } catch (error) {
    throw new UsageError(`${command}: ${parseErrorMessage(command, error)}`);
  }
  const values: ParsedCommand["values"] = { ...parsed.values };
  for (const [name, spec] of Object.entries(optionsOf(command))) {
    for (const alias of spec.aliases ?? []) {
      if (values[alias] !== undefined) values[name] ??= values[alias];
      delete values[alias];
    }
  }
  return { values, positionals: parsed.positionals };
}

/** parseArgs's message in our words, with the closest option for a mistyped one. */
function parseErrorMessage(command: Command, error: unknown): string {
  const message = messageOf(error).replace(/\. To specify a positional argument.*$/s, "");
  const unknown = /^Unknown option '(-{1,2})([^']*)'/.exec(message);
  if ((error as { code?: string }).code !== "ERR_PARSE_ARGS_UNKNOWN_OPTION" || !unknown) return message;
  const typed = unknown[2]!.split("=")[0]!;
  const hint = unknown[1] === "--" ? closestMatch(typed, longNames(command)) : undefined;
  return `unknown option ${unknown[1]}${typed}${hint ? `: did you mean --${hint}?` : ""}`;
}

function namespaceOption(values: ParsedCommand["values"]): { name: string } | undefined {
  return values.netns === undefined ? undefined : { name: namespaceName(values.netns as string) };
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
    throw new UsageError(
      `--netns-match: "${value.slice(0, 64)}" is not a glob of network namespace names (letters, digits, _ . - and * ?)`,
    );
  }
  return value;
}

function portOption(flag: string, value: string): number {
  const port = Number(value);
  if (!/^\d+$/.test(value) || port < 1 || port > 65535)
    throw new UsageError(`${flag}: "${value.slice(0, 16)}" is not a port (1-65535)`);
  return port;
}

function verdictOption(value: string): FlowVerdict {
  const verdicts: readonly string[] = Object.values(FLOW_VERDICTS);
  if (!verdicts.includes(value))
    throw new UsageError(`--verdict: "${value.slice(0, 32)}" is not one of ${verdicts.join(", ")}`);
  return value as FlowVerdict;
}

function objectsOption(values: ParsedCommand["values"]): { objects?: string } {
  return values.objects === undefined ? {} : { objects: nonEmpty("--objects", values.objects as string) };
}

function nonEmpty(flag: string, value: string): string {
  if (value === "") throw new UsageError(`${flag} needs a file name`);
  return value;
}

/** How long to wait for the namespace's lock, and whether also for an agent's (apply, destroy). */
function lockOptions(values: ParsedCommand["values"]): { lockTimeoutMs: number; waitForAgent: boolean } {
  return { lockTimeoutMs: lockTimeout(values), waitForAgent: Boolean(values["wait-for-agent"]) };
}

/** The longest --lock-timeout accepted: an hour, longer than any CI job should wait for a namespace. */
const MAX_LOCK_TIMEOUT_MS = 60 * 60 * 1000;

/** --lock-timeout, at most MAX_LOCK_TIMEOUT_MS: a longer wait is a mistake, not a plan. */
function lockTimeout(values: ParsedCommand["values"]): number {
  const text = (values["lock-timeout"] as string | undefined) ?? "10s";
  const ms = duration("--lock-timeout", text);
  if (ms > MAX_LOCK_TIMEOUT_MS)
    throw new UsageError(
      `--lock-timeout: at most ${MAX_LOCK_TIMEOUT_MS / 60_000}m (1 hour), not "${text.slice(0, 32)}"`,
    );
  return ms;
}

/** "10s", "500ms", "2m" or a number of seconds, as Terraform's -lock-timeout takes them; in ms. */
function duration(flag: string, value: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(value);
  if (!match) throw new UsageError(`${flag}: "${value.slice(0, 32)}" is not a duration (e.g. 10s, 500ms, 2m, 0)`);
  return Number(match[1]) * { ms: 1, s: 1000, m: 60_000 }[(match[2] as "ms" | "s" | "m") ?? "s"];
}

/** --resync-interval: 0 (off), or at least a second: each resync reads every policy and plans a few namespaces. */
function resyncInterval(value: string): number {
  const ms = duration("--resync-interval", value);
  if (ms !== 0 && ms < 1000)
    throw new UsageError(`--resync-interval: "${value.slice(0, 32)}" is too short (at least 1s, or 0 for never)`);
  return ms;
}

function logFormat(value: string): LogFormat {
  if (value !== "text" && value !== "json")
    throw new UsageError(`--log-format must be text or json, not "${value.slice(0, 32)}"`);
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
  if (!match || port > 65535)
    throw new UsageError(`--metrics: "${value.slice(0, 64)}" is not HOST:PORT (e.g. 127.0.0.1:9464)`);
  const host = (match[1] ?? "").replace(/^\[|\]$/g, "") || "127.0.0.1";
  return { host, port };
}

/** Whether the command line asks for JSON: then errors are JSON on stdout too (a command with a --json option only). */
function wantsJson(argv: string[]): boolean {
  const [command, ...rest] = argv;
  return command !== undefined && isCommand(command) && "json" in COMMANDS[command].options && rest.includes("--json");
}

/**
 * One line per error, never a stack: codes decide the exit status, not
 * names or messages. Under --json the error is also a JSON document on
 * stdout, with its code (and the diagnostics of invalid policies).
 */
function reportError(error: unknown, output: { command: Command | undefined; json: boolean; colour: boolean }): number {
  if (output.json) printJson(errorDocument(error));
  if (error instanceof PolicyError) {
    const colour = output.colour && Boolean(process.stderr.isTTY) && !process.env.NO_COLOR;
    process.stderr.write(
      `${output.json ? "" : `${formatDiagnostics(error.diagnostics, { colour })}\n`}intercept: ${error.message}\n`,
    );
    return error.exitCode;
  }
  if (error instanceof InterceptError) {
    const help =
      output.command === undefined || output.command === "help"
        ? "intercept --help"
        : `intercept ${output.command} --help`;
    process.stderr.write(
      `intercept: ${error.message}\n${error.code === "usage" ? `Run \`${help}\` for usage.\n` : ""}`,
    );
    return error.exitCode;
  }
  // Not one of ours: a bug. Still one line; the stack only when asked for.
  process.stderr.write(
    `intercept: internal error: ${messageOf(error).split("\n")[0]} (set INTERCEPT_DEBUG=1 for the stack)\n`,
  );
  if (process.env.INTERCEPT_DEBUG && error instanceof Error) process.stderr.write(`${error.stack}\n`);
  return 1;
}
