/**
 * The editor torture test of the agent: a policy folder edited in every way
 * editors, ConfigMaps and people replace files and folders, hundreds of
 * times a second, then a check that within 2 s of the last edit the kernel
 * matches the final content and the agent's metrics say so. Shared by the
 * e2e suite and the load suite.
 */
import assert from "node:assert/strict";
import { randomInt } from "node:crypto";
import { existsSync } from "node:fs";
import { lstat, mkdir, mkdtemp, readFile, readlink, rename, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fingerprintPolicies } from "../src/agent/policy-fingerprint.js";
import { AgentProcess } from "./agent-process.js";
import { intercept, type Lab } from "./network.js";

/** The ways a policy file is changed. */
export const EDIT_KINDS = [
  "in-place write",
  "rename-save",
  "..data swap",
  "folder recreated",
  "folder symlink swapped",
] as const;
export type EditKind = (typeof EDIT_KINDS)[number];

const FILE = "p.yaml";

/** A policy whose two rules are enabled as @enabled says; @edit makes every edit's content distinct. */
export function torturePolicy(enabled: readonly [boolean, boolean], edit: number): string {
  return `# edit ${edit}\ninterceptors:\n  - { port: 9000, originalPort: 8000, enabled: ${enabled[0]} }\n  - { port: 9443, originalPort: 8443, enabled: ${enabled[1]} }\n`;
}

/**
 * A policy folder that is a symlink (`policies` → `tree-a` or `tree-b`),
 * whose file is either plain or, ConfigMap-style, a symlink through `..data`
 * into `..v1` or `..v2`. Every edit leaves `policies/p.yaml` holding the
 * content it was given.
 */
export class TorturedFolder {
  readonly link: string;
  private current = 0;
  private readonly trees: [string, string];

  private constructor(private readonly root: string) {
    this.link = path.join(root, "policies");
    this.trees = [path.join(root, "tree-a"), path.join(root, "tree-b")];
  }

  static async create(content: string): Promise<TorturedFolder> {
    const folder = new TorturedFolder(await mkdtemp(path.join(tmpdir(), "intercept-torture-")));
    await mkdir(folder.trees[0]);
    await writeFile(path.join(folder.trees[0], FILE), content);
    await symlink("tree-a", folder.link);
    return folder;
  }

  async remove(): Promise<void> {
    await rm(this.root, { recursive: true, force: true });
  }

  /** The file's content, read through the folder's symlink as the agent reads it. */
  read(): Promise<string> {
    return readFile(path.join(this.link, FILE), "utf8");
  }

  async edit(kind: EditKind, content: string): Promise<void> {
    const folder = this.trees[this.current];
    switch (kind) {
      case "in-place write": // truncates, then writes: a reader may catch it empty
        return writeFile(path.join(folder, FILE), content);
      case "rename-save": {
        const swap = path.join(folder, `.${FILE}.swp`);
        await writeFile(swap, content);
        return rename(swap, path.join(folder, FILE));
      }
      case "..data swap":
        return this.swapData(folder, content);
      case "folder recreated":
        await rm(folder, { recursive: true, force: true });
        await mkdir(folder);
        return writeFile(path.join(folder, FILE), content);
      case "folder symlink swapped": {
        const other = this.trees[1 - this.current]!;
        await rm(other, { recursive: true, force: true });
        await mkdir(other);
        await writeFile(path.join(other, FILE), content);
        await swapSymlink(path.basename(other), this.link);
        this.current = 1 - this.current;
      }
    }
  }

  /** kubelet's update: the new version beside the old, `..data` swapped to it (both folders exist), the file a link through `..data`. */
  private async swapData(folder: string, content: string): Promise<void> {
    const data = path.join(folder, "..data");
    const now = await readlink(data).catch(() => undefined); // no ..data yet: the file is plain
    const next = now === "..v1" ? "..v2" : "..v1";
    await mkdir(path.join(folder, next), { recursive: true });
    await writeFile(path.join(folder, next, FILE), content);
    await swapSymlink(next, data);
    const file = path.join(folder, FILE);
    const linked = (await lstat(file).catch(() => undefined))?.isSymbolicLink() ?? false;
    if (!linked) await swapSymlink(path.join("..data", FILE), file);
  }
}

/** Points @link at @target atomically: `ln -s TARGET LINK.tmp; mv -T LINK.tmp LINK`. */
async function swapSymlink(target: string, link: string): Promise<void> {
  const temporary = `${link}.tmp`;
  await rm(temporary, { force: true });
  await symlink(target, temporary);
  await rename(temporary, link);
}

/** What /healthz?format=json says (the fields the torture looks at). */
interface Health {
  policies: { readHash: string | null; inForceHash: string | null; behind: boolean; invalid: boolean };
  namespaces: { kernelMatches: boolean }[];
}

/** A GET of the agent's; if it cannot be reached, a failure with the agent's last words. */
async function fetchText(url: string, agent: AgentProcess): Promise<string> {
  try {
    return await (await fetch(url)).text();
  } catch (error) {
    const ended = await Promise.race([
      agent.exited(),
      new Promise((resolve) => setTimeout(() => resolve("still running"), 1_000)),
    ]);
    throw new Error(
      `GET ${url}: ${String(error)}; agent: ${JSON.stringify(ended)}\n${agent.lines
        .slice(-10)
        .map((l) => JSON.stringify(l))
        .join("\n")}`,
    );
  }
}

async function fetchJson<T>(url: string, agent: AgentProcess): Promise<T> {
  return JSON.parse(await fetchText(url, agent)) as T;
}

