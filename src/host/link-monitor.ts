import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { createInterface } from "node:readline";
import { execa, type ResultPromise } from "execa";
import { InterceptError } from "../errors.js";
import { numberNamespaces as number } from "../kernel/links.js";
import type { NetworkNamespace } from "../model/namespace.js";
import type { LinkEvents, Watch } from "./types.js";

/** A dead monitor is restarted after 100 ms, doubling per quick failure up to 30 s. */
const RETRY_MS = 100;
const RETRY_MAX_MS = 30_000;
/** A monitor that lived this long counts as healthy: the next failure starts the back-off again. */
const HEALTHY_MS = 60_000;
/** While the monitor starts, its subscription is looked for after 1 ms, doubling up to 10 ms, for 10 s at most. */
const SUBSCRIBE_POLL_MS = 1;
const SUBSCRIBE_POLL_MAX_MS = 10;
const SUBSCRIBE_TIMEOUT_MS = 10_000;
/** rtnetlink's link multicast group (RTMGRP_LINK), as /proc/<pid>/net/netlink shows groups. */
const RTMGRP_LINK = 1;
const NETLINK_ROUTE = "0";
/** The prefix `ip monitor … all-nsid` gives each event: the id of the namespace it happened in, or `current`. */
const EVENT_NAMESPACE = /^\[nsid (\d+|current)\]/;

/**
 * One watcher for the links of every namespace: a single `ip -o monitor
 * link all-nsid` in the agent's own namespace. Its netlink socket listens to
 * all namespace ids (NETLINK_LISTEN_ALL_NSID), so it receives the link
 * events of every namespace that has an id here, each line prefixed with
 * that id (`[nsid 3]`, or `[nsid current]` for this namespace). A
 * namespace followed by name is given an id first (what `ip netns set
 * NAME auto` does, by an rtnetlink request of this process: no process per
 * namespace), and its events are routed by id. Where one `ip monitor` per
 * namespace held 2.5 MiB each (123 MiB for fifty), this is one process of
 * about as much, however many.
 *
 * The monitor runs under `setpriv --pdeathsig KILL`: the kernel kills it
 * when the agent dies, `kill -9` included, so it is never left behind.
 * `ip monitor` prints nothing when it starts listening, so a start waits
 * until the kernel's table of netlink sockets shows the process's own
 * socket in the link group. If it dies it is restarted with back-off; every
 * follower is told (failed, then restarted and changed once it listens).
 */
export class LinkMonitor {
  /**
   * @numberNamespaces gives the named namespaces ids and answers every
   * named namespace's id (kernel/links.ts's, by default; a test's stand-in).
   */
  constructor(private readonly numberNamespaces: (names: readonly string[]) => Promise<Map<string, number>> = number) {}

  private readonly followers = new Map<string, Set<LinkEvents>>();
  /** Namespace id → its names, as the namespace directory last said (two names of one namespace share an id). */
  private ids = new Map<number, string[]>();
  /**
   * Ids that named no namespace when the ids were last learnt (a container
   * runtime's unnamed namespaces have ids too): their events are dropped
   * without asking again, until a namespace joins and the ids are learnt anew.
   */
  private readonly unnamed = new Set<number>();
  private child: ResultPromise | undefined;
  /** Settles once the current monitor listens (rejects if it cannot start). */
  private listening: Promise<void> | undefined;
  private retry: NodeJS.Timeout | undefined;
  private failures = 0;
  private closed = false;
  /** Names waiting for an id, and the numbering runs: one at a time, the next gathering whoever joined meanwhile. */
  private readonly toNumber = new Set<string>();
  private numbering: Promise<void> | undefined;
  private nextNumbering: Promise<void> | undefined;

  /** Follows @netns's links; resolves once its events reach @events. */
  async watch(netns: NetworkNamespace, events: LinkEvents): Promise<Watch> {
    this.closed = false;
    const label = netns.name ?? "";
    const set = this.followers.get(label) ?? new Set();
    this.followers.set(label, set.add(events));
    const watch = { stop: () => this.unfollow(label, events) };
    try {
      await this.start();
      if (netns.name !== undefined) await this.number(netns.name);
    } catch (error) {
      watch.stop();
      throw error;
    }
    return watch;
  }

  /** Stops the monitor, whoever follows it. */
  close(): void {
    this.closed = true;
    clearTimeout(this.retry);
    this.followers.clear();
    this.child?.kill();
    this.child = undefined;
    this.listening = undefined;
  }

  private unfollow(label: string, events: LinkEvents): void {
    const set = this.followers.get(label);
    set?.delete(events);
    if (set?.size === 0) this.followers.delete(label);
    if (this.followers.size === 0) this.close(); // nobody follows anything: no process is kept
  }

  /** Starts the monitor unless it runs; resolves once it listens. */
  private start(): Promise<void> {
    this.listening ??= this.spawn().catch((error: unknown) => {
      this.listening = undefined;
      throw error;
    });
    return this.listening;
  }

