import type { NetworkNamespace } from "../model/namespace.js";
import { planRun } from "../reconcile/index.js";
import type { CommandContext } from "./context.js";
import { executeRun, locked, type LockWait } from "./execute.js";

export interface DestroyOptions extends LockWait {
  /** The namespace to act in; undefined when --netns was not given (then this one's). */
  netns: NetworkNamespace | undefined;
  colour: boolean;
  yes: boolean;
}

/** `intercept destroy`: the plan that removes everything intercept made in the namespace. */
export async function destroyCommand(context: CommandContext, options: DestroyOptions): Promise<number> {
  const datapath = await context.host.openDatapath(options.netns ?? {}, "destroy");
  const builder = await context.programBuilder(undefined); // never used: destroying loads nothing
  return locked(context, datapath, "intercept destroy", options, async () =>
    executeRun(context, await planRun([], datapath), datapath, builder, { ...options, verb: "destroy" }),
  );
}
