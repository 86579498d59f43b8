/**
 * `intercept demo`, README's first command: it shows the proxy's header
 * through port 8000 only while the policy is applied, prints the plan it
 * applied, and leaves nothing behind (no namespace, pin, lock file or
 * process), also when it is stopped half-way by SIGINT or SIGTERM. Where the
 * demo is, the test learns from its output, never from a sleep.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { execa, type ResultPromise } from "execa";

const CLI = fileURLToPath(new URL("../../../bin/intercept.js", import.meta.url));
const LOCK_DIR = "/run/intercept/locks";

/** What the demo says it made, read from its first lines. */
interface Made {
  server: string;
  client: string;
  id: string;
  pins: string;
}

function madeBy(output: string): Made {
  const [, server, id] = /^ {2}((icd[0-9a-f]{6})-server) /m.exec(output) ?? [];
  const [, client] = /^ {2}(icd[0-9a-f]{6}-client) /m.exec(output) ?? [];
  const [, pins] = /^ {2}pins under (\/sys\/fs\/bpf\/intercept\/ns\d+)$/m.exec(output) ?? [];
  assert.ok(server && client && id && pins, `the demo names what it made:\n${output}`);
  return { server, client, id, pins };
}

/** Nothing of @made is left: namespaces, pins, the lock file, or a process carrying its id. */
async function assertNothingLeft(made: Made): Promise<void> {
  const namespaces = (await execa("ip", ["netns", "list"])).stdout.split("\n").map((line) => line.split(" ")[0]);
  assert.deepEqual(
    namespaces.filter((name) => name === made.server || name === made.client),
    [],
    "both namespaces removed",
  );
  assert.equal(existsSync(made.pins), false, `${made.pins} removed`);
  assert.equal(
    existsSync(path.join(LOCK_DIR, `${path.basename(made.pins)}.lock`)),
    false,
    "the namespace's lock file removed",
  );
  assert.deepEqual(await processesMentioning(made.id), [], "no process of the sandbox left");
}

/** The command lines of running processes that mention @id (the demo passes its id to what it starts). */
async function processesMentioning(id: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of (await readdir("/proc")).filter((entry) => /^\d+$/.test(entry))) {
    // A process that exits while we read is simply not running any more.
    const commandLine = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (commandLine.includes(id)) found.push(commandLine.replaceAll("\0", " "));
  }
  return found;
}

/** Resolves with the output so far once it matches @pattern; rejects if the demo ends first. */
function outputReaching(child: ResultPromise, pattern: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      seen += chunk.toString();
      if (pattern.test(seen)) resolve(seen);
    });
    void child.then((result) =>
      reject(
        new Error(`the demo ended (exit ${result.exitCode}) before ${pattern}:\n${seen}\n${String(result.stderr)}`),
      ),
    );
  });
}

test("intercept demo: the header only while applied, the plan it applied, exit 0, and nothing left", async () => {
  const demo = await execa("node", [CLI, "demo"], { reject: false, stdin: "ignore" });
  assert.equal(demo.exitCode, 0, `${demo.stdout}\n${demo.stderr}`);
  const made = madeBy(demo.stdout);
  const stages = demo.stdout.split(/^=== /m);
  const stage = (prefix: string) =>
    stages.find((text) => text.startsWith(prefix)) ?? assert.fail(`no stage ${prefix}:\n${demo.stdout}`);
  assert.match(stage("1. before"), /^HTTP\/1\.1 200 OK$/m);
  assert.doesNotMatch(stage("1. before"), /^Server: intercept$/m);
  assert.match(stage("2. intercept apply"), /\+ program\.demo +create: new policy, 1 rule/);
  assert.match(stage("2. intercept apply"), /^Plan: 2 to add, 0 to change, 0 to destroy\.$/m);
  assert.match(stage("3. with intercept applied"), /^Server: intercept$/m);
  assert.match(stage("3. with intercept applied"), /^X-Original-Port: 8000$/m);
  assert.match(stage("3. with intercept applied"), /^Hi$/m);
  assert.match(stage("5. after destroy"), /^HTTP\/1\.1 200 OK$/m);
  assert.doesNotMatch(stage("5. after destroy"), /^Server: intercept$/m);
  assert.match(
    demo.stdout,
    /^=== OK: port 8000 was answered through the proxy \("Server: intercept"\) only while intercept was applied/m,
  );
  assert.match(demo.stdout, new RegExp(`^Removed ${made.server}, ${made.client} and their pins\\.$`, "m"));
  await assertNothingLeft(made);
});

