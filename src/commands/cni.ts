import { installPlugin, uninstallPlugin } from "../cni/install.js";
import { removeNodeTable } from "../cni/node-table.js";
import { NODE_TABLE_PATH, type FailurePolicy } from "../model/cni.js";
import type { CommandContext } from "./context.js";

export interface CniCommandOptions {
  binDir: string;
  confDir: string;
  failurePolicy: FailurePolicy;
}

/**
 * `intercept cni install|uninstall`: what `agent --cni` does on start and
 * on a stop without --keep, for a node without an agent (the uninstall
 * DaemonSet). Filters the plugin attached stay with their pods: they go
 * with the pods' namespaces, or `destroy` removes them.
 */
export async function cniCommand(
  context: CommandContext,
  action: "install" | "uninstall",
  options: CniCommandOptions,
): Promise<number> {
  if (action === "install") {
    const { conflist } = await installPlugin(options, {
      nodeTable: NODE_TABLE_PATH,
      failurePolicy: options.failurePolicy,
    });
    context.stdout.write(`intercept-cni installed in ${options.binDir}, chained in ${conflist}\n`);
    return 0;
  }
  await context.host.requireKernelAccess("cni uninstall");
  const changed = await uninstallPlugin(options);
  await removeNodeTable(NODE_TABLE_PATH);
  await context.host.removeNodePins();
  context.stdout.write(
    `intercept-cni removed from ${changed.length > 0 ? changed.join(", ") : "no configuration (none had it)"}; binary, node table and node programs removed\n`,
  );
  return 0;
}
