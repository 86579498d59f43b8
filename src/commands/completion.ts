import { UsageError } from "../errors.js";
import { closestMatch } from "./help.js";
import { COMMAND_NAMES, COMMANDS, optionsOf, type Command, type OptionSpec } from "./table.js";

export const SHELLS = ["bash", "zsh", "fish"] as const;
type Shell = (typeof SHELLS)[number];

/** Where `ip netns` keeps namespace names: what --netns completes to. */
const NETNS_LIST = "ls /var/run/netns 2>/dev/null";

/** `intercept completion bash|zsh|fish`: the script, generated from the command table. */
export function completionCommand(positionals: string[]): number {
  const shell = positionals[0];
  if (positionals.length > 1)
    throw new UsageError(`completion takes one shell, got ${positionals.length}: ${positionals.join(" ")}`);
  if (shell === undefined || !(SHELLS as readonly string[]).includes(shell)) {
    const hint = shell === undefined ? undefined : closestMatch(shell, SHELLS);
    throw new UsageError(
      `completion needs a shell: ${SHELLS.join(", ")}${shell === undefined ? "" : ` (got "${shell}"${hint ? `: did you mean "${hint}"?` : ""})`}`,
    );
  }
  process.stdout.write(completionScript(shell as Shell));
  return 0;
}

export function completionScript(shell: Shell): string {
  return { bash: bashScript, zsh: zshScript, fish: fishScript }[shell]();
}

/** Every long and short name of an option, as typed. */
function flagsOf(name: string, spec: OptionSpec): string[] {
  return [`--${name}`, ...(spec.aliases ?? []).map((alias) => `--${alias}`), ...(spec.short ? [`-${spec.short}`] : [])];
}

function commandOptions(command: Command): [string, OptionSpec][] {
  return Object.entries(optionsOf(command));
}

function bashValue(spec: OptionSpec): string {
  switch (spec.kind) {
    case "file":
      return 'COMPREPLY=($(compgen -f -- "$cur"))';
    case "dir":
      return 'COMPREPLY=($(compgen -d -- "$cur"))';
    case "netns":
      return `COMPREPLY=($(compgen -W "$(${NETNS_LIST})" -- "$cur"))`;
    case "choice":
      return `COMPREPLY=($(compgen -W "${(spec.choices ?? []).join(" ")}" -- "$cur"))`;
    default:
      return "COMPREPLY=()";
  }
}

function bashPositional(command: Command): string {
  if (command === "completion") return `COMPREPLY=($(compgen -W "${SHELLS.join(" ")}" -- "$cur"))`;
  if (command === "help") return `COMPREPLY=($(compgen -W "${COMMAND_NAMES.join(" ")}" -- "$cur"))`;
  if (command === "init") return 'COMPREPLY=($(compgen -d -- "$cur"))';
  return COMMANDS[command].positionals === "paths" ? 'COMPREPLY=($(compgen -f -- "$cur"))' : "COMPREPLY=()";
}

function bashScript(): string {
  const valueCases = COMMAND_NAMES.flatMap((command) =>
    commandOptions(command)
      .filter(([, spec]) => spec.type === "string")
      .map(
        ([name, spec]) =>
          `    "${command} ${flagsOf(name, spec).join(`"|"${command} `)}") ${bashValue(spec)}; return ;;`,
      ),
  );
  const commandCases = COMMAND_NAMES.map((command) => {
    const flags = commandOptions(command)
      .flatMap(([name, spec]) => flagsOf(name, spec))
      .join(" ");
    return `    ${command}) if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W "${flags}" -- "$cur")); else ${bashPositional(command)}; fi ;;`;
  });
  return [
    "# intercept completion for bash: source <(intercept completion bash)",
    "_intercept() {",
    '  local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" command="" i',
    "  for ((i = 1; i < COMP_CWORD; i++)); do",
    '    case "${COMP_WORDS[i]}" in -*) ;; *) command="${COMP_WORDS[i]}"; break ;; esac',
    "  done",
    '  if [[ -z "$command" ]]; then',
    `    COMPREPLY=($(compgen -W "${COMMAND_NAMES.join(" ")} --help --version --no-color" -- "$cur"))`,
    "    return",
    "  fi",
    '  case "$command $prev" in',
    ...valueCases,
    "  esac",
    '  case "$command" in',
    ...commandCases,
    "  esac",
    "}",
    "complete -F _intercept intercept",
    "",
  ].join("\n");
}

