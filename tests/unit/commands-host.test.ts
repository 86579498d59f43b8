/**
 * plan, apply, destroy and status as the CLI runs them, on the fake Host:
 * no root, no kernel. The same CommandContext src/cli.ts assembles from
 * KernelHost, with a FakeHost and captured output instead. What is shown:
 * plan's output and --detailed-exitcode; apply then plan is empty; destroy
 * leaves the fake kernel as it was; status shows the drift plan repairs;
 * lock contention (refused or waited for, naming the holder; an agent's
 * lock refused); a failure injected at every step of an apply, and at each
 * step taken from the host, leaves the kernel as it was, with one error of
 * a stable code; an interrupt rolls back; a saved plan whose kernel moved
 * is refused naming what moved. Every wait is on output the command
 * writes, never on a guessed time.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { applyCommand, type ApplyOptions } from "../../src/commands/apply.js";
import type { CommandContext } from "../../src/commands/context.js";
import { destroyCommand } from "../../src/commands/destroy.js";
import { errorDocument } from "../../src/commands/output.js";
import { planCommand, type PlanOptions } from "../../src/commands/plan.js";
import { statusCommand } from "../../src/commands/status.js";
import { InterceptError } from "../../src/errors.js";
import { AGENT_LOCK_HOLDER } from "../../src/model/lock-holder.js";
import { programBuilder } from "../../src/toolchain/index.js";
import { FakeHost, type HostedDatapath, type HostStep } from "../support/fake-host.js";

const scratch = await mkdtemp(path.join(tmpdir(), "intercept-commands-host-"));
after(() => rm(scratch, { recursive: true, force: true }));

const WEB = "interceptors:\n  - { originalPort: 8000, port: 9000 }\n";
const WEB_TWO_RULES = "interceptors:\n  - { originalPort: 8000, port: 9000 }\n  - { originalPort: 8443, port: 9443 }\n";
const DB = "interceptors:\n  - { originalPort: 5432, port: 15432 }\n";
const OUTBOUND = `outbound:
  cgroups: ["app.slice"]
  exempt: { uids: [1337] }
  rules: [{ originalPort: 5432, port: 15001 }]
`;

/** A folder of policy files (name → YAML text). */
async function policies(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(path.join(scratch, "policies-"));
  for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, `${name}.yaml`), text);
  return dir;
}

/** An output stream that keeps what is written, and wakes whoever waits for a text in it. */
class Captured {
  text = "";
  readonly isTTY = false;
  private waiters: { text: string; resolve: () => void }[] = [];
  /** Called with each write, after it is kept. */
  onWrite: ((text: string) => void) | undefined;

  write(text: string): boolean {
    this.text += text;
    this.waiters = this.waiters.filter((waiter) => {
      if (!this.text.includes(waiter.text)) return true;
      waiter.resolve();
      return false;
    });
    this.onWrite?.(text);
    return true;
  }

  /** A barrier: resolves once @text has been written. */
  seen(text: string): Promise<void> {
    if (this.text.includes(text)) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ text, resolve }));
  }

  take(): string {
    const text = this.text;
    this.text = "";
    return text;
  }
}

/** A command context on @host, as cli.ts makes one on KernelHost, its output captured. */
function contextOn(host: FakeHost): CommandContext & { stdout: Captured; stderr: Captured } {
  return { host, programBuilder, stdout: new Captured(), stderr: new Captured() };
}

/** A fake machine with the namespace "web" (links eth0 and eth1), and a context on it. */
function machine() {
  const host = new FakeHost();
  const web = host.addNamespace("web", ["eth0", "eth1"]);
  for (const port of [9000, 9443, 15432]) web.listen(port, undefined); // the proxies run: plans warn of nothing
  web.addCgroup("app.slice");
  return { host, web, context: contextOn(host) };
}

const NETNS = { name: "web" };
const planOptions: PlanOptions = { netns: NETNS, json: false, colour: false, detailedExitcode: true };
const applyOptions: ApplyOptions = { netns: NETNS, colour: false, yes: true, lockTimeoutMs: 0 };

/** What @promise rejected with (it must reject). */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    (value) => assert.fail(`expected a failure, got ${String(value)}`),
    (error: unknown) => error,
  );
}

