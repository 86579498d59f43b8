import { fileURLToPath } from "node:url";
import { execa, type ResultPromise } from "execa";
import { InterceptError } from "../errors.js";
import { inNamespace, type NetworkNamespace } from "../kernel/exec.js";
import type { Logger } from "./log.js";

/** A dead link watcher is restarted after 100 ms, doubling per quick failure up to 30 s. */
const RETRY_MS = 100;
const RETRY_MAX_MS = 30_000;
/** A watcher that lived this long counts as healthy: the next failure starts the back-off again. */
const HEALTHY_MS = 60_000;
const LINK_EVENTS_SCRIPT = fileURLToPath(new URL("./link-events.js", import.meta.url));

/**
 * Follows a namespace's links over rtnetlink: a small process in the
 * namespace (link-events.js, entered with nsenter so the agent itself keeps
 * seeing the pins) prints a line per link event, and each one calls
 * @onChange — any event means "look again". If the process dies it is
 * restarted with back-off, and @onChange runs once it listens again: links
 * may have changed while nobody listened.
 */
export class LinkWatcher {
  private child: ResultPromise | undefined;
  private retry: NodeJS.Timeout | undefined;
  private failures = 0;
  private stopped = false;

  constructor(
    private readonly netns: NetworkNamespace,
    private readonly log: Logger,
    private readonly onChange: () => void,
  ) {}

  /** Resolves once the watcher listens; rejects when it cannot start. */
  start(): Promise<void> {
    const [file, args] = inNamespace(this.netns, "node", [LINK_EVENTS_SCRIPT]);
    const child = execa(file, args, { reject: false, stdin: "pipe", buffer: false });
    const started = performance.now();
    this.child = child;
    return new Promise<void>((resolve, reject) => {
      let listening = false;
      let pending = "";
      child.stdout?.on("data", (chunk: Buffer) => {
        pending += chunk.toString();
        const lines = pending.split("\n");
        pending = lines.pop()!;
        for (const line of lines) {
          if (line.includes('"ready"')) {
            listening = true;
            resolve();
          } else if (!this.stopped) this.onChange();
        }
      });
      child.on("exit", (code, signal) => {
        const exit = `exited (${code ?? signal})`;
        if (!listening) return reject(new InterceptError("command-failed", `link watcher ${exit} before listening`));
        if (this.stopped) return;
        if (performance.now() - started >= HEALTHY_MS) this.failures = 0;
        this.restart(`link watcher ${exit}`);
      });
    });
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retry);
    this.child?.stdin?.end(); // link-events.js exits when its stdin ends
    this.child?.kill();
  }

  private restart(reason: string): void {
    if (this.stopped) return;
    const delay = Math.min(RETRY_MAX_MS, RETRY_MS * 2 ** this.failures++);
    this.log("error", `${reason}; restarting it in ${delay} ms`);
    this.retry = setTimeout(() => {
      this.start().then(
        () => {
          this.log("link watcher", "restarted: following link changes again");
          this.onChange();
        },
        (error: Error) => this.restart(error.message),
      );
    }, delay);
  }
}