/** Text inside a zsh _arguments spec: its brackets, colons and quotes escaped. */
function zshText(text: string): string {
  return text.replace(/[[\]:\\]/g, (c) => `\\${c}`).replaceAll("'", "'\\''");
}

function zshAction(spec: OptionSpec): string {
  switch (spec.kind) {
    case "file":
      return "_files";
    case "dir":
      return "_files -/";
    case "netns":
      return "_intercept_netns";
    case "choice":
      return `(${(spec.choices ?? []).join(" ")})`;
    default:
      return " ";
  }
}

function zshPositional(command: Command): string[] {
  if (command === "completion") return [`'1:shell:(${SHELLS.join(" ")})'`];
  if (command === "help") return [`'1:command:(${COMMAND_NAMES.join(" ")})'`];
  if (command === "init") return ["'1:folder:_files -/'"];
  return COMMANDS[command].positionals === "paths" ? ["'*:policy file or folder:_files'"] : [];
}

function zshScript(): string {
  const cases = COMMAND_NAMES.map((command) => {
    const specs = commandOptions(command).flatMap(([name, spec]) =>
      flagsOf(name, spec).map((flag) => {
        const head = `${spec.multiple ? "*" : ""}${flag}[${zshText(spec.description)}]`;
        return spec.type === "string"
          ? `'${head}:${zshText(spec.value ?? "VALUE")}:${zshText(zshAction(spec))}'`
          : `'${head}'`;
      }),
    );
    return [
      `    ${command})`,
      `      _arguments -s ${[...specs, ...zshPositional(command)].join(" \\\n        ")} ;;`,
    ].join("\n");
  });
  return [
    "#compdef intercept",
    '# intercept completion for zsh: intercept completion zsh > "${fpath[1]}/_intercept"',
    "_intercept_netns() {",
    "  local -a names",
    `  names=(\${(f)"$(${NETNS_LIST})"})`,
    "  compadd -a names",
    "}",
    "_intercept() {",
    "  local -a commands",
    `  commands=(${COMMAND_NAMES.map((command) => `'${command}:${zshText(COMMANDS[command].summary)}'`).join(" ")})`,
    "  if (( CURRENT == 2 )); then",
    "    _describe command commands",
    "    return",
    "  fi",
    "  local command=${words[2]}",
    "  shift words",
    "  (( CURRENT-- ))",
    "  case $command in",
    ...cases,
    "  esac",
    "}",
    '_intercept "$@"',
    "",
  ].join("\n");
}

function fishText(text: string): string {
  return `'${text.replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`;
}

function fishValue(spec: OptionSpec): string {
  switch (spec.kind) {
    case "file":
    case "dir":
      return "-r -F";
    case "netns":
      return `-x -a '(${NETNS_LIST})'`;
    case "choice":
      return `-x -a ${fishText((spec.choices ?? []).join(" "))}`;
    default:
      return "-x";
  }
}

function fishScript(): string {
  const lines = [
    "# intercept completion for fish: intercept completion fish > ~/.config/fish/completions/intercept.fish",
    "complete -c intercept -f",
    ...COMMAND_NAMES.map(
      (command) =>
        `complete -c intercept -n __fish_use_subcommand -a ${command} -d ${fishText(COMMANDS[command].summary)}`,
    ),
  ];
  for (const command of COMMAND_NAMES) {
    const when = `-n '__fish_seen_subcommand_from ${command}'`;
    for (const [name, spec] of commandOptions(command)) {
      const names = [
        `-l ${name}`,
        ...(spec.aliases ?? []).map((alias) => `-l ${alias}`),
        ...(spec.short ? [`-s ${spec.short}`] : []),
      ].join(" ");
      lines.push(
        `complete -c intercept ${when} ${names}${spec.type === "string" ? ` ${fishValue(spec)}` : ""} -d ${fishText(spec.description)}`,
      );
    }
    if (command === "completion") lines.push(`complete -c intercept ${when} -a ${fishText(SHELLS.join(" "))}`);
    else if (command === "help") lines.push(`complete -c intercept ${when} -a ${fishText(COMMAND_NAMES.join(" "))}`);
    else if (COMMANDS[command].positionals !== "none") lines.push(`complete -c intercept ${when} -F`);
  }
  return `${lines.join("\n")}\n`;
}
