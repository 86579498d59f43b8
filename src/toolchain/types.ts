import type { CompiledPolicy } from "../compile/index.js";

/**
 * Where a policy's program comes from: clang on this machine, or objects
 * built elsewhere (CI) with a manifest. Either way the program has an
 * identity — the content hash plans compare with what the kernel runs —
 * and an object file apply loads.
 */
export interface ProgramBuilder {
  /** The content hash of the program @compiled builds into. */
  identify(compiled: CompiledPolicy): Promise<string>;
  /**
   * Optional: identify as a plain function, once what it needs is known
   * (clang's version). With it, a policy's own program is rendered and
   * identified only when something reads it (reconcile/desired.ts): where
   * a policy runs only composed with others, never.
   */
  identifier?(): Promise<(compiled: CompiledPolicy) => string>;
  /** The object file for @compiled, whose identity is @contentHash; checked before it is returned. */
  object(compiled: CompiledPolicy, contentHash: string): Promise<string>;
}
