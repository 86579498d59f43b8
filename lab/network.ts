/**
 * A two-host network for the demo and the tests: a server namespace and a
 * client namespace joined by a veth pair, both created here with unique
 * names (nothing is touched in the root namespace) and removed by destroy(),
 * pins included, even after a failure.
 */
import { randomBytes } from "node:crypto";
import { rm, stat } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa, type ResultPromise } from "execa";
import { lockFile } from "../src/host/lock.js";
import { namespaceKeyOf, NETNS_DIR } from "../src/model/namespace.js";

export const SERVER_ADDRESS = "198.18.0.1";
export const CLIENT_ADDRESS = "198.18.0.2";
export const SERVER_ADDRESS_V6 = "fd00:198:18::1";
export const CLIENT_ADDRESS_V6 = "fd00:198:18::2";

export class Lab {
  private readonly processes: ResultPromise[] = [];
  private clientAddresses = 0;
  private namespaceKey = "";

  private constructor(
    readonly id: string,
    readonly serverNs: string,
    readonly clientNs: string,
    readonly serverLink: string,
    readonly clientLink: string,
  ) {}

  /** Creates both namespaces and the veth pair, addressed and up. */
  static async create(): Promise<Lab> {
    const id = `ic${randomBytes(4).toString("hex")}`; // 10 chars: link names stay under 15
    const lab = new Lab(id, `${id}-server`, `${id}-client`, `${id}s`, `${id}c`);
    try {
      await ip("netns", "add", lab.serverNs);
      await ip("netns", "add", lab.clientNs);
      lab.namespaceKey = namespaceKeyOf((await stat(path.join(NETNS_DIR, lab.serverNs))).ino);
      await ip(
        "link",
        "add",
        lab.serverLink,
        "netns",
        lab.serverNs,
        "type",
        "veth",
        "peer",
        "name",
        lab.clientLink,
        "netns",
        lab.clientNs,
      );
      await lab.configure(lab.serverNs, lab.serverLink, SERVER_ADDRESS);
      await lab.configure(lab.clientNs, lab.clientLink, CLIENT_ADDRESS);
    } catch (error) {
      await lab.destroy();
      throw error;
    }
    return lab;
  }

  private async configure(ns: string, link: string, address: string): Promise<void> {
    await ip("-n", ns, "link", "set", "lo", "up");
    await ip("-n", ns, "addr", "add", `${address}/24`, "dev", link);
    await ip("-n", ns, "link", "set", link, "up");
  }

  /** Starts a long-running process in the server namespace; resolves once it prints @ready. */
  async startInServer(command: string[], ready: RegExp): Promise<void> {
    const child = execa("ip", ["netns", "exec", this.serverNs, ...command], { reject: false, buffer: false });
    this.processes.push(child);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${command.join(" ")} did not start`)), 10_000);
      child.stdout?.on("data", (chunk: Buffer) => {
        if (ready.test(chunk.toString())) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.on("exit", () => reject(new Error(`${command.join(" ")} exited before it was ready`)));
    });
  }

  /** Adds IPv6 addresses to both ends (SERVER_ADDRESS_V6, CLIENT_ADDRESS_V6), usable at once (no duplicate address detection). */
  async addIpv6(): Promise<void> {
    await ip("-n", this.serverNs, "addr", "add", `${SERVER_ADDRESS_V6}/64`, "dev", this.serverLink, "nodad");
    await ip("-n", this.clientNs, "addr", "add", `${CLIENT_ADDRESS_V6}/64`, "dev", this.clientLink, "nodad");
  }

  /**
   * Adds another address to the client's link (198.18.0.100 on) and
   * returns it: a load generator of its own starts from unused 4-tuples.
   */
  async addClientAddress(): Promise<string> {
    const address = `198.18.0.${100 + ++this.clientAddresses}`;
    await ip("-n", this.clientNs, "addr", "add", `${address}/24`, "dev", this.clientLink);
    return address;
  }

  /** Runs a command to completion in the client namespace. */
  runInClient(command: string[]) {
    return execa("ip", ["netns", "exec", this.clientNs, ...command], { reject: false });
  }

  /** Runs a command to completion in the server namespace (via nsenter: pins stay visible). */
  runInServer(command: string[]) {
    return execa("nsenter", [`--net=/var/run/netns/${this.serverNs}`, ...command], { reject: false });
  }

  /** An HTTP request from the client namespace, as the classic test-curl.sh makes it. */
  async curl(port: number): Promise<{ ok: boolean; response: string }> {
    const result = await execa("demo/test-curl.sh", [this.clientNs, SERVER_ADDRESS, String(port)], { reject: false });
    return { ok: result.exitCode === 0, response: String(result.stdout || result.stderr) };
  }

  /** The server namespace's pin directory name under /sys/fs/bpf/intercept. */
  get pinKey(): string {
    return this.namespaceKey;
  }

  /** Removes everything: intercept's objects, processes, namespaces. Never throws. */
  async destroy(): Promise<void> {
    if (this.namespaceKey) {
      await execa("node", ["bin/intercept.js", "destroy", "--netns", this.serverNs, "--yes"], { reject: false });
      await rm(`/sys/fs/bpf/intercept/${this.namespaceKey}`, { recursive: true, force: true });
      await rm(lockFile(this.namespaceKey), { force: true }); // a record left by a killed or --keep holder
    }
    await this.deleteNamespaces();
  }

  /** Stops the processes the lab started and deletes both namespaces (as `ip netns del` would). Never throws. */
  async deleteNamespaces(): Promise<void> {
    for (const child of this.processes) child.kill("SIGKILL");
    await Promise.allSettled(this.processes);
    for (const ns of [this.serverNs, this.clientNs]) {
      // Already gone (a test deleted it) is fine: this is clean-up.
      await execa("ip", ["netns", "del", ns], { reject: false });
    }
  }
}

async function ip(...args: string[]): Promise<void> {
  await execa("ip", args);
}

/** Runs the intercept CLI as a user would, returning its exit code and output. */
/**
 * Resolves once lab/request-loop.js, started with runInClient, has had its
 * first answer (it says so on stderr); fails if it ends before.
 */
export function waitForAnswers(loop: ReturnType<Lab["runInClient"]>): Promise<void> {
  return new Promise((resolve, reject) => {
    loop.stderr?.on("data", (chunk: Buffer) => {
      if (chunk.toString().includes("answered")) resolve();
    });
    void loop.then((ended) => reject(new Error(`the request loop ended before an answer: ${String(ended.stderr)}`)));
  });
}

export async function intercept(...args: string[]) {
  return interceptIn(process.cwd(), ...args);
}

/** intercept(), run from @cwd: a policy repository of the test's own (policies/, generated/). */
export async function interceptIn(cwd: string, ...args: string[]) {
  const result = await execa("node", [CLI, ...args], { reject: false, stdin: "ignore", cwd });
  return { exitCode: result.exitCode ?? 1, stdout: String(result.stdout), stderr: String(result.stderr) };
}

const CLI = fileURLToPath(new URL("../../bin/intercept.js", import.meta.url));
