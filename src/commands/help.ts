import { distance } from "fastest-levenshtein";
import {
  COMMAND_NAMES,
  COMMANDS,
  EXIT_CODES,
  GLOBAL_OPTIONS,
  optionLabel,
  optionsOf,
  type Command,
  type OptionSpec,
} from "./table.js";

const WIDTH = 100;

/** `intercept --help`: the commands, one line each. */
export function renderOverview(): string {
  const width = Math.max(...COMMAND_NAMES.map((name) => name.length)) + 2;
  return [
    "Usage: intercept COMMAND [options]",
    "",
    "Intercepts TCP/UDP traffic on Linux with eBPF, from typed policies (policies/ by default).",
    "",
    "Commands:",
    ...COMMAND_NAMES.map((name) => `  ${name.padEnd(width)}${COMMANDS[name].summary}`),
    "",
    "Global options:",
    ...optionLines({
      ...GLOBAL_OPTIONS,
      version: { type: "boolean", short: "v", description: "print intercept's version (also: `intercept version`)" },
    }),
    "",
    "Run `intercept help COMMAND` (or `intercept COMMAND --help`) for a command's options.",
    exitCodeLine(),
    "",
  ].join("\n");
}

/** `intercept help plan`, `intercept plan --help`: usage, what it does, every option it takes. */
export function renderCommandHelp(command: Command): string {
  const spec = COMMANDS[command];
  const options = optionsOf(command);
  return [
    `Usage: ${usageLine(command)}`,
    "",
    `${capitalised(spec.summary)}.`,
    ...spec.description.flatMap((paragraph) => ["", ...wrap(paragraph, WIDTH)]),
    "",
    "Options:",
    ...optionLines(options),
    ...("examples" in spec ? ["", "Examples:", ...examples(spec.examples).map((line) => `  ${line}`)] : []),
    "",
    exitCodeLine(),
    "",
  ].join("\n");
}

export function usageLine(command: Command): string {
  const operands = COMMANDS[command].operands;
  return `intercept ${command} [options]${operands ? ` ${operands}` : ""}`;
}

/** Examples as a shell reads them, their comments aligned. */
function examples(list: readonly (readonly [string, string])[]): string[] {
  const width = Math.max(...list.map(([line]) => line.length)) + 2;
  return list.map(([line, what]) => `${line.padEnd(width)}# ${what}`);
}

function exitCodeLine(): string {
  return `Exit codes: ${EXIT_CODES.map(([code, meaning]) => `${code} ${meaning.split(" (")[0]!.split(":")[0]}`).join("; ")}.`;
}

function optionWidth(options: Readonly<Record<string, OptionSpec>>): number {
  return Math.min(30, Math.max(...Object.entries(options).map(([name, spec]) => optionLabel(name, spec).length)) + 2);
}

function optionLines(options: Readonly<Record<string, OptionSpec>>): string[] {
  const width = optionWidth(options);
  return Object.entries(options).flatMap(([name, spec]) => {
    const label = optionLabel(name, spec);
    const text = `${spec.description}${spec.defaultText ? ` (default: ${spec.defaultText})` : ""}`;
    const lines = wrap(text, WIDTH - width - 2);
    const first =
      label.length < width
        ? [`  ${label.padEnd(width)}${lines[0]}`]
        : [`  ${label}`, `  ${" ".repeat(width)}${lines[0]}`];
    return [...first, ...lines.slice(1).map((line) => `  ${" ".repeat(width)}${line}`)];
  });
}

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  return [...lines, line];
}

