/**
 * The command line's manners, none needing a kernel: help per command that
 * lists exactly what the parser accepts, exit codes, suggestions, version,
 * completions, progress, and docs/cli.md generated from the same table.
 */
import "../support/temporary-cache.js";
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { mock, test } from "node:test";
import { execa } from "execa";
import { intercept } from "../../lab/network.js";
import { commandOptions, parseCommandLine } from "../../src/cli.js";
import { UsageError } from "../../src/errors.js";
import { completionScript } from "../../src/commands/completion.js";
import { closestMatch, renderMarkdown } from "../../src/commands/help.js";
import { startProgress } from "../../src/commands/progress.js";
import { COMMAND_NAMES, COMMANDS, longNames, optionsOf, type Command } from "../../src/commands/table.js";
import { UPDATE_GOLDEN } from "../support/golden.js";

/** The long options a help text lists in its Options section (aliases included). */
function listedOptions(help: string): string[] {
  const section = help.split("\nOptions:\n")[1]!.split("\n\n")[0]!;
  return section
    .split("\n")
    .filter((line) => /^ {2}-/.test(line))
    .flatMap((line) => [...line.split(/ {2,}/)[1]!.matchAll(/--([\w-]+)/g)].map((m) => m[1]!));
}

/** A value the parser takes for @name (checked only after --help would have answered). */
function sample(command: Command, name: string): string[] {
  return commandOptions(command)[name]?.type === "string" ? [`--${name}`, "x"] : [`--${name}`];
}

test("every command's --help, and `intercept help COMMAND`, list exactly the options its parser accepts", async () => {
  await Promise.all(
    COMMAND_NAMES.map(async (command) => {
      const help = await intercept(command, "--help");
      assert.equal(help.exitCode, 0, `${command} --help: ${help.stderr}`);
      assert.match(help.stdout, new RegExp(`^Usage: intercept ${command} `));
      assert.equal((await intercept("help", command)).stdout, help.stdout, `help ${command}`);
      const listed = listedOptions(help.stdout).sort();
      assert.deepEqual(listed, longNames(command).sort(), `${command}: help lists the table's options`);
      assert.deepEqual(
        listed,
        Object.keys(commandOptions(command)).sort(),
        `${command}: help lists the parser's options`,
      );
      for (const name of listed)
        assert.doesNotThrow(() => parseCommandLine(command, sample(command, name)), `${command} accepts --${name}`);
      assert.throws(
        () => parseCommandLine(command, ["--not-an-option"]),
        UsageError,
        `${command} refuses an option it does not list`,
      );
    }),
  );
  assert.ok(
    listedOptions((await intercept("status", "--help")).stdout).includes("objects"),
    "status --help lists --objects",
  );
});

test("exit codes: a bad command line is 1 for every command, as Terraform's; 2 is never a usage error", async () => {
  await Promise.all(
    COMMAND_NAMES.map(async (command) => {
      const bad = await intercept(command, "--objcts", "x");
      assert.equal(bad.exitCode, 1, `${command} --objcts: ${bad.stderr}`);
      const help = command === "help" ? "intercept --help" : `intercept ${command} --help`;
      assert.equal(bad.stderr.split("\n")[1], `Run \`${help}\` for usage.`, "one line, and where to find the usage");
      assert.match(bad.stderr, new RegExp(`^intercept: ${command}: unknown option --objcts`));
    }),
  );
  const detailed = await intercept("plan", "--detailed-exitcode", "--objcts", "objects");
  assert.equal(detailed.exitCode, 1, "the scaffolded workflow must not read a typo as changes");
  assert.match(detailed.stderr, /unknown option --objcts: did you mean --objects\?/);
  assert.equal((await intercept()).exitCode, 1, "no command");
  assert.equal((await intercept("destroy", "policies")).exitCode, 1, "destroy takes no PATH");
  assert.equal((await intercept("apply", "--plan")).exitCode, 1, "an option without its value");
  assert.equal((await intercept("apply", "--lock-timeout", "soon")).exitCode, 1, "a bad value");
  assert.equal((await intercept("help", "aplly")).exitCode, 1);
  assert.equal((await intercept("--help")).exitCode, 0);
  assert.equal((await intercept("help")).exitCode, 0);
});

test("did you mean: commands and options, by edit distance or a unique prefix", async () => {
  const command = await intercept("aplly", "--netns", "edge");
  assert.equal(
    command.stderr,
    'intercept: unknown command "aplly": did you mean "apply"?\nRun `intercept --help` for usage.',
  );
  assert.match(
    (await intercept("plan", "--nets", "edge")).stderr,
    /^intercept: plan: unknown option --nets: did you mean --netns\?$/m,
  );
  assert.match((await intercept("apply", "--auto-aprove")).stderr, /did you mean --auto-approve\?/);
  assert.match((await intercept("stat")).stderr, /did you mean "status"\?/);
  assert.match((await intercept("--verison")).stderr, /did you mean --version\?/);
  assert.match(
    (await intercept("frobnicate")).stderr,
    /^intercept: unknown command "frobnicate"$/m,
    "no suggestion when nothing is close",
  );
  assert.equal(closestMatch("valdiate", COMMAND_NAMES), "validate");
  assert.equal(closestMatch("x", COMMAND_NAMES), undefined);
  assert.equal(closestMatch("lock-timout", longNames("apply")), "lock-timeout");
});

