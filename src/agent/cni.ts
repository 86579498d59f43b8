import { KernelDatapath } from "../datapath/kernel.js";
import { messageOf } from "../errors.js";
import { installPlugin, uninstallPlugin, type CniPaths } from "../cni/install.js";
import { syncNodePrograms, type NodeDatapath } from "../cni/node-programs.js";
import { nodeTable, removeNodeTable, writeNodeTable } from "../cni/node-table.js";
import { describeVersion } from "../model/version.js";
import { NODE_TABLE_PATH, type FailurePolicy } from "../model/cni.js";
import { PinLayout, removePins } from "../kernel/pins.js";
import type { Logger } from "./log.js";
import type { PolicySet } from "./policy-watcher.js";

/** How long a version the node table stopped naming stays pinned. */
const STALE_GRACE_MS = 2000;

export interface CniOptions extends CniPaths {
  failurePolicy: FailurePolicy;
  /** The plugin binary to install (default: the one this package built). */
  plugin?: string;
  nodeTable?: string;
}

/**
 * `agent --cni`: the node's side of the CNI plugin. Every policy's tc
 * programs, and those of the compositions policies are likely to form on
 * one interface, are loaded once at node level; the node table says which go on
 * which pod interfaces; the plugin binary and its conflist entry are
 * installed once the table is written (a pod never meets a plugin without
 * a table). Each policy change syncs the node programs again, so a live
 * edit reaches the pods the plugin attached them to, then rewrites the
 * table, then unpins versions it no longer names. Syncs run one at a time.
 */
export class CniMode {
  private datapath: NodeDatapath | undefined;
  private queue: Promise<void> = Promise.resolve();
  private readonly table: string;
  /** The versions the table names now: the others are unpinned after STALE_GRACE_MS. */
  private named = new Set<string>();
  private staleTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly options: CniOptions,
    private readonly namespaces: readonly string[],
    private readonly log: Logger,
  ) {
    this.table = options.nodeTable ?? NODE_TABLE_PATH;
  }

  /** Loads the node programs, writes the table and installs the plugin: a failure here fails the start. */
  async start(policies: PolicySet): Promise<void> {
    this.datapath = await KernelDatapath.node("agent");
    await this.sync(policies);
    await this.install();
  }

  private async install(): Promise<void> {
    const settings = { nodeTable: this.table, failurePolicy: this.options.failurePolicy };
    const { conflist, changed } = await installPlugin(this.options, settings, this.options.plugin);
    if (!changed) return;
    this.log(
      "cni",
      `plugin installed in ${this.options.binDir}, chained in ${conflist} (fail ${this.options.failurePolicy})`,
      { conflist },
    );
  }
  /**
   * The resync: the plugin put back where it is missing — the node's network
   * plugin may rewrite its configuration (on its own restart, say) without
   * our entry, as istio-cni's installer also watches for. Unchanged files are
   * not touched.
   */
  reinstall(): Promise<void> {
    this.queue = this.queue.then(() =>
      this.install().catch((error: unknown) =>
        this.log("error", `cni: the plugin could not be put back in the chain: ${messageOf(error)}`),
      ),
    );
    return this.queue;
  }

  /** A policy change: synced after any sync in flight; a failure is logged and the last table stays. */
  update(policies: PolicySet): Promise<void> {
    this.queue = this.queue.then(() =>
      this.sync(policies).catch((error: unknown) =>
        this.log("error", `cni: node programs not synced, the node table is unchanged: ${messageOf(error)}`),
      ),
    );
    return this.queue;
  }

  /** Unless @keep, takes the plugin out of the chain first, then the table and the node's programs. */
  async stop(keep: boolean): Promise<void> {
    clearTimeout(this.staleTimer);
    await this.queue;
    if (keep || !this.datapath) return;
    const changed = await uninstallPlugin(this.options);
    await removeNodeTable(this.table);
    await removePins(PinLayout.node().namespaceDir);
    this.log("cni", `plugin removed from ${changed.join(", ") || "no configuration"}; node programs unpinned`);
  }

  private async sync(policies: PolicySet): Promise<void> {
    const datapath = this.datapath!;
    const synced = await syncNodePrograms(datapath, policies.desired, policies.builder);
    await writeNodeTable(this.table, nodeTable(synced.attachments, synced.compositions, this.namespaces));
    this.named = new Set([
      ...synced.attachments.map((entry) => `${entry.policy}@${entry.version}`),
      ...synced.compositions.map((entry) => `${entry.name}@${entry.version}`),
    ]);
    if (synced.stale.length > 0) {
      clearTimeout(this.staleTimer);
      this.staleTimer = setTimeout(() => {
        this.queue = this.queue.then(() => this.unpinStale());
      }, STALE_GRACE_MS);
    }
    for (const { name, reason } of synced.skipped)
      this.log(
        "error",
        `cni: no node program for the composition ${name} (the plugin fails an ADD that needs it; the agent captures such pods): ${reason}`,
      );
    if (synced.loaded.length + synced.ruleWrites > 0)
      this.log(
        "cni",
        `node programs: ${synced.loaded.map(describeVersion).join(", ") || "none"} loaded, ${synced.ruleWrites} rule switches written`,
      );
  }

  /**
   * Unpins the versions the table stopped naming a grace period ago: an
   * ADD that read the previous table has opened its pins long since (the
   * plugin opens them microseconds after reading it). Filters the plugin
   * attached keep their programs: the kernel frees one when no filter runs it.
   */
  private async unpinStale(): Promise<void> {
    const datapath = this.datapath!;
    try {
      const stale = (await datapath.observeVersions()).filter(
        (p) => !this.named.has(`${p.ref.policy}@${p.ref.version}`),
      );
      for (const { ref } of stale) await datapath.unloadProgram(ref);
      if (stale.length > 0)
        this.log("cni", `node programs unpinned: ${stale.map((p) => describeVersion(p.ref)).join(", ")}`);
    } catch (error) {
      this.log("error", `cni: stale node programs not unpinned (the next change tries again): ${messageOf(error)}`);
    }
  }
}
