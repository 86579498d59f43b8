import { programBuilder as chosenBuilder, type ProgramBuilder } from "../toolchain/index.js";
import { withProgress } from "./progress.js";

/**
 * `--objects DIR`: chosen in src/toolchain/ (the agent chooses the same way);
 * for the commands, each object it makes is announced on a terminal while
 * it takes (a cold clang build takes seconds).
 */
export async function programBuilder(objects: string | undefined): Promise<ProgramBuilder> {
  return withBuildProgress(await chosenBuilder(objects));
}

/** @builder, each object it makes announced while it takes. */
export function withBuildProgress(builder: ProgramBuilder): ProgramBuilder {
  return {
    identify: (compiled) => builder.identify(compiled),
    // Kept, so that a policy's own program is rendered only where it runs alone (reconcile/desired.ts).
    ...(builder.identifier && { identifier: () => builder.identifier!() }),
    object: (compiled, contentHash) =>
      withProgress(`building ${compiled.policy.name}`, () => builder.object(compiled, contentHash)),
  };
}
