/**
 * A cgroup of the lab's own under the cgroup2 mount (never the root one),
 * with child cgroups for the applications and the proxy, and processes run
 * in them: a process joins its cgroup (writing its pid to cgroup.procs)
 * before it enters the network namespace and execs, so everything it
 * connects is the cgroup's. destroy() kills what runs there and removes
 * the cgroups, even after a failure.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rmdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { execa, type ResultPromise } from "execa";
import { cgroupRoot } from "../src/kernel/cgroups.js";

export const OUTBOUND_HELPER = "lab/outbound.py";

export class LabCgroup {
  private readonly processes: ResultPromise[] = [];

  private constructor(
    /** The cgroup2 mount. */
    readonly root: string,
    /** Relative to the mount: what a policy names. */
    readonly name: string,
    readonly children: readonly string[],
  ) {}

  /** Makes intercept-test-<random> under the cgroup2 mount (found in /proc/mounts) with @children (parents first: "app", "app/sidecar"). */
  static async create(children: readonly string[], prefix = "intercept-test"): Promise<LabCgroup> {
    const root = await cgroupRoot();
    if (!root) throw new Error("no cgroup2 hierarchy is mounted");
    const cgroup = new LabCgroup(root, `${prefix}-${randomBytes(4).toString("hex")}`, children);
    await mkdir(cgroup.directory());
    try {
      for (const child of children) await mkdir(cgroup.directory(child));
    } catch (error) {
      await cgroup.destroy();
      throw error;
    }
    return cgroup;
  }

  /** A child's path relative to the mount ("intercept-test-1a2b3c4d/app"), as a policy names it. */
  path(child?: string): string {
    return child ? `${this.name}/${child}` : this.name;
  }

  directory(child?: string): string {
    return path.join(this.root, this.path(child));
  }

  /** The command line that runs @command in @netns, inside cgroup @child (none: where the caller is). */
  private wrap(child: string | undefined, netns: string, command: string[]): [string, string[]] {
    const enter = ["nsenter", `--net=/var/run/netns/${netns}`, ...command];
    if (child === undefined) return [enter[0]!, enter.slice(1)];
    return [
      "sh",
      ["-c", 'echo $$ > "$1" && shift && exec "$@"', "sh", path.join(this.directory(child), "cgroup.procs"), ...enter],
    ];
  }

  /**
   * Starts a long-running process; resolves once it prints @ready, with a
   * way to stop it; every other line it prints goes to @lines.
   */
  async start(
    child: string | undefined,
    netns: string,
    command: string[],
    ready: RegExp,
    lines?: (line: string) => void,
  ): Promise<{ stop: () => Promise<void> }> {
    const [file, args] = this.wrap(child, netns, command);
    const process = execa(file, args, { reject: false, buffer: false, stdin: "ignore" });
    this.processes.push(process);
    let pending = "";
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${command.join(" ")} did not start`)), 10_000);
      process.stdout?.on("data", (chunk: Buffer) => {
        pending += chunk.toString();
        const complete = pending.split("\n");
        pending = complete.pop()!;
        for (const line of complete) {
          if (ready.test(line)) {
            clearTimeout(timer);
            resolve();
          } else {
            lines?.(line);
          }
        }
      });
      process.on("exit", () => reject(new Error(`${command.join(" ")} exited before it was ready`)));
    });
    return {
      stop: async () => {
        process.kill("SIGTERM");
        await process;
      },
    };
  }

  /** Runs a command to completion (in cgroup @child when given), returning its exit code and output. */
  async run(child: string | undefined, netns: string, command: string[], input?: string) {
    const [file, args] = this.wrap(child, netns, command);
    const result = await execa(file, args, {
      reject: false,
      ...(input === undefined ? { stdin: "ignore" as const } : { input }),
    });
    return { exitCode: result.exitCode ?? 1, stdout: String(result.stdout), stderr: String(result.stderr) };
  }

  /** Starts a process without waiting for it (one that waits on its standard input). */
  spawn(child: string | undefined, netns: string, command: string[]): ResultPromise {
    const [file, args] = this.wrap(child, netns, command);
    const process = execa(file, args, { reject: false, stdin: "pipe" });
    this.processes.push(process);
    return process;
  }

  /** Kills everything in the cgroups and removes them. Never throws. */
  async destroy(): Promise<void> {
    for (const process of this.processes) process.kill("SIGKILL");
    await Promise.allSettled(this.processes);
    for (const child of [...[...this.children].reverse(), undefined]) {
      // nested children before their parents
      const dir = this.directory(child);
      // cgroup.kill (5.14) kills all of a cgroup's processes at once; then rmdir waits for them to be gone.
      await writeFile(path.join(dir, "cgroup.kill"), "1").catch(() => {});
      for (let attempt = 0; attempt < 50; attempt++) {
        const procs = await readFile(path.join(dir, "cgroup.procs"), "utf8").catch(() => "");
        if (procs.trim() === "") break;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      await rmdir(dir).catch(() => {});
    }
  }
}

/** Adds an IPv6 address to a link in @netns, usable at once (no duplicate address detection). */
export async function addAddress6(netns: string, link: string, address: string): Promise<void> {
  await execa("ip", ["-n", netns, "addr", "add", address, "dev", link, "nodad"]);
}
