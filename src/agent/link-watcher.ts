import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { execa, type ResultPromise } from "execa";
import { InterceptError } from "../errors.js";
import { inNamespace, type NetworkNamespace } from "../kernel/exec.js";

/** A dead link watcher is restarted after 100 ms, doubling per quick failure up to 30 s. */
const RETRY_MS = 100;
const RETRY_MAX_MS = 30_000;
/** A watcher that lived this long counts as healthy: the next failure starts the back-off again. */
const HEALTHY_MS = 60_000;
/** While the watcher starts, its subscription is looked for after 1 ms, doubling up to 10 ms, for 10 s at most. */
const SUBSCRIBE_POLL_MS = 1;
const SUBSCRIBE_POLL_MAX_MS = 10;
const SUBSCRIBE_TIMEOUT_MS = 10_000;
/** rtnetlink's link multicast group (RTMGRP_LINK), as /proc/<pid>/net/netlink shows groups. */
const RTMGRP_LINK = 1;
const NETLINK_ROUTE = "0";

export interface LinkWatcherEvents {
  /** Something about the links changed (or may have, while nobody listened): look again. */
  changed(): void;
  /** The watcher died (@reason) and will be restarted in @delayMs. */
  failed(reason: string, delayMs: number): void;
  /** It listens again after a failure. */
  restarted(): void;
}

/**
 * Follows a namespace's links over rtnetlink with `ip -o monitor link`,
 * entered with `nsenter --net` so the agent itself keeps seeing the pins:
 * each line it prints is an event, and any event means "look again". A C
 * process of a few MiB, where a Node one (the netlink package) took 40 MiB
 * and 150 ms of CPU to start — per namespace, for an agent serving fifty.
 *
 * `ip monitor` prints nothing when it starts listening, so start() waits
 * until the kernel's table of netlink sockets in that namespace
 * (/proc/<pid>/net/netlink) shows one of the process's own sockets in the
 * link group: from then on no link change is missed, and a reconcile that
 * starts after it sees everything before. If the process dies it is
 * restarted with back-off, and changed() runs once it listens again.
 */
export class LinkWatcher {
  private child: ResultPromise | undefined;
  private retry: NodeJS.Timeout | undefined;
  private failures = 0;
  private stopped = false;

  constructor(
    private readonly netns: NetworkNamespace,
    private readonly events: LinkWatcherEvents,
  ) {}

  /** Resolves once the watcher listens; rejects when it cannot start. */
  async start(): Promise<void> {
    const [file, args] = inNamespace(this.netns, "ip", ["-o", "monitor", "link"]);
    const child = execa(file, args, { reject: false, stdin: "ignore", stderr: "pipe", buffer: false });
    const started = performance.now();
    this.child = child;
    let [listening, exited] = [false, false];
    let stderr = "";
    child.stderr?.on("data", (chunk: Buffer) => (stderr = `${stderr}${chunk.toString()}`.slice(-500)));
    child.stdout?.on("data", () => {
      if (!this.stopped) this.events.changed(); // one chunk may hold several events: one look covers them all
    });
    // Settles once the process is gone and its output read (a missing nsenter included).
    const exit = child.then((result) => {
      exited = true;
      // Its own words, or why it could not run at all (a missing nsenter); a signal speaks for itself.
      const why =
        stderr.trim().split("\n")[0] ||
        (result.exitCode === undefined && result.signal === undefined ? result.shortMessage : "");
      return `link watcher exited (${result.exitCode ?? result.signal})${why ? `: ${why}` : ""}`;
    });
    void exit.then((reason) => {
      if (this.stopped || this.child !== child || !listening) return;
      if (performance.now() - started >= HEALTHY_MS) this.failures = 0;
      this.restart(reason);
    });
    const deadline = performance.now() + SUBSCRIBE_TIMEOUT_MS;
    for (let poll = SUBSCRIBE_POLL_MS; !subscribed(child.pid); poll = Math.min(SUBSCRIBE_POLL_MAX_MS, poll * 2)) {
      if (exited) throw new InterceptError("command-failed", `${await exit} before listening`);
      if (performance.now() > deadline) {
        child.kill();
        throw new InterceptError(
          "command-failed",
          `link watcher (ip monitor) did not listen within ${SUBSCRIBE_TIMEOUT_MS / 1000} s`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, poll));
    }
    listening = true;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retry);
    this.child?.kill();
  }

  private restart(reason: string): void {
    if (this.stopped) return;
    const delay = Math.min(RETRY_MAX_MS, RETRY_MS * 2 ** this.failures++);
    this.events.failed(reason, delay);
    this.retry = setTimeout(() => {
      this.start().then(
        () => {
          if (this.stopped) return;
          this.events.restarted();
          this.events.changed();
        },
        (error: Error) => this.restart(error.message),
      );
    }, delay);
  }
}

/**
 * Whether process @pid holds an rtnetlink socket in the link group: its
 * socket inodes (/proc/<pid>/fd) against the netlink table of its network
 * namespace (/proc/<pid>/net/netlink: sk Eth Pid Groups … Inode). Until
 * nsenter has become `ip` and `ip` has subscribed, there is none. A process
 * that is gone has none either. Read synchronously: /proc answers from
 * memory, at once, and a burst of fifty namespaces starting polls often.
 */
function subscribed(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    const sockets = new Set<string>();
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      const inode = /^socket:\[(\d+)\]$/.exec(fdTarget(pid, fd))?.[1];
      if (inode) sockets.add(inode);
    }
    if (sockets.size === 0) return false;
    const rows = readFileSync(`/proc/${pid}/net/netlink`, "utf8").split("\n").slice(1);
    return rows.some((row) => {
      const [, protocol, , groups, , , , , , inode] = row.trim().split(/\s+/);
      return (
        protocol === NETLINK_ROUTE &&
        (Number.parseInt(groups ?? "0", 16) & RTMGRP_LINK) !== 0 &&
        sockets.has(inode ?? "")
      );
    });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT" || (error as NodeJS.ErrnoException).code === "ESRCH")
      return false; // exited
    throw error;
  }
}

/** What file descriptor @fd of @pid is open on; "" when it was closed since it was listed. */
function fdTarget(pid: number, fd: string): string {
  try {
    return readlinkSync(`/proc/${pid}/fd/${fd}`);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return "";
    throw error;
  }
}