function capitalised(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/**
 * The closest of @candidates to @typed, if it is close enough to be a typo:
 * at most a third of its letters wrong (two at least), as git and kubectl
 * suggest. A prefix of exactly one candidate counts too (`intercept stat`).
 */
export function closestMatch(typed: string, candidates: readonly string[]): string | undefined {
  const prefixed = candidates.filter((candidate) => typed.length >= 2 && candidate.startsWith(typed));
  if (prefixed.length === 1) return prefixed[0];
  const limit = Math.max(2, Math.floor(typed.length / 3));
  let best: { candidate: string; distance: number } | undefined;
  for (const candidate of candidates) {
    const d = distance(typed, candidate);
    if (d <= limit && (best === undefined || d < best.distance)) best = { candidate, distance: d };
  }
  return best?.candidate;
}

/** docs/cli.md: generated from the table (tests/unit/cli-help.test.ts keeps it up to date). */
export function renderMarkdown(): string {
  const sections = COMMAND_NAMES.map((command) => {
    const spec = COMMANDS[command];
    const options = optionsOf(command);
    return [
      `## intercept ${command}`,
      "",
      "```",
      usageLine(command),
      "```",
      "",
      `${capitalised(spec.summary)}.`,
      ...spec.description.flatMap((paragraph) => ["", paragraph]),
      "",
      "| option | what it does |",
      "| --- | --- |",
      ...Object.entries(options).map(([name, option]) => `| \`${optionLabel(name, option)}\` | ${cell(option)} |`),
      ...("examples" in spec ? ["", "```sh", ...examples(spec.examples), "```"] : []),
      "",
    ].join("\n");
  });
  return [
    "# intercept command line",
    "",
    "<!-- Generated from src/commands/table.ts by tests/unit/cli-help.test.ts: edit the table, then run `npm run test:update-golden`. -->",
    "",
    "Every command also answers `--help` (`intercept plan --help`, or `intercept help plan`) with the",
    "same options as here. A mistyped command or option is refused with a suggestion",
    '(`unknown command "aplly": did you mean "apply"?`).',
    "",
    "| command | what it does |",
    "| --- | --- |",
    ...COMMAND_NAMES.map((command) => `| [\`${command}\`](#intercept-${command}) | ${COMMANDS[command].summary} |`),
    "",
    "## Exit codes",
    "",
    "As Terraform's: a bad command line is an error like any other, and 2 never means anything but changes.",
    "",
    "| code | meaning |",
    "| --- | --- |",
    ...EXIT_CODES.map(([code, meaning]) => `| ${code} | ${meaning} |`),
    "",
    "## Approval",
    "",
    "`apply` and `destroy` show the plan, then ask for approval (only `yes` is accepted). Without a",
    "terminal to ask on (CI, a pipe, `</dev/null`) they refuse in one line with exit 1, unless",
    "`--yes` (or `--auto-approve`) is given. Ctrl-C or Ctrl-D at the question cancels: `Apply",
    "cancelled.` (or `Destroy cancelled.`), exit 1, and the kernel is unchanged. A saved plan",
    "(`apply --plan FILE`) was reviewed when it was made, and is applied without a question.",
    "",
    "Without `--netns`, `plan`, `apply` and `destroy` act on the host's own network namespace: they",
    "say so and list its links before the plan.",
    "",
    "## Machine-readable output",
    "",
    "`plan --json`, `status --json` and `validate --json` print one JSON document on stdout. Every",
    'document starts with `formatVersion` (`"MAJOR.MINOR"`, one version for all of them: a new minor',
    "version only adds fields) and `kind`. Under `--json`, an error is a document too, of kind",
    "`error`, with its stable `code` (src/errors.ts) and, for invalid policies, the diagnostics; the",
    "exit code is the same as without `--json`.",
    "",
    "| kind | printed by | schema |",
    "| --- | --- | --- |",
    "| `plan` | `plan --json` | [schemas/plan-output.schema.json](../schemas/plan-output.schema.json) |",
    "| `status` | `status --json` | [schemas/status-output.schema.json](../schemas/status-output.schema.json) |",
    "| `validate` | `validate --json` | [schemas/validate-output.schema.json](../schemas/validate-output.schema.json) |",
    "| `explain` | `explain --json` | [schemas/explain-output.schema.json](../schemas/explain-output.schema.json) |",
    "| `error` | any `--json` command that fails | [schemas/error-output.schema.json](../schemas/error-output.schema.json) |",
    "",
    "The agent's `--log-format json` lines carry `time`, `level` (`info`, `warn` or `error`), `event`",
    "and `message`, then the event's fields.",
    "",
    "## Shell completion",
    "",
    "```sh",
    "source <(intercept completion bash)                                  # bash: in ~/.bashrc",
    'intercept completion zsh > "${fpath[1]}/_intercept"                  # zsh: then restart it',
    "intercept completion fish > ~/.config/fish/completions/intercept.fish # fish",
    "```",
    "",
    ...sections,
  ].join("\n");
}

function cell(option: OptionSpec): string {
  const text = `${option.description}${option.defaultText ? ` (default: \`${option.defaultText}\`)` : ""}`;
  return text.replaceAll("|", "\\|");
}