/** One series of a Prometheus text exposition, by its name and labels as written. */
export function metricValue(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** The hash label of an `_info` series (intercept_policies_read_info, …). */
export function infoHash(text: string, name: string): string | undefined {
  return new RegExp(`^${name}\\{hash="([0-9a-f]+)"\\} 1$`, "m").exec(text)?.[1];
}

export interface TortureResult {
  edits: Record<EditKind, number>;
  /** From the last edit until /healthz said the kernel matched the final content. */
  settledMs: number;
  /** From SIGTERM until the agent exited. */
  stopMs: number;
}

/**
 * Starts an agent on a tortured folder for @lab's server namespace, makes
 * @edits edits spread evenly over @durationMs (every kind, in random order,
 * each with its own content), and checks: within 2 s of the last edit
 * /healthz shows the final content's hash read and in force, not behind,
 * the kernel matching, and the metrics then say the same; `plan` then shows
 * no change and `status` the final rules' switches. SIGTERM then ends the agent within 2 s, leaving nothing.
 */
export async function tortureAgent(lab: Lab, edits: number, durationMs: number): Promise<TortureResult> {
  let enabled: [boolean, boolean] = [true, true];
  const folder = await TorturedFolder.create(torturePolicy(enabled, 0));
  const agent = new AgentProcess([folder.link, "--netns", lab.serverNs, "--metrics", "127.0.0.1:0"]);
  try {
    const started = await agent.waitFor((l) => l.event === "agent started", 0, 60_000);
    const metricsUrl = `http://${String(started.metrics)}/metrics`;
    const counts = Object.fromEntries(EDIT_KINDS.map((kind) => [kind, 0])) as Record<EditKind, number>;
    const began = performance.now();
    for (let edit = 1; edit <= edits; edit++) {
      // Paced, not slept: each edit at its own moment of the run.
      const due = began + (edit - 1) * (durationMs / edits);
      if (due > performance.now()) await new Promise((resolve) => setTimeout(resolve, due - performance.now()));
      enabled = [randomInt(2) === 1, randomInt(2) === 1];
      const kind = EDIT_KINDS[randomInt(EDIT_KINDS.length)]!;
      await folder.edit(kind, torturePolicy(enabled, edit));
      counts[kind]++;
    }
    const lastEdit = performance.now();
    const lastEditWall = Date.now();
    const lastEditAt = new Date(lastEditWall).toISOString();
    const final = torturePolicy(enabled, edits);
    assert.equal(await folder.read(), final, "the folder holds the last edit");
    const expected = (await fingerprintPolicies([folder.link], undefined)).slice(0, 16);

    // /healthz (cheap: no kernel read) says the final content is read, in force and what the kernel runs, within 2 s …
    const healthUrl = `http://${String(started.metrics)}/healthz?format=json`;
    let health: Health | undefined;
    let settledMs: number;
    for (;;) {
      const asked = performance.now();
      health = await fetchJson<Health>(healthUrl, agent);
      settledMs = asked - lastEdit;
      const { policies, namespaces } = health;
      if (
        policies.readHash === expected &&
        policies.inForceHash === expected &&
        !policies.behind &&
        !policies.invalid &&
        namespaces.every((n) => n.kernelMatches)
      )
        break;
      assert.ok(
        settledMs < 2_000,
        `the agent did not have the final content (${expected}) in force within 2 s of the last edit (${lastEditAt}): ${JSON.stringify(health)}\nlast log lines:\n${agent.lines
          .slice(-8)
          .map((l) => JSON.stringify(l))
          .join("\n")}`,
      );
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.ok(settledMs < 2_000, `in force ${settledMs.toFixed(0)} ms after the last edit`);
    // … and so do the metrics.
    const text = await fetchText(metricsUrl, agent);
    assert.equal(infoHash(text, "intercept_policies_read_info"), expected, text);
    assert.equal(infoHash(text, "intercept_policies_in_force_info"), expected, text);
    assert.equal(metricValue(text, "intercept_policies_behind"), 0, text);
    assert.equal(metricValue(text, "intercept_policies_invalid"), 0, text);
    assert.equal(metricValue(text, `intercept_kernel_matches{namespace="${lab.serverNs}"}`), 1, text);
    assert.ok(
      metricValue(text, "intercept_policies_last_read_timestamp_seconds")! * 1000 >= lastEditWall,
      "the files were read after the last edit",
    );

    // The kernel agrees: nothing left to plan, and the live switches are the final ones.
    const [plan, shown] = await Promise.all([
      intercept("plan", folder.link, "--netns", lab.serverNs, "--detailed-exitcode"),
      intercept("status", "--netns", lab.serverNs, "--json"),
    ]);
    assert.equal(plan.exitCode, 0, `plan after the torture:\n${plan.stdout}${plan.stderr}`);
    const status = JSON.parse(shown.stdout);
    assert.deepEqual(
      status.programs.map((program: { rules: { enabled: boolean }[] }) => program.rules.map((rule) => rule.enabled)),
      [enabled],
    );
    assert.deepEqual(
      agent.lines.filter((l) => l.event === "error").map((l) => l.message),
      [],
      "a file caught half-written is never reported",
    );

    const stopping = performance.now();
    assert.equal(await agent.stop("SIGTERM"), 0);
    const stopMs = performance.now() - stopping;
    assert.ok(stopMs < 2_000, `SIGTERM ended the agent in ${stopMs.toFixed(0)} ms`);
    assert.equal(agent.lines.at(-1)?.message, "datapath removed");
    assert.equal(existsSync(`/sys/fs/bpf/intercept/${lab.pinKey}`), false, "its pins are removed");
    return { edits: counts, settledMs, stopMs };
  } finally {
    agent.kill();
    await folder.remove();
  }
}