  private async spawn(): Promise<void> {
    // KILL at the agent's death (prctl PR_SET_PDEATHSIG, kept across exec): a kill -9 leaves no watcher behind.
    const child = execa("setpriv", ["--pdeathsig", "KILL", "--", "ip", "-o", "monitor", "link", "all-nsid"], {
      reject: false,
      stdin: "ignore",
      stderr: "pipe",
      buffer: false,
      extendEnv: false,
    });
    const started = performance.now();
    this.child = child;
    let [listening, exited] = [false, false];
    let stderr = "";
    child.stderr?.on("data", (chunk: Buffer) => (stderr = `${stderr}${chunk.toString()}`.slice(-500)));
    if (child.stdout) createInterface({ input: child.stdout }).on("line", (line) => this.route(line));
    const exit = child.then((result) => {
      exited = true;
      if ((result as { code?: string }).code === "ENOENT") return "link watcher: setpriv not found: install util-linux";
      const why =
        stderr.trim().split("\n")[0] ||
        (result.exitCode === undefined && result.signal === undefined ? result.shortMessage : "");
      return `link watcher exited (${result.exitCode ?? result.signal})${why ? `: ${why}` : ""}`;
    });
    void exit.then((reason) => {
      if (this.child !== child || !listening) return;
      this.child = undefined;
      this.listening = undefined;
      if (this.closed) return;
      if (performance.now() - started >= HEALTHY_MS) this.failures = 0;
      this.restart(reason);
    });
    const deadline = performance.now() + SUBSCRIBE_TIMEOUT_MS;
    for (let poll = SUBSCRIBE_POLL_MS; !subscribed(child.pid); poll = Math.min(SUBSCRIBE_POLL_MAX_MS, poll * 2)) {
      if (exited) {
        const reason = await exit;
        throw new InterceptError(
          /not found/.test(reason) ? "tool-missing" : "command-failed",
          `${reason} before listening`,
        );
      }
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

  private restart(reason: string): void {
    if (this.closed || this.followers.size === 0) return;
    const delay = Math.min(RETRY_MAX_MS, RETRY_MS * 2 ** this.failures++);
    for (const events of this.everyone()) events.failed(reason, delay);
    this.retry = setTimeout(() => {
      this.start().then(
        () => {
          for (const events of this.everyone()) {
            events.restarted();
            events.changed();
          }
        },
        (error: Error) => this.restart(error.message),
      );
    }, delay);
  }

  /** One event line: to the followers of the namespace it names (all of them, if it names none). */
  private route(line: string): void {
    const id = EVENT_NAMESPACE.exec(line)?.[1];
    if (id === undefined) {
      for (const events of this.everyone()) events.changed();
      return;
    }
    if (id === "current") return this.tell([""]);
    const names = this.ids.get(Number(id));
    if (names !== undefined) return this.tell(names);
    if (this.unnamed.has(Number(id))) return;
    // An id not seen yet (given by someone else, or reused): learn the ids again, then route it.
    void this.number().then(
      () => {
        const named = this.ids.get(Number(id));
        if (named !== undefined) this.tell(named);
        else this.unnamed.add(Number(id));
      },
      () => {
        // cannot tell whose: every follower looks again
        for (const events of this.everyone()) events.changed();
      },
    );
  }

  private tell(labels: string[]): void {
    for (const label of labels) for (const events of this.followers.get(label) ?? []) events.changed();
  }

  private everyone(): LinkEvents[] {
    return [...this.followers.values()].flatMap((set) => [...set]);
  }

  /**
   * Gives @name an id (if it has none) and learns every namespace's id; a
   * run in progress is followed by one more for everyone who asked during
   * it, so a burst of namespaces costs a few listings of the namespace
   * directory, not one each.
   */
  private async number(name?: string): Promise<void> {
    if (name !== undefined) this.toNumber.add(name);
    this.nextNumbering ??= (async () => {
      await Promise.allSettled([this.numbering]); // its failure is its own callers'
      this.numbering = this.nextNumbering;
      this.nextNumbering = undefined;
      const names = [...this.toNumber];
      this.toNumber.clear();
      const ids = new Map<number, string[]>();
      for (const [named, id] of await this.numberNamespaces(names)) ids.set(id, [...(ids.get(id) ?? []), named]);
      this.ids = ids;
      if (names.length > 0) this.unnamed.clear(); // a namespace joined: an id unnamed before may be its own now
    })();
    await this.nextNumbering;
    if (name !== undefined && ![...this.ids.values()].some((names) => names.includes(name)))
      throw new InterceptError("netns-not-found", `network namespace "${name}" has no id: it is gone`);
  }
}

/**
 * Whether process @pid holds an rtnetlink socket in the link group: its
 * socket inodes (/proc/<pid>/fd) against the netlink table of its network
 * namespace (/proc/<pid>/net/netlink: sk Eth Pid Groups … Inode). Until
 * setpriv has become `ip` and `ip` has subscribed, there is none. A process
 * that is gone has none either. Read synchronously: /proc answers from
 * memory, at once.
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
