import { installPlugin, uninstallPlugin } from "../cni/install.js";
import { removeNodeTable } from "../cni/node-table.js";
import { PinLayout, removePins } from "../kernel/pins.js";
import { requireKernelPrivileges } from "../kernel/privileges.js";
import { NODE_TABLE_PATH, type FailurePolicy } from "../model/cni.js";

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
export async function cniCommand(action: "install" | "uninstall", options: CniCommandOptions): Promise<number> {
  if (action === "install") {
    const { conflist } = await installPlugin(options, {
      nodeTable: NODE_TABLE_PATH,
      failurePolicy: options.failurePolicy,
    });
    process.stdout.write(`intercept-cni installed in ${options.binDir}, chained in ${conflist}\n`);
    return 0;
  }
  await requireKernelPrivileges("cni uninstall");
  const changed = await uninstallPlugin(options);
  await removeNodeTable(NODE_TABLE_PATH);
  await removePins(PinLayout.node().namespaceDir);
  process.stdout.write(
    `intercept-cni removed from ${changed.length > 0 ? changed.join(", ") : "no configuration (none had it)"}; binary, node table and node programs removed\n`,
  );
  return 0;
}
