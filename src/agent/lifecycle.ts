import { onTerminationSignals } from "../kernel/exec.js";

/** How the agent's run ended: asked to stop, or a fatal error. */
export interface Ending {
  fatal: unknown;
}

/**
 * The agent's process lifecycle, in one place: SIGTERM and SIGINT end it,
 * SIGHUP asks for a reload (the convention of nginx and Prometheus), and a
 * fatal error — including one nobody caught — ends it as a failure. The
 * listeners are installed at once and kept: execa's child clean-up
 * (signal-exit) re-raises a signal no other listener holds, which would
 * kill the agent before it cleans up.
 */
export class Lifecycle {
  readonly ended: Promise<Ending>;
  private end!: (ending: Ending) => void;
  private reload: () => void = () => {};
  private readonly releaseSignals: () => void;
  private readonly onHangup = () => this.reload();
  private readonly onUncaught = (error: unknown) => this.fail(error);

  constructor() {
    this.ended = new Promise((resolve) => (this.end = resolve));
    this.releaseSignals = onTerminationSignals(() => this.end({ fatal: undefined }));
    process.on("SIGHUP", this.onHangup);
    process.on("uncaughtException", this.onUncaught);
    process.on("unhandledRejection", this.onUncaught);
  }

  onReload(reload: () => void): void {
    this.reload = reload;
  }

  fail(error: unknown): void {
    this.end({ fatal: error ?? new Error("unknown failure") });
  }

  release(): void {
    this.releaseSignals();
    process.off("SIGHUP", this.onHangup);
    process.off("uncaughtException", this.onUncaught);
    process.off("unhandledRejection", this.onUncaught);
  }
}