test("version: `intercept version`, --version and -v print the package's version", async () => {
  const { version } = JSON.parse(await readFile("package.json", "utf8")) as { version: string };
  for (const args of [["version"], ["--version"], ["-v"]]) {
    const result = await intercept(...args);
    assert.deepEqual([result.exitCode, result.stdout], [0, version], args.join(" "));
  }
});

test("--no-color, --yes/--auto-approve: accepted the same way wherever they apply", () => {
  for (const command of COMMAND_NAMES) assert.ok("no-color" in commandOptions(command), `${command} takes --no-color`);
  for (const command of ["apply", "destroy"] as const) {
    assert.deepEqual(optionsOf(command).yes?.aliases, ["auto-approve"]);
    assert.equal(optionsOf(command).yes?.short, "y");
    assert.deepEqual(parseCommandLine(command, ["--auto-approve"]).values.yes, true, "the alias is folded into --yes");
    assert.deepEqual(parseCommandLine(command, ["-y"]).values.yes, true);
  }
});

test("completion: bash completes commands, options and their values; zsh and fish know every option", async () => {
  const script = (await intercept("completion", "bash")).stdout;
  const complete = async (...words: string[]) => {
    const program = `${script}\nCOMP_WORDS=(${words.map((word) => `'${word}'`).join(" ")}); COMP_CWORD=${words.length - 1}; _intercept; printf '%s\\n' "\${COMPREPLY[@]}"`;
    return (await execa("bash", ["-c", program])).stdout.split("\n").filter(Boolean).sort();
  };
  assert.deepEqual(await complete("intercept", "pl"), ["plan"]);
  assert.deepEqual(await complete("intercept", "plan", "--ne"), ["--netns"]);
  assert.deepEqual(await complete("intercept", "apply", "--auto"), ["--auto-approve"]);
  assert.deepEqual(await complete("intercept", "agent", "--log-format", ""), ["json", "text"]);
  assert.deepEqual(await complete("intercept", "completion", "z"), ["zsh"]);
  assert.ok((await complete("intercept", "status", "--")).includes("--objects"));
  assert.equal((await intercept("completion", "tcsh")).exitCode, 1);
  assert.equal((await intercept("completion", "bash", "zsh")).exitCode, 1);
  for (const shell of ["zsh", "fish"] as const) {
    const text = completionScript(shell);
    assert.equal((await intercept("completion", shell)).stdout, text.trimEnd());
    for (const command of COMMAND_NAMES) {
      assert.match(text, new RegExp(`\\b${command}\\b`), `${shell} knows ${command}`);
      for (const name of longNames(command)) {
        assert.ok(
          text.includes(shell === "fish" ? `__fish_seen_subcommand_from ${command}'` : `--${name}[`),
          `${shell}: ${command} --${name}`,
        );
        if (shell === "fish")
          assert.match(
            text,
            new RegExp(`seen_subcommand_from ${command}' [^\\n]*-l ${name}\\b`),
            `fish: ${command} --${name}`,
          );
      }
    }
  }
});

test("progress: said on a terminal once a step takes a second, never on a pipe, never for a quick step", () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    const written: string[] = [];
    const terminal = { isTTY: true, write: (text: string) => written.push(text) };
    const quick = startProgress("building quick with clang", terminal);
    mock.timers.tick(999);
    quick.done();
    assert.deepEqual(written, []);
    const slow = startProgress("building web with clang", terminal);
    mock.timers.tick(1000);
    assert.deepEqual(written, ["building web with clang…\n"]);
    slow.done();
    assert.match(written[1]!, /^building web with clang: done in \d+\.\d s\n$/);
    const piped: string[] = [];
    const pipe = startProgress("building web with clang", { isTTY: false, write: (text: string) => piped.push(text) });
    mock.timers.tick(5000);
    pipe.done();
    assert.deepEqual(piped, []);
  } finally {
    mock.timers.reset();
  }
});

test("docs/cli.md is generated from the command table (npm run test:update-golden rewrites it)", async () => {
  const rendered = renderMarkdown();
  if (UPDATE_GOLDEN) await writeFile("docs/cli.md", rendered);
  assert.equal(
    await readFile("docs/cli.md", "utf8"),
    rendered,
    "docs/cli.md differs from the table: run `npm run test:update-golden`",
  );
  for (const command of COMMAND_NAMES) {
    assert.ok(rendered.includes(`## intercept ${command}\n`), command);
    for (const name of Object.keys(COMMANDS[command].options))
      assert.ok(rendered.includes(`--${name}`), `${command} --${name}`);
  }
});
