import { parseArgs } from "node:util";
import type { LogFormat } from "./agent/log.js";
import { formatDiagnostics } from "./diagnostics.js";
import { InterceptError, messageOf, PolicyError, UsageError } from "./errors.js";

const USAGE = `Usage: intercept <command> [options] [PATH…]

PATH is a policy file (.ts, .yaml, .yml) or a folder of them; default: policies/.

Commands:
  validate [PATH…] [--json]             check policies; every error as FILE:LINE:COL
  compile  [PATH…] [--check]            write generated/<policy>.bpf.c (--check: fail on drift)
  build    [PATH…]                      compile, then clang into build/<policy>.bpf.o
  plan     [PATH…] [--netns NAME] [--json] [--detailed-exitcode] [--out FILE] [--no-color]
                                        what apply would change in the kernel (--out: save it)
  apply    [PATH…] [--netns NAME] [--yes] [--no-color]
                                        make the kernel match the policies
  apply    FILE [--yes]                 apply a saved plan exactly; refused if the kernel changed
  destroy  [--netns NAME] [--yes]       remove everything intercept made in the namespace
  status   [PATH…] [--netns NAME] [--json]
                                        attached links, rules, counters
  agent    [PATH…] [--netns NAME] [--keep] [--log-format text|json] [--metrics HOST:PORT]
                                        keep the kernel matching the policies as links and
                                        files change; on SIGINT/SIGTERM remove it all (--keep: leave it)

Options:
  --netns NAME   act inside the network namespace NAME (as listed by \`ip netns\`)
  --yes          do not ask for confirmation (never asked when stdin is not a terminal)
  -h, --help     show this help
`;

const OPTIONS = {
  netns: { type: "string" },
  out: { type: "string" },
  json: { type: "boolean", default: false },
  check: { type: "boolean", default: false },
  yes: { type: "boolean", short: "y", default: false },
  "no-color": { type: "boolean", default: false },
  "detailed-exitcode": { type: "boolean", default: false },
  help: { type: "boolean", short: "h", default: false },
  keep: { type: "boolean", default: false },
  "log-format": { type: "string", default: "text" },
  metrics: { type: "string" },
} as const;

/** Parses arguments and runs one command; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  try {
    const { values, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
    const [command, ...paths] = positionals;
    if (values.help || !command) {
      process.stdout.write(USAGE);
      return command || values.help ? 0 : 2;
    }
    const netns = values.netns === undefined ? {} : { name: values.netns };
    const colour = !values["no-color"] && Boolean(process.stdout.isTTY) && !process.env.NO_COLOR;
    // Each command imports only what it uses: start-up time is most of a no-change plan.
    switch (command) {
      case "validate": return await (await import("./commands/validate.js")).validateCommand(paths, { json: values.json });
      case "compile": return await (await import("./commands/compile.js")).compileCommand(paths, { check: values.check });
      case "build": return await (await import("./commands/compile.js")).buildCommand(paths);
      case "plan": return await (await import("./commands/plan.js")).planCommand(paths, { netns, json: values.json, colour, detailedExitcode: values["detailed-exitcode"], ...(values.out && { out: values.out }) });
      case "apply": return await (await import("./commands/plan.js")).applyCommand(paths, { netns, colour, yes: values.yes });
      case "destroy": return await (await import("./commands/plan.js")).destroyCommand({ netns, colour, yes: values.yes });
      case "status": return await (await import("./commands/status.js")).statusCommand(paths, { netns, json: values.json });
      case "agent": return await (await import("./agent/index.js")).runAgent(paths, { netns, keep: values.keep, logFormat: logFormat(values["log-format"]), ...(values.metrics && { metrics: values.metrics }) });
      default: throw new UsageError(`unknown command "${command}" (see intercept --help)`);
    }
  } catch (error) {
    return reportError(error);
  }
}

function logFormat(value: string): LogFormat {
  if (value !== "text" && value !== "json") throw new UsageError(`--log-format must be text or json, not "${value}"`);
  return value;
}

/** Errors a user can cause print as lines, without a stack; anything else keeps its stack. */
function reportError(error: unknown): number {
  if (error instanceof PolicyError) {
    const colour = Boolean(process.stderr.isTTY) && !process.env.NO_COLOR;
    process.stderr.write(`${formatDiagnostics(error.diagnostics, { colour })}\nintercept: ${error.message}\n`);
    return error.exitCode;
  }
  if (error instanceof InterceptError) {
    process.stderr.write(`intercept: ${error.message}\n`);
    return error.exitCode;
  }
  if (error instanceof Error && (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
    process.stderr.write(`intercept: ${error.message}\n${USAGE}`);
    return 2;
  }
  process.stderr.write(`intercept: unexpected error\n${error instanceof Error ? error.stack : messageOf(error)}\n`);
  return 1;
}
