/**
 * The command-line table: every command and every option it takes, with the
 * words that describe them. It is the single source of the parser
 * (src/cli.ts hands it to node:util's parseArgs), of `--help` and
 * `intercept help COMMAND`, of docs/cli.md (generated, and tested to be up
 * to date) and of the shell completion scripts. A command or an option
 * exists for users only once it is here.
 */

/** What an option's value is, for help ("--netns NAME") and completions (files, folders, namespaces). */
export type ValueKind = "file" | "dir" | "netns" | "duration" | "address" | "glob" | "choice";

export interface OptionSpec {
  type: "string" | "boolean";
  /** One letter: `-y`. */
  short?: string;
  /** Other long names that mean the same (`--auto-approve` for `--yes`); they are parsed, helped and completed. */
  aliases?: readonly string[];
  multiple?: boolean;
  /** The value's placeholder in help: `--netns NAME`. */
  value?: string;
  kind?: ValueKind;
  /** The values a "choice" option accepts. */
  choices?: readonly string[];
  /** Shown in help as "(default: …)"; parsing leaves an absent option undefined. */
  defaultText?: string;
  description: string;
}

export interface CommandSpec {
  /** One line for the command list. */
  summary: string;
  /** What follows `intercept COMMAND` in the usage line, besides [options]. */
  operands: string;
  /** What positionals it takes: policy paths, at most one folder, or none. */
  positionals: "paths" | "one" | "none";
  /** Paragraphs shown by `intercept help COMMAND` and in docs/cli.md. */
  description: readonly string[];
  options: Readonly<Record<string, OptionSpec>>;
  /** Ways to call it, each with what it does. */
  examples?: readonly (readonly [command: string, what: string])[];
}

const NETNS = {
  netns: {
    type: "string",
    value: "NAME",
    kind: "netns",
    description: "act inside the network namespace NAME (as `ip netns list` shows it); without it, in the host's own",
  },
} as const satisfies Record<string, OptionSpec>;

const OBJECTS = {
  objects: {
    type: "string",
    value: "DIR",
    kind: "dir",
    description:
      "load programs from objects made by `intercept build --out DIR` (a node without clang); a policy whose C changed since is refused",
  },
} as const satisfies Record<string, OptionSpec>;

const CNI_DIRS = {
  "cni-bin-dir": {
    type: "string",
    value: "DIR",
    kind: "dir",
    defaultText: "/opt/cni/bin",
    description: "where the container runtime finds CNI plugins",
  },
  "cni-conf-dir": {
    type: "string",
    value: "DIR",
    kind: "dir",
    defaultText: "/etc/cni/net.d",
    description: "where the container runtime reads CNI network configurations",
  },
} as const satisfies Record<string, OptionSpec>;

const JSON_OUTPUT = {
  json: { type: "boolean", description: "print JSON on stdout (schemas/); errors too, as an object with their code" },
} as const satisfies Record<string, OptionSpec>;

const CONFIRM = {
  yes: {
    type: "boolean",
    short: "y",
    aliases: ["auto-approve"],
    description: "do not ask for approval; without a terminal to ask on, apply and destroy refuse unless given",
  },
} as const satisfies Record<string, OptionSpec>;

const LOCK = {
  "lock-timeout": {
    type: "string",
    value: "DURATION",
    kind: "duration",
    defaultText: "10s",
    description:
      "how long to wait while another intercept process changes the namespace: 10s, 500ms, 2m, or 0 to fail at once; at most 1h",
  },
} as const satisfies Record<string, OptionSpec>;

const WAIT_FOR_AGENT = {
  "wait-for-agent": {
    type: "boolean",
    description:
      "when an agent manages the namespace, wait up to --lock-timeout for it to exit instead of refusing at once",
  },
} as const satisfies Record<string, OptionSpec>;

/** Options every command takes. */
export const GLOBAL_OPTIONS = {
  help: { type: "boolean", short: "h", description: "show this command's help" },
  "no-color": {
    type: "boolean",
    description: "no colour (there is colour only on a terminal, and never with NO_COLOR set)",
  },
} as const satisfies Record<string, OptionSpec>;

const PATHS_NOTE = "PATH is a policy file (.ts, .yaml, .yml) or a folder of them; the default is policies/.";

