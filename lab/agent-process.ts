import { performance } from "node:perf_hooks";
import { execa, type ResultPromise } from "execa";

/** An agent process whose JSON log lines the test can wait for. */
export class AgentProcess {
  readonly lines: Record<string, unknown>[] = [];
  private readonly child: ResultPromise;
  private waiters: (() => void)[] = [];
  private errors = "";

  /**
   * A SIGTERM gets a minute before it is made a SIGKILL: an agent removing the datapath of fifty namespaces takes seconds.
   * @env adds to the environment (a PATH with a tool shim first).
   */
  constructor(args: string[], env: Record<string, string> = {}) {
    this.child = execa("node", ["bin/intercept.js", "agent", ...args, "--log-format", "json"], {
      reject: false,
      buffer: false,
      forceKillAfterDelay: 60_000,
      env,
    });
    this.child.stderr?.on("data", (chunk: Buffer) => (this.errors += chunk.toString()));
    let pending = "";
    this.child.stdout?.on("data", (chunk: Buffer) => {
      pending += chunk.toString();
      const lines = pending.split("\n");
      pending = lines.pop()!;
      // receivedAt (performance.now) lets benchmarks time the agent's reactions.
      for (const line of lines) this.lines.push({ ...JSON.parse(line), receivedAt: performance.now() });
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  /** Resolves with the first log line (from @from on) that @matches; fails after @ms. Wakes on every line. */
  async waitFor(
    matches: (line: Record<string, unknown>) => boolean,
    from = 0,
    ms = 15_000,
  ): Promise<Record<string, unknown>> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.lines.slice(from).find(matches);
      if (found) return found;
      if (Date.now() > deadline)
        throw new Error(
          `no such log line; saw:\n${this.lines.map((l) => JSON.stringify(l)).join("\n")}\nstderr:\n${this.errors}`,
        );
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
  }

  /** Resolves when the agent exits by itself (or after stop/kill), with its exit code and standard error. */
  async exited(): Promise<{ exitCode: number | undefined; stderr: string }> {
    const { exitCode } = await this.child;
    return { exitCode, stderr: this.errors };
  }

  get pid(): number {
    return this.child.pid!;
  }

  async stop(signal: "SIGTERM" | "SIGINT" = "SIGTERM"): Promise<number | undefined> {
    this.child.kill(signal);
    return (await this.child).exitCode;
  }

  kill(): void {
    this.child.kill("SIGKILL");
  }
}
