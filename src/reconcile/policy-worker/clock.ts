import { LOADING_PHASES, type ReadPhase } from "../../load/read.js";
import type { PlaceState } from "./protocol.js";

/**
 * Each step's time allowance, kept by the worker as it goes (and written
 * to its PlaceRegister for the main thread, which enforces it): each file
 * has its own (and so has each policy's validation), from its first step
 * on, paused while intercept loads its own parser or compiler (not the
 * file's doing, and on a busy machine it can take seconds).
 */
export class StepClock {
  private left: number;
  /** Since when the allowance has been running (undefined: not started, or paused). */
  private since: number | undefined;
  /** The last step's file, and whether it was validation (a file's validation has an allowance of its own). */
  private file: number;
  private validating: boolean;

  constructor(
    private readonly allowanceMs: number,
    /** Where the worker starts: its place before its first step. */
    start: { phase: ReadPhase; index: number },
  ) {
    this.left = allowanceMs;
    this.file = start.index;
    this.validating = start.phase === "validating";
  }

  /** The worker began @phase of the file numbered @index at @at (ms, monotonicMs): where it is now, and until when. */
  step(phase: ReadPhase, index: number, at: number): PlaceState {
    const validating = phase === "validating";
    if (index !== this.file || validating !== this.validating) {
      this.left = this.allowanceMs;
      this.since = undefined;
    }
    this.file = index;
    this.validating = validating;
    if (!LOADING_PHASES.includes(phase)) this.since ??= at;
    else if (this.since !== undefined) {
      this.left = Math.max(0, this.left - (at - this.since));
      this.since = undefined;
    }
    const allowance =
      this.since === undefined
        ? { running: false as const, leftMs: this.left }
        : { running: true as const, until: this.since + this.left };
    return { phase, index, allowance };
  }
}