export const COMMANDS = {
  demo: {
    summary: "see interception work in a sandbox of network namespaces",
    operands: "",
    positionals: "none",
    description: [
      "Needs root. Makes a server and a client network namespace of its own, with a backend, a proxy and a client; applies a one-rule policy in the server's namespace and shows the traffic before, during and after, and the plan it applied. It removes everything when done or interrupted, and never changes the namespace it runs in.",
    ],
    options: {},
  },
  init: {
    summary: "scaffold a policy repository",
    operands: "[DIR]",
    positionals: "one",
    description: [
      "Writes an example policy, tsconfig.json, .gitignore, a CI workflow, a README and generated/ into DIR (default: the current folder).",
    ],
    options: { force: { type: "boolean", description: "replace files that exist" } },
  },
  validate: {
    summary: "check policies: every error of every file at once",
    operands: "[PATH…]",
    positionals: "paths",
    description: [
      PATHS_NOTE,
      "Prints each problem tsc-style with its source line (FILE:LINE:COL), and exits 1 if there is any. A folder without policy files is valid, and said so.",
    ],
    options: { ...JSON_OUTPUT },
    examples: [
      ["intercept validate", "every policy under policies/"],
      ["intercept validate --json policies/web.ts", "the diagnostics as data"],
    ],
  },
  compile: {
    summary: "write the generated C of each policy (generated/POLICY.bpf.c)",
    operands: "[PATH…]",
    positionals: "paths",
    description: [
      PATHS_NOTE,
      "For all of policies/, also removes generated files no policy produces. Commit generated/.",
    ],
    options: {
      check: {
        type: "boolean",
        description: "write nothing; exit 1 when generated/ differs from what the policies produce (for CI)",
      },
    },
  },
  build: {
    summary: "compile, then build BPF objects with clang",
    operands: "[PATH…]",
    positionals: "paths",
    description: [PATHS_NOTE, "Objects are cached by content hash: an unchanged policy never runs clang again."],
    options: {
      out: {
        type: "string",
        value: "DIR",
        kind: "dir",
        description:
          "also write each policy's object and manifest.json to DIR, for nodes without clang (`--objects DIR`)",
      },
    },
    examples: [["intercept build --out objects", "in CI: objects for the nodes"]],
  },
  plan: {
    summary: "show the changes apply would make",
    operands: "[PATH…]",
    positionals: "paths",
    description: [
      PATHS_NOTE,
      "Reads the kernel and changes nothing. Terraform style: one line per change with its reason, then a summary. Without --netns it says first that it acts on the host's own namespace, and lists its links (on stderr).",
    ],
    options: {
      ...NETNS,
      ...OBJECTS,
      ...JSON_OUTPUT,
      "detailed-exitcode": {
        type: "boolean",
        description: "exit 0 when there are no changes, 2 when there are, 1 on an error",
      },
      out: {
        type: "string",
        value: "FILE",
        kind: "file",
        description: "save the plan for `intercept apply --plan FILE`",
      },
    },
    examples: [
      ["intercept plan --netns edge", "what apply would change in namespace edge"],
      ["intercept plan --netns edge --out edge.plan", "save it for review"],
    ],
  },
  apply: {
    summary: "make the kernel match the policies",
    operands: "[PATH… | PLANFILE]",
    positionals: "paths",
    description: [
      PATHS_NOTE,
      "Plans, asks for approval on a terminal, and executes exactly that plan. Without a terminal it refuses unless --yes is given. Without --netns it says first that it acts on the host's own namespace, and lists its links. A saved plan (`--plan FILE`, or a FILE that is one) is applied exactly, without a question (it was reviewed), or refused if anything moved since.",
    ],
    options: {
      ...NETNS,
      ...OBJECTS,
      ...CONFIRM,
      ...LOCK,
      ...WAIT_FOR_AGENT,
      plan: {
        type: "string",
        value: "FILE",
        kind: "file",
        description: "apply this saved plan (from `intercept plan --out FILE`) exactly",
      },
      "allow-empty": { type: "boolean", description: "apply even when no policy is given, removing everything" },
    },
    examples: [
      ["intercept apply --netns edge", "plan, ask, apply"],
      ["intercept apply --plan edge.plan", "apply exactly the reviewed plan"],
    ],
  },
  destroy: {
    summary: "remove everything intercept made in the namespace",
    operands: "",
    positionals: "none",
    description: [
      "Removes intercept's programs, filters, qdiscs and pins, and nothing else. Asks for approval like apply, and like it says when it acts on the host's own namespace.",
    ],
    options: { ...NETNS, ...CONFIRM, ...LOCK, ...WAIT_FOR_AGENT },
  },
  status: {
    summary: "show attached links, programs, rules and counters",
    operands: "[PATH…]",
    positionals: "paths",
    description: [
      PATHS_NOTE,
      "The policies only name the live rules: the kernel is shown even when they are invalid. Also shows any drift an interrupted run left.",
    ],
    options: { ...NETNS, ...OBJECTS, ...JSON_OUTPUT },
  },
  watch: {
    summary: "stream what the datapath does with each connection",
    operands: "[PATH…]",
    positionals: "paths",
    description: [
      PATHS_NOTE,
      "One line per connection a rule decided about: steered, proxy down, TIME_WAIT, rewritten, redirected or exempt (outbound, with the task), and each SO_ORIGINAL_DST a proxy asked. Records are off by default: --enable turns every rule's on while watching, the agent's --flows keeps them on. Runs until SIGINT or SIGTERM.",
    ],
    options: {
      ...NETNS,
      "netns-match": {
        type: "string",
        multiple: true,
        value: "GLOB",
        kind: "glob",
        description: "every namespace under /var/run/netns whose name matches GLOB now (repeatable; not with --netns)",
      },
      policy: { type: "string", multiple: true, value: "NAME", description: "only this policy's records (repeatable)" },
      port: { type: "string", value: "PORT", description: "only connections to PORT, asked for or steered to" },
      verdict: {
        type: "string",
        multiple: true,
        value: "VERDICT",
        kind: "choice",
        choices: ["steered", "proxy-down", "time-wait", "rewritten", "redirected", "exempt", "original-dst"],
        description: "only records of this verdict (repeatable)",
      },
      enable: {
        type: "boolean",
        description: "turn every rule's records on while watching, and back as they were on exit",
      },
      ...OBJECTS,
      json: { type: "boolean", description: "one JSON object per record and line (schemas/flow-output.schema.json)" },
    },
    examples: [
      ["intercept watch --netns edge --enable", "every connection the rules in edge decide about"],
      ["intercept watch --netns-match 'pod-*' --verdict proxy-down --json", "SYNs that found no proxy, as JSON lines"],
    ],
  },
  explain: {
    summary: "say what would happen to a connection now, and why",
    operands: "[PATH…]",
    positionals: "paths",
    description: [
      PATHS_NOTE,
      "Inbound (--to, with --from): the connection's first packet (a SYN, or with --udp a datagram) runs through a side copy of the program attached to each link, with BPF_PROG_TEST_RUN: live counters, TIME_WAIT tries and records are left as they are. Says the verdict, the policy, the rule and its file:line, the target and whether something listens there; the rules that came close and why they did not match; and why a link has no program. A tuple in TIME_WAIT is refused: its SYN would end the TIME_WAIT for real.",
      "Outbound (--cgroup and --uid): what the policies' outbound capture does with a connect() to --to from a task in that cgroup, as that uid: redirected, exempt, or no rule, and why.",
    ],
    options: {
      ...NETNS,
      to: {
        type: "string",
        value: "ADDR:PORT",
        kind: "address",
        description: "the connection's destination ([fd00::1]:8000 for IPv6)",
      },
      from: {
        type: "string",
        value: "ADDR[:PORT]",
        kind: "address",
        description: "the client's address and port (default: 198.18.255.254, or fd00::fffe, port 40000)",
      },
      udp: { type: "boolean", description: "a UDP datagram, not a TCP connection" },
      cgroup: {
        type: "string",
        value: "PATH",
        description: "outbound: the connecting task's cgroup, below the cgroup2 mount",
      },
      uid: { type: "string", value: "N", description: "outbound: the connecting task's uid" },
      ...OBJECTS,
      json: { type: "boolean", description: "print a JSON document (schemas/explain-output.schema.json)" },
    },
    examples: [
      ["intercept explain --netns edge --to 198.18.0.1:8000 --from 198.18.0.2", "what happens to a connection to 8000"],
      [
        "intercept explain --netns edge --to 198.18.0.9:443 --cgroup app.slice --uid 1000",
        "whether an app's connect() is captured",
      ],
    ],
  },
  agent: {
    summary: "keep the kernel matching the policies, as links and files change",
    operands: "[PATH…]",
    positionals: "paths",
    description: [
      PATHS_NOTE,
      "Runs until SIGINT or SIGTERM, then removes what it made (unless --keep). SIGHUP reloads the policies.",
    ],
    options: {
      ...NETNS,
      ...OBJECTS,
      ...LOCK,
      "netns-match": {
        type: "string",
        multiple: true,
        value: "GLOB",
        kind: "glob",
        description:
          "every namespace under /var/run/netns whose name matches GLOB, followed as they come and go (repeatable; not with --netns)",
      },
      keep: { type: "boolean", description: "on exit, leave the datapath as it is (rolling upgrades)" },
      flows: {
        type: "boolean",
        description:
          'switch every rule\'s flow records on, log each one (event "flow") and count them in intercept_flows_total by verdict and reason',
      },
      "log-format": {
        type: "string",
        value: "FORMAT",
        kind: "choice",
        choices: ["text", "json"],
        defaultText: "text",
        description: "one line per event: text, or JSON with time, level, event and message",
      },
      metrics: {
        type: "string",
        value: "HOST:PORT",
        kind: "address",
        description: "serve /metrics (Prometheus) and /healthz there; HOST defaults to 127.0.0.1",
      },
      "resync-interval": {
        type: "string",
        value: "DURATION",
        kind: "duration",
        defaultText: "30s",
        description:
          "how often the policies are read (and the kernel checked) whatever the file events say: at least 1s, or 0 for never",
      },
      cni: {
        type: "boolean",
        description:
          "CNI mode (with --netns-match): load the programs once at node level, write the node table and install the chained CNI plugin, which captures a pod before its first packet",
      },
      ...CNI_DIRS,
      "cni-failure": {
        type: "string",
        value: "POLICY",
        kind: "choice",
        choices: ["closed", "open"],
        defaultText: "closed",
        description:
          "what the plugin does with a pod it cannot capture: closed fails the pod's creation with the CNI error, open lets it start uncaptured and says so",
      },
    },
  },
  cni: {
    summary: "install or remove the chained CNI plugin (the agent's --cni does both itself)",
    operands: "install|uninstall",
    positionals: "one",
    description: [
      "install copies the plugin binary into --cni-bin-dir and appends its entry to the chain of the network configuration in use in --cni-conf-dir (the first in name order). uninstall removes the entry from every configuration, the binary, the node table and the node's programs; filters already attached stay until their pods go or the agent replaces them.",
    ],
    options: {
      ...CNI_DIRS,
      "cni-failure": {
        type: "string",
        value: "POLICY",
        kind: "choice",
        choices: ["closed", "open"],
        defaultText: "closed",
        description: "install: what the plugin does with a pod it cannot capture (closed or open)",
      },
    },
    examples: [["intercept cni uninstall", "on a node, after the agent is gone"]],
  },
  completion: {
    summary: "print a shell completion script",
    operands: "bash|zsh|fish",
    positionals: "one",
    description: ["Prints the script; load it from your shell's start-up file (see docs/cli.md)."],
    options: {},
    examples: [["source <(intercept completion bash)", "in ~/.bashrc"]],
  },
  version: {
    summary: "print intercept's version",
    operands: "",
    positionals: "none",
    description: ["Also `intercept --version` and `intercept -v`."],
    options: {},
  },
  help: {
    summary: "show the help of a command",
    operands: "[COMMAND]",
    positionals: "one",
    description: ["Also `intercept COMMAND --help`."],
    options: {},
  },
} as const satisfies Record<string, CommandSpec>;