/** The filters on @link, by hook. */
function filters(datapath: HostedDatapath, link: string) {
  return datapath.snapshot().links.find((l) => l.name === link)?.filters ?? {};
}

describe("commands on the fake host", { timeout: 60_000 }, () => {
  test("plan lists the changes (exit 2), apply makes them, then plan is empty (exit 0)", async () => {
    const { web, context } = machine();
    const dir = await policies({ web: WEB });
    const before = web.snapshot();

    assert.equal(await planCommand(context, [dir], planOptions), 2);
    const plan = context.stdout.take();
    assert.match(plan, /^intercept will perform the following actions in network namespace "web":\n/);
    assert.match(plan, /^ +\+ program\.web +create: /m);
    assert.match(plan, /^Plan: \d+ to add, 0 to change, 0 to destroy\.$/m);
    assert.deepEqual(web.snapshot(), before, "plan changes nothing");
    assert.equal(context.stderr.take(), "", "with --netns, nothing is said about the host's namespace");

    assert.equal(await applyCommand(context, [dir], applyOptions), 0);
    const applied = context.stdout.take();
    assert.match(applied, /^program\.web: created$/m);
    assert.match(applied, /^Apply complete! Resources: \d+ added, 0 changed, 0 destroyed\.$/m);
    assert.ok(filters(web, "eth0").ingress && filters(web, "eth1").ingress, "both links run the program");
    assert.ok(web.batches.length > 0, "the apply went through performAll, as on the kernel");

    assert.equal(await planCommand(context, [dir], planOptions), 0);
    assert.equal(context.stdout.take(), 'No changes. The kernel in network namespace "web" matches the policies.\n');
    assert.equal(await planCommand(context, [dir], { ...planOptions, json: true }), 0);
    const json = JSON.parse(context.stdout.take());
    assert.deepEqual(json.changes, []);
    assert.equal(json.namespace, "web");
  });

  test("without --netns, the host's own namespace is named with its links, on stderr", async () => {
    const host = new FakeHost();
    host.own.addLink("eth0");
    const context = contextOn(host);
    assert.equal(await planCommand(context, [await policies({ web: WEB })], { ...planOptions, netns: {} }), 2);
    assert.equal(context.stderr.text, "No --netns: acting on the host's own network namespace, 2 links: lo, eth0.\n");
  });

  test("destroy leaves the fake kernel as it was before apply, and lets the lock's record go", async () => {
    const { host, web, context } = machine();
    const before = web.snapshot();
    await applyCommand(context, [await policies({ web: WEB, db: DB })], applyOptions);
    assert.notDeepEqual(web.snapshot(), before);
    // Pins stay after apply: so does the lock's record of who made them.
    assert.equal(await host.lastLockHolder(web.namespaceKey), "intercept apply");
    context.stdout.take();

    assert.equal(await destroyCommand(context, { netns: NETNS, colour: false, yes: true, lockTimeoutMs: 0 }), 0);
    assert.match(context.stdout.take(), /^Destroy complete! Resources: \d+ destroyed\.$/m);
    assert.deepEqual(web.snapshot(), before);
    assert.equal(await host.lastLockHolder(web.namespaceKey), undefined, "no pins, no record");
    assert.equal(host.lockHolder(web.namespaceKey), undefined, "the lock is let go");
  });

  test("status shows the drift that plan repairs, and none once apply repaired it", async () => {
    const { web, context } = machine();
    const dir = await policies({ web: WEB });
    await applyCommand(context, [dir], applyOptions);
    // What an apply killed while loading leaves: a version pinned without its content hash.
    web.leaveIncompleteVersion({ policy: "web", version: "0123456789ab" });
    context.stdout.take();

    assert.equal(await statusCommand(context, [dir], { netns: NETNS, json: true }), 0);
    const drift = JSON.parse(context.stdout.take()).drift as { kind: string; link?: string; description: string }[];
    assert.deepEqual(
      drift.map(({ kind, link }) => ({ kind, link })),
      [{ kind: "incomplete-version", link: undefined }],
    );
    assert.equal(await statusCommand(context, [dir], { netns: NETNS, json: false }), 0);
    assert.match(context.stdout.take(), new RegExp(`^  DRIFT: ${literally(drift[0]!.description)}$`, "m"));

    assert.equal(await planCommand(context, [dir], { ...planOptions, json: true }), 2);
    const changes = JSON.parse(context.stdout.take()).changes as { address: string }[];
    assert.deepEqual(
      changes.map((change) => change.address),
      ["program.web"],
      "plan repairs what status calls drift, and nothing else",
    );
    await applyCommand(context, [dir], applyOptions);
    context.stdout.take();
    await statusCommand(context, [dir], { netns: NETNS, json: true });
    assert.deepEqual(JSON.parse(context.stdout.take()).drift, []);
  });

  test("another process's lock: refused at once naming it, or waited for, then applied", async () => {
    const { host, web, context } = machine();
    const dir = await policies({ web: WEB });
    const before = web.snapshot();
    const release = await host.holdLock(web.namespaceKey, "intercept apply", 4242);

    const refused = await rejection(applyCommand(context, [dir], applyOptions));
    assert.ok(refused instanceof InterceptError);
    assert.equal(refused.code, "lock-held");
    assert.equal(refused.message, "the network namespace is locked by pid 4242 (intercept apply)");
    assert.deepEqual(web.snapshot(), before);

    const waiting = applyCommand(context, [dir], { ...applyOptions, lockTimeoutMs: 30_000 });
    await context.stderr.seen("waiting for the lock held by pid 4242 (intercept apply)\n");
    assert.deepEqual(web.snapshot(), before, "nothing is planned or changed while another holds the lock");
    release();
    assert.equal(await waiting, 0);
    assert.ok(filters(web, "eth0").ingress);
  });

  test("a wait for the lock that runs out says for whom it waited", async () => {
    const { host, web, context } = machine();
    const release = await host.holdLock(web.namespaceKey, "intercept destroy", 4343);
    try {
      const failed = await rejection(
        destroyCommand(context, { netns: NETNS, colour: false, yes: true, lockTimeoutMs: 50 }),
      );
      assert.ok(failed instanceof InterceptError);
      assert.equal(failed.code, "lock-timeout");
      assert.match(failed.message, /waiting for the lock held by pid 4343 \(intercept destroy\)/);
    } finally {
      release();
    }
  });

  test("an agent's lock is refused at once, even with a timeout, unless --wait-for-agent", async () => {
    const { host, web, context } = machine();
    const dir = await policies({ web: WEB });
    const release = await host.holdLock(web.namespaceKey, AGENT_LOCK_HOLDER, 777);
    const refused = await rejection(applyCommand(context, [dir], { ...applyOptions, lockTimeoutMs: 30_000 }));
    assert.ok(refused instanceof InterceptError);
    assert.equal(refused.code, "lock-held");
    assert.match(refused.message, /^an agent \(pid 777\) manages network namespace "web": /);
    assert.equal(context.stderr.text, "", "no wait is announced");

    const waiting = applyCommand(context, [dir], { ...applyOptions, lockTimeoutMs: 30_000, waitForAgent: true });
    await context.stderr.seen("waiting for the lock held by pid 777 (intercept agent)\n");
    release();
    assert.equal(await waiting, 0);
  });

  test("a failure injected at every step of an apply leaves the kernel as it was, with one error", async () => {
    // An apply of many steps: web's new version replaces the old one on two links, db is added, and
    // outbound capture attached to a cgroup.
    const start = await policies({ web: WEB });
    const next = await policies({ web: WEB_TWO_RULES, db: DB, out: OUTBOUND });
    let rolledBack = 0;
    let committed = 0;
    for (let failing = 1; ; failing++) {
      const { host, web, context } = machine();
      await applyCommand(context, [start], applyOptions);
      context.stdout.take();
      const before = web.snapshot();
      web.failAt(web.mutationCount + failing);
      const outcome = await applyCommand(context, [next], applyOptions).then(
        (code) => code,
        (error: unknown) => error,
      );
      if (outcome === 0) break; // past the last step: the apply went through
      assert.ok(outcome instanceof InterceptError, `step ${failing}: ${String(outcome)}`);
      const { error } = errorDocument(outcome);
      assert.equal(error.code, "apply-failed", `step ${failing}`);
      assert.doesNotMatch(error.message, /^\s+at /m, "no stack");
      assert.equal(host.lockHolder(web.namespaceKey), undefined, "the lock is let go");
      const [cause, outcomeLine, ...more] = error.message.split("\n");
      assert.match(cause!, /^[\w.+@[\]-]+: injected failure at operation \d+ \(\w+\)$/, `step ${failing}`);
      assert.deepEqual(more, [], "the failure, then what it left: nothing else");
      if (outcomeLine === "Rolled back: the kernel is as it was before this apply.") {
        assert.deepEqual(web.snapshot(), before, `after a failure at step ${failing}`);
        rolledBack++;
        continue;
      }
      // After the switch, only the clean-up is left: not undone (the links run the new version), said, and
      // finished by the next apply.
      assert.match(outcomeLine!, /`intercept apply` again removes (it|them)\.$/, `step ${failing}`);
      await applyCommand(context, [next], applyOptions);
      assert.equal(await planCommand(context, [next], planOptions), 0, `step ${failing}: apply again finishes it`);
      committed++;
    }
    assert.ok(
      rolledBack >= 8,
      `a multi-step apply (${rolledBack} failures rolled back, ${committed} after the switch)`,
    );
  });

  test("a failure of each step taken from the host leaves the kernel as it was", async () => {
    const dir = await policies({ web: WEB });
    const steps: HostStep[] = ["openDatapath", "requireKernelAccess", "lockNamespace"];
    for (const step of steps) {
      const { host, web, context } = machine();
      const before = web.snapshot();
      host.failNext(step, new InterceptError("command-failed", `injected failure of ${step}`));
      const failed = await rejection(applyCommand(context, [dir], applyOptions));
      assert.ok(failed instanceof InterceptError, step);
      assert.equal(failed.message, `injected failure of ${step}`);
      assert.ok(host.calls.includes(step), `apply takes ${step} from the host`);
      assert.deepEqual(web.snapshot(), before, step);
      assert.equal(host.lockHolder(web.namespaceKey), undefined, step);
    }
  });

  test("without privileges, plan says so in one line and reads nothing", async () => {
    const { host, context } = machine();
    host.privileged = false;
    const failed = await rejection(planCommand(context, [await policies({ web: WEB })], planOptions));
    assert.ok(failed instanceof InterceptError);
    assert.equal(failed.code, "privilege");
    assert.match(failed.message, /^intercept plan needs root/);
  });

  test("SIGINT during an apply: the step in flight finishes, then everything is rolled back", async () => {
    const { host, web, context } = machine();
    const before = web.snapshot();
    let signalled = false;
    context.stdout.onWrite = (text) => {
      if (!signalled && /: created\n$/.test(text)) {
        signalled = true;
        host.signal("SIGINT");
      }
    };
    const failed = await rejection(applyCommand(context, [await policies({ web: WEB, db: DB })], applyOptions));
    assert.ok(signalled, "the apply got as far as a first change");
    assert.ok(failed instanceof InterceptError);
    assert.equal(failed.code, "apply-interrupted");
    assert.match(context.stderr.text, /^SIGINT received: stopping after the current step and rolling back\.$/m);
    assert.deepEqual(web.snapshot(), before);
    assert.equal(host.terminationListeners, 0, "apply stops listening once done");
  });

  test("a saved plan is applied as made, and refused naming what moved when the kernel changed", async () => {
    const dir = await policies({ web: WEB });
    {
      const { web, context } = machine();
      const file = path.join(scratch, "same.plan.json");
      assert.equal(await planCommand(context, [dir], { ...planOptions, out: file }), 2);
      assert.match(context.stdout.take(), /^Saved the plan to .*same\.plan\.json/m);
      assert.equal(await applyCommand(context, [], { ...applyOptions, netns: undefined, plan: file }), 0);
      assert.ok(filters(web, "eth0").ingress);
    }
    const { host, web, context } = machine();
    const file = path.join(scratch, "moved.plan.json");
    await planCommand(context, [dir], { ...planOptions, out: file });
    host.addLink("web", "eth2"); // the kernel moves: a link came
    const before = web.snapshot();
    const refused = await rejection(applyCommand(context, [file], { ...applyOptions, netns: undefined }));
    assert.ok(refused instanceof InterceptError);
    assert.equal(refused.code, "saved-plan-stale");
    assert.match(
      refused.message,
      /^the kernel changed since .*moved\.plan\.json was made .*eth2.*: run `intercept plan` again$/,
    );
    assert.deepEqual(web.snapshot(), before, "nothing applied");
  });
});

/** @text as a regular expression that matches it and nothing else. */
function literally(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
