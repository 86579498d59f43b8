/**
 * The demo's sandbox: a server and a client network namespace joined by a
 * veth pair, with unique names and addresses from 198.18.0.0/15, and the
 * processes started in them. Nothing is made or changed in the namespace
 * the demo runs in; remove() takes away everything create() made, pins
 * included, and may be called at any point (after a failure, on a signal).
 */
import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import path from "node:path";
import { execa, type ResultPromise } from "execa";
import { NETNS_DIR } from "../kernel/exec.js";
import { namespaceKey } from "../kernel/namespace.js";
import { PinLayout } from "../kernel/pins.js";
import { lockFile } from "../reconcile/lock.js";

export const SERVER_ADDRESS = "198.18.0.1";
export const CLIENT_ADDRESS = "198.18.0.2";

/** A process the sandbox started, and whether to ask it to stop (SIGINT) rather than kill it. */
interface Started {
  child: ResultPromise;
  graceful: boolean;
}

export class Sandbox {
  private readonly started = new Set<Started>();
  private readonly made: string[] = [];
  private serverKey: string | undefined;

  private constructor(readonly id: string) {}

  get serverNs(): string {
    return `${this.id}-server`;
  }

  get clientNs(): string {
    return `${this.id}-client`;
  }

  /** The server namespace's pin directory, where intercept pins what it loads there. */
  get pins(): string {
    return new PinLayout(this.serverKey!).namespaceDir;
  }

  /** The server namespace's lock file, which apply and destroy make there. */
  get lock(): string {
    return lockFile(this.serverKey!);
  }

  /**
   * Creates both namespaces and the veth pair, addressed and up. A failure
   * half-way removes what was made before it is thrown.
   */
  static async create(): Promise<Sandbox> {
    // 9 characters: the link names (id + "s"/"c") stay under the kernel's 15.
    const sandbox = new Sandbox(`icd${randomBytes(3).toString("hex")}`);
    try {
      for (const ns of [sandbox.serverNs, sandbox.clientNs]) {
        // Recorded once made: a name that exists already is someone else's, never removed here.
        await ip("netns", "add", ns);
        sandbox.made.push(ns);
      }
      sandbox.serverKey = await namespaceKey({ name: sandbox.serverNs });
      const [serverLink, clientLink] = [`${sandbox.id}s`, `${sandbox.id}c`];
      await ip("link", "add", serverLink, "netns", sandbox.serverNs, "type", "veth", "peer", "name", clientLink, "netns", sandbox.clientNs);
      await configure(sandbox.serverNs, serverLink, SERVER_ADDRESS);
      await configure(sandbox.clientNs, clientLink, CLIENT_ADDRESS);
    } catch (error) {
      await sandbox.remove();
      throw error;
    }
    return sandbox;
  }

  /**
   * Starts @command in namespace @ns (nsenter: the pins stay visible) and
   * resolves once a line of its output matches @ready.
   */
  async startIn(ns: string, command: string[], ready: RegExp): Promise<void> {
    const child = execa("nsenter", [`--net=${path.join(NETNS_DIR, ns)}`, ...command], { reject: false, buffer: false, stdin: "ignore" });
    this.started.add({ child, graceful: false });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${command.join(" ")} did not start within 10 s`)), 10_000);
      let seen = "";
      child.stdout?.on("data", (chunk: Buffer) => {
        seen += chunk.toString();
        if (ready.test(seen)) {
          clearTimeout(timer);
          resolve();
        }
      });
      void child.then((result) => {
        clearTimeout(timer);
        reject(new Error(`${command.join(" ")} exited before it was ready: ${String(result.stderr ?? "").trim() || `exit ${result.exitCode}`}`));
      });
    });
  }

  /** Runs @command to its end in namespace @ns; its output and exit code. */
  runIn(ns: string, command: string[]): Promise<{ exitCode: number; output: string }> {
    return this.run(["nsenter", `--net=${path.join(NETNS_DIR, ns)}`, ...command], false);
  }

  /**
   * Runs an intercept command (which enters the namespace itself, --netns)
   * to its end. On remove() it is asked to stop, not killed: an apply
   * interrupted so rolls back what it did.
   */
  runIntercept(command: string[]): Promise<{ exitCode: number; output: string }> {
    return this.run(command, true);
  }

  private async run([file, ...args]: string[], graceful: boolean): Promise<{ exitCode: number; output: string }> {
    // all: stdout and stderr interleaved as a terminal would show them.
    const child = execa(file!, args, { reject: false, all: true, stdin: "ignore" });
    const started = { child, graceful };
    this.started.add(started);
    const result = await child;
    this.started.delete(started);
    return { exitCode: result.exitCode ?? 1, output: String(result.all ?? "") };
  }

  /**
   * Stops every process the sandbox started, deletes both namespaces (with
   * their links), and the server namespace's pins and lock file. Never throws: a part
   * already gone is fine, and each part is tried whatever the others did.
   */
  async remove(): Promise<void> {
    for (const { child, graceful } of this.started) child.kill(graceful ? "SIGINT" : "SIGKILL");
    await Promise.allSettled([...this.started].map(({ child }) => child));
    this.started.clear();
    for (const ns of this.made) await execa("ip", ["netns", "del", ns], { reject: false });
    if (this.serverKey !== undefined) {
      await rm(this.pins, { recursive: true, force: true });
      await rm(this.lock, { force: true });
    }
  }
}

async function configure(ns: string, link: string, address: string): Promise<void> {
  await ip("-n", ns, "link", "set", "lo", "up");
  await ip("-n", ns, "addr", "add", `${address}/24`, "dev", link);
  await ip("-n", ns, "link", "set", link, "up");
}

async function ip(...args: string[]): Promise<void> {
  await execa("ip", args, { stdin: "ignore" });
}