export type Command = keyof typeof COMMANDS;

export const COMMAND_NAMES = Object.keys(COMMANDS) as Command[];

export function isCommand(name: string): name is Command {
  return Object.hasOwn(COMMANDS, name);
}

/** A command's own options and the global ones, as help lists them and the parser accepts them. */
export function optionsOf(command: Command): Readonly<Record<string, OptionSpec>> {
  return { ...COMMANDS[command].options, ...GLOBAL_OPTIONS };
}

/** Every long name a command accepts: its options' names and aliases. */
export function longNames(command: Command): string[] {
  return Object.entries(optionsOf(command)).flatMap(([name, spec]) => [name, ...(spec.aliases ?? [])]);
}

/** "-y, --yes, --auto-approve DURATION": an option as help and docs show it. */
export function optionLabel(name: string, spec: OptionSpec): string {
  const names = [
    ...(spec.short ? [`-${spec.short}`] : []),
    `--${name}`,
    ...(spec.aliases ?? []).map((alias) => `--${alias}`),
  ];
  return `${names.join(", ")}${spec.value ? ` ${spec.value}` : ""}`;
}

/** The exit codes every command shares, as help and docs/cli.md state them. */
export const EXIT_CODES: readonly (readonly [code: number, meaning: string])[] = [
  [0, "success (for `plan --detailed-exitcode`: no changes)"],
  [1, "an error: a bad command line, invalid policies, a refused or failed apply, a cancelled prompt"],
  [2, "only with `plan --detailed-exitcode`: the plan has changes"],
];
