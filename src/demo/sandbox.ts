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
import { NETNS_DIR } from "../model/namespace.js";
import { namespaceKey } from "../kernel/namespace.js";
import { PinLayout } from "../kernel/pins.js";
import { lockFile } from "../host/lock.js";

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
  /** Set when remove() begins: from then on nothing new is started (a signal may come between two steps). */
  private removing = false;
  private building: Promise<void> | undefined;

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

  /** A sandbox with a fresh unique id, not made yet: create() makes it, remove() may be called from then on. */
  static prepare(): Sandbox {
    // 9 characters: the link names (id + "s"/"c") stay under the kernel's 15.
    return new Sandbox(`icd${randomBytes(3).toString("hex")}`);
  }

  /**
   * Creates both namespaces and the veth pair, addressed and up. A failure
   * half-way removes what was made before it is thrown; a remove() called
   * meanwhile (a signal) waits for the step under way, and no further step starts.
   */
  async create(): Promise<void> {
    this.building = this.build();
    try {
      await this.building;
    } catch (error) {
      await this.remove();
      throw error;
    }
  }

  private async build(): Promise<void> {
    for (const ns of [this.serverNs, this.clientNs]) {
      this.refuseIfRemoving(["ip", "netns", "add", ns]);
      // Recorded once made: a name that exists already is someone else's, never removed here.
      await ip("netns", "add", ns);
      this.made.push(ns);
    }
    this.serverKey = await namespaceKey({ name: this.serverNs });
    const [serverLink, clientLink] = [`${this.id}s`, `${this.id}c`];
    this.refuseIfRemoving(["ip", "link", "add", serverLink]);
    await ip(
      "link",
      "add",
      serverLink,
      "netns",
      this.serverNs,
      "type",
      "veth",
      "peer",
      "name",
      clientLink,
      "netns",
      this.clientNs,
    );
    await configure(this.serverNs, serverLink, SERVER_ADDRESS);
    await configure(this.clientNs, clientLink, CLIENT_ADDRESS);
  }

  /**
   * Starts @command in namespace @ns (nsenter: the pins stay visible) and
   * resolves once a line of its output matches @ready.
   */
  async startIn(ns: string, command: string[], ready: RegExp): Promise<void> {
    this.refuseIfRemoving(command);
    const child = execa("nsenter", [`--net=${path.join(NETNS_DIR, ns)}`, ...command], {
      reject: false,
      buffer: false,
      stdin: "ignore",
    });
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
        reject(
          new Error(
            `${command.join(" ")} exited before it was ready: ${String(result.stderr ?? "").trim() || `exit ${result.exitCode}`}`,
          ),
        );
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
    this.refuseIfRemoving([file!, ...args]);
    // all: stdout and stderr interleaved as a terminal would show them. An intercept command gets
    // a process group of its own: a Ctrl-C at the terminal reaches the demo only, which asks the
    // command to stop once (a second interrupt would make an apply exit without rolling back).
    const child = execa(file!, args, { reject: false, all: true, stdin: "ignore", detached: graceful });
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
    this.removing = true;
    // create()'s step under way finishes (or fails) first, so that what it makes is removed too.
    await Promise.allSettled([this.building]);
    for (const { child, graceful } of this.started) child.kill(graceful ? "SIGINT" : "SIGKILL");
    await Promise.allSettled([...this.started].map(({ child }) => child));
    this.started.clear();
    for (const ns of this.made) await execa("ip", ["netns", "del", ns], { reject: false });
    if (this.serverKey !== undefined) {
      await rm(this.pins, { recursive: true, force: true });
      await rm(this.lock, { force: true });
    }
  }

  private refuseIfRemoving(command: string[]): void {
    if (this.removing) throw new Error(`not starting ${command.join(" ")}: the sandbox is being removed`);
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
