/**
 * Approval, as Terraform asks for it, against the real kernel in a lab
 * namespace this test creates and removes: the question needs a plan with
 * changes, and a plan needs the kernel. Without a terminal, apply and
 * destroy refuse unless --yes; at the question (a pseudo-terminal driven by
 * Python's pty module), Ctrl-C and Ctrl-D cancel, and only "yes" applies.
 * Without --netns, the namespace acted on is said, with its links.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { execa } from "execa";
import { intercept, Lab } from "../../lab/network.js";

const POLICY = "policies/demo.ts";
const REFUSAL = (verb: string) =>
  `intercept: ${verb}: no terminal to ask for approval on: pass --yes (or --auto-approve) to ${verb} without a question`;

/**
 * Runs intercept on a pseudo-terminal, waits for the approval question,
 * types @keys, and returns its exit code and everything it printed. The
 * deadline only bounds a hang: the steps wait on the question and on EOF.
 */
const DRIVER = String.raw`
import json, os, pty, select, sys, time
keys, argv = sys.argv[1].encode().decode("unicode_escape").encode(), sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)
output, typed, deadline = b"", False, time.time() + 120
while time.time() < deadline:
    ready, _, _ = select.select([fd], [], [], 1)
    if not ready:
        continue
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    output += chunk
    if not typed and b"will be accepted: " in output:
        os.write(fd, keys)
        typed = True
_, status = os.waitpid(pid, 0)
print(json.dumps({"exitCode": os.waitstatus_to_exitcode(status), "output": output.decode(errors="replace"), "asked": typed}))
`;

async function onTerminal(
  keys: string,
  ...args: string[]
): Promise<{ exitCode: number; output: string; asked: boolean }> {
  const result = await execa("/usr/bin/python3", ["-c", DRIVER, keys, "node", "bin/intercept.js", ...args]);
  return JSON.parse(result.stdout);
}

let lab: Lab;

before(async () => {
  lab = await Lab.create();
});

after(async () => {
  await lab?.destroy();
  const namespaces = (await execa("ip", ["netns", "list"])).stdout;
  assert.ok(!namespaces.includes(lab.id), "the lab's namespaces are gone");
});

async function loaded(): Promise<number> {
  const status = await intercept("status", "--netns", lab.serverNs, "--json");
  assert.equal(status.exitCode, 0, status.stderr);
  return JSON.parse(status.stdout).programs.length;
}

describe("approval", { concurrency: false }, () => {
  test("without a terminal, apply and destroy show the plan and refuse without --yes: one line, exit 1, nothing changed", async () => {
    const apply = await intercept("apply", POLICY, "--netns", lab.serverNs, "--no-color");
    assert.equal(apply.exitCode, 1);
    assert.match(apply.stdout, /^Plan: 2 to add, 0 to change, 0 to destroy\.$/m, "the plan it would have applied");
    assert.equal(apply.stderr, REFUSAL("apply"));
    assert.equal(await loaded(), 0);

    const approved = await intercept("apply", POLICY, "--netns", lab.serverNs, "--auto-approve");
    assert.equal(approved.exitCode, 0, approved.stderr);
    assert.match(approved.stdout, /Apply complete! Resources: 2 added, 0 changed, 0 destroyed\.\n?$/);
    assert.equal(await loaded(), 1);

    const again = await intercept("apply", POLICY, "--netns", lab.serverNs);
    assert.equal(again.exitCode, 0, "no changes: nothing to approve");

    const destroy = await intercept("destroy", "--netns", lab.serverNs);
    assert.equal(destroy.exitCode, 1);
    assert.equal(destroy.stderr, REFUSAL("destroy"));
    assert.equal(await loaded(), 1);

    const destroyed = await intercept("destroy", "--netns", lab.serverNs, "-y");
    assert.equal(destroyed.exitCode, 0, destroyed.stderr);
    assert.match(destroyed.stdout, /\nDestroy complete! Resources: \d+ destroyed\.$/);
    assert.doesNotMatch(destroyed.stdout, /Apply complete/);
    assert.equal(await loaded(), 0);
  });

  test('Ctrl-C, Ctrl-D or anything but yes at the question: "Apply cancelled.", exit 1, nothing changed', async () => {
    for (const [keys, what] of [
      ["\\x03", "Ctrl-C"],
      ["\\x04", "Ctrl-D"],
      ["no\\r", "no"],
    ] as const) {
      const result = await onTerminal(keys, "apply", POLICY, "--netns", lab.serverNs);
      assert.ok(result.asked, `${what}: the question was asked: ${result.output}`);
      assert.equal(result.exitCode, 1, `${what}: ${result.output}`);
      assert.match(result.output, /\r?\nApply cancelled\.\r?\n$/, what);
      assert.doesNotMatch(result.output, /internal error|Aborted/, what);
      assert.equal(await loaded(), 0, `${what}: nothing changed`);
    }
    const approved = await onTerminal("yes\\r", "apply", POLICY, "--netns", lab.serverNs);
    assert.equal(approved.exitCode, 0, approved.output);
    assert.match(approved.output, /Apply complete!/);
    assert.equal(await loaded(), 1);

    const cancelled = await onTerminal("\\x03", "destroy", "--netns", lab.serverNs);
    assert.equal(cancelled.exitCode, 1, cancelled.output);
    assert.match(cancelled.output, /Do you really want to destroy everything intercept made here\?/);
    assert.match(cancelled.output, /\r?\nDestroy cancelled\.\r?\n$/);
    assert.equal(await loaded(), 1);
    const destroyed = await onTerminal("yes\\r", "destroy", "--netns", lab.serverNs);
    assert.equal(destroyed.exitCode, 0, destroyed.output);
    assert.match(destroyed.output, /Destroy complete!/);
    assert.equal(await loaded(), 0);
  });

  test("without --netns, the namespace intercept runs in is said, with its links, before the plan", async () => {
    // Run inside the lab's namespace, so that "no --netns" means it and never this machine's own.
    const inside = await execa(
      "nsenter",
      [`--net=/var/run/netns/${lab.serverNs}`, "node", "bin/intercept.js", "plan", POLICY, "--json"],
      { reject: false },
    );
    assert.equal(inside.exitCode, 0, inside.stderr);
    assert.equal(
      inside.stderr,
      `No --netns: acting on the host's own network namespace, 2 links: lo, ${lab.serverLink}.`,
    );
    assert.equal(JSON.parse(inside.stdout).kind, "plan", "stdout stays the plan");
    const named = await intercept("plan", POLICY, "--netns", lab.serverNs);
    assert.equal(named.stderr, "", "with --netns, nothing to say");
  });
});
