/**
 * A barrier between a test and a tool shim it put first on PATH: the shim
 * says it has reached a step (it creates a file), then waits until the test
 * releases it (creates another). A test that must act while a step is in
 * flight waits for the step and then releases it, instead of guessing with a
 * sleep how long the step will take on a busy machine.
 */
import { existsSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";

export class Gate {
  private constructor(
    /** Created by the shim when it reaches the step. */
    private readonly reachedFile: string,
    /** Created by release(); the shim waits for it. */
    private readonly releasedFile: string,
  ) {}

  /** A closed gate whose files live in @dir (made if missing). */
  static async create(dir: string): Promise<Gate> {
    await mkdir(dir, { recursive: true });
    const gate = new Gate(path.join(dir, "reached"), path.join(dir, "released"));
    await rm(gate.reachedFile, { force: true });
    await rm(gate.releasedFile, { force: true });
    return gate;
  }

  /** The shell lines a shim runs at the step: say so, then wait for release(). */
  get shellWait(): string {
    return `touch ${this.reachedFile}; while [ ! -e ${this.releasedFile} ]; do sleep 0.01; done`;
  }

  /**
   * Resolves once the shim has reached the step; fails after @ms, or as soon
   * as @gaveUp says the process driving the shim has ended without reaching it.
   */
  async reached(gaveUp: () => boolean = () => false, ms = 30_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!existsSync(this.reachedFile)) {
      if (gaveUp()) throw new Error("the process ended before it reached the gate");
      if (Date.now() > deadline) throw new Error(`the gate was not reached within ${ms} ms`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Lets every shim waiting at the gate, and any that reaches it later, go on. */
  async release(): Promise<void> {
    await writeFile(this.releasedFile, "");
  }
}
