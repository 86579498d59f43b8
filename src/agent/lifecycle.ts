import type { Host } from "../host/types.js";

/** How the agent's run ended: asked to stop, or a fatal error. */
export interface Ending {
  fatal: unknown;
}

/**
 * The agent's process lifecycle, in one place: SIGTERM and SIGINT end it,
 * SIGHUP asks for a reload (the convention of nginx and Prometheus), and a
 * fatal error — including one nobody caught — ends it as a failure. The
 * host's listeners are installed at once and kept: execa's child clean-up
 * (signal-exit) re-raises a signal no other listener holds, which would
 * kill the agent before it cleans up.
 */
export class Lifecycle {
  readonly ended: Promise<Ending>;
  private end!: (ending: Ending) => void;
  private reload: () => void = () => {};
  private readonly releaseEvents: () => void;

  constructor(host: Pick<Host, "onProcessEvents">) {
    this.ended = new Promise((resolve) => (this.end = resolve));
    this.releaseEvents = host.onProcessEvents({
      terminate: () => this.end({ fatal: undefined }),
      reload: () => this.reload(),
      fatal: (error) => this.fail(error),
    });
  }

  onReload(reload: () => void): void {
    this.reload = reload;
  }

  fail(error: unknown): void {
    this.end({ fatal: error ?? new Error("unknown failure") });
  }

  release(): void {
    this.releaseEvents();
  }
}