for (const { signal, at, when, group, code } of [
  // Ctrl-C at a terminal, which signals the whole foreground process group (the demo and what it
  // started), while the policy is applied: pins, filters, servers and a request all exist.
  {
    signal: "SIGINT",
    at: /^=== 3\. /m,
    when: "(Ctrl-C: its process group) while the policy is applied",
    group: true,
    code: 130,
  },
  // kill or a service manager, the demo alone, in the middle of apply (clang, loading).
  { signal: "SIGTERM", at: /^=== 2\. intercept apply /m, when: "during apply", group: false, code: 143 },
] as const) {
  test(`intercept demo stopped by ${signal} ${when} removes everything and exits ${code}`, async () => {
    // detached: a process group of its own, as a shell gives a command it runs.
    const child = execa("node", [CLI, "demo"], { reject: false, stdin: "ignore", detached: true });
    let made: Made | undefined;
    try {
      made = madeBy(await outputReaching(child, at));
      assert.ok(existsSync(`/var/run/netns/${made.server}`), "the sandbox exists while the demo runs");
      // Its veth pair was made inside its namespaces: no link of its id in the test's own namespace.
      assert.doesNotMatch((await execa("ip", ["-o", "link", "show"])).stdout, new RegExp(made.id));
      if (group) process.kill(-child.pid!, signal);
      else child.kill(signal);
      const result = await child;
      assert.equal(result.exitCode, code, `${result.stdout}\n${result.stderr}`);
      assert.match(
        String(result.stderr),
        new RegExp(
          `${signal} received: removing the sandbox…\\nRemoved ${made.server}, ${made.client} and their pins\\. Demo cancelled\\.`,
        ),
      );
      await assertNothingLeft(made);
    } finally {
      child.kill("SIGKILL");
      await child;
      // Only if the demo failed to: its own names, never anything else.
      if (made) {
        for (const ns of [made.server, made.client]) await execa("ip", ["netns", "del", ns], { reject: false });
        await rm(made.pins, { recursive: true, force: true });
      }
    }
  });
}

test("without root, or without a tool, the demo says what it needs in one line and makes nothing", async () => {
  const asNobody = await execa(
    "setpriv",
    ["--reuid=nobody", "--regid=nogroup", "--clear-groups", process.execPath, CLI, "demo"],
    { reject: false, stdin: "ignore" },
  );
  assert.equal(asNobody.exitCode, 1);
  assert.equal(
    String(asNobody.stderr),
    "intercept: intercept demo needs root (sudo npx --no-install intercept demo): it builds network namespaces and loads BPF programs into them",
  );
  // A PATH with iproute2's and util-linux's tools but neither bpftool nor clang.
  const bin = await mkdtemp(path.join(tmpdir(), "intercept-demo-path-"));
  try {
    for (const tool of ["ip", "tc", "nsenter", "flock"]) {
      const { stdout } = await execa("sh", ["-c", `command -v ${tool}`]);
      await symlink(stdout.trim(), path.join(bin, tool));
    }
    const withoutTools = await execa(process.execPath, [CLI, "demo"], {
      reject: false,
      stdin: "ignore",
      env: { PATH: bin },
    });
    assert.equal(withoutTools.exitCode, 1);
    assert.equal(
      String(withoutTools.stderr),
      "intercept: intercept demo needs bpftool and clang installed: it builds network namespaces and loads BPF programs into them",
    );
  } finally {
    await rm(bin, { recursive: true, force: true });
  }
});
