/**
 * CNI mode: what the agent (`intercept agent --cni`) and the chained CNI
 * plugin (cni/, in C) share. The agent writes the node table; the plugin
 * reads it on every ADD, DEL and CHECK and takes every value it uses from
 * it (the tc slot, the program-name prefix, the qdisc registry's shape),
 * so nothing of this model is repeated in C but the table's format name.
 */
import type { Hook } from "./hooks.js";

/** The plugin's binary name, and the `type` of its entry in a conflist. */
export const CNI_PLUGIN_TYPE = "intercept-cni";

/** The runtime's CNI folders, as kubelet and containerd have them by default. */
export const DEFAULT_CNI_BIN_DIR = "/opt/cni/bin";
export const DEFAULT_CNI_CONF_DIR = "/etc/cni/net.d";

/** Where the agent keeps what the plugin reads. */
export const CNI_RUN_DIR = "/run/intercept/cni";
/** The node table's default path (cni/cni.c's DEFAULT_NODE_TABLE says the same; a unit test checks). */
export const NODE_TABLE_PATH = `${CNI_RUN_DIR}/node-table.json`;

export const NODE_TABLE_FORMAT = "intercept-cni-node-table";
export const NODE_TABLE_FORMAT_VERSION = 1;

/**
 * What the plugin does with a pod whose capture cannot be set up. Set in
 * the plugin's conflist entry (`failurePolicy`), not in the node table: the
 * plugin needs it most when the table cannot be read.
 */
export type FailurePolicy = "closed" | "open";
export const FAILURE_POLICIES: readonly FailurePolicy[] = ["closed", "open"];

/** The mark a registry pin template holds where the namespace's inode goes. */
export const INODE_MARK = "{inode}";

/** One policy's node-level programs, and the names of the links it selects. */
export interface NodeAttachment {
  policy: string;
  version: string;
  contentHash: string;
  /** The policy's `namespaces` globs; null: every namespace the agent serves. */
  namespaces: string[] | null;
  /** The policy's `interfaces` globs; include null: every interface. */
  include: string[] | null;
  exclude: string[];
  /** The pinned program per hook (paths below the node's pin folder). */
  programs: Partial<Record<Hook, string>>;
  /** The kernel's id of each program: how the agent recognises a filter the plugin attached. */
  programIds: Partial<Record<Hook, number>>;
}

/**
 * The node's program for a composition: the policies that select one
 * interface together (src/model/composition.ts). The plugin looks one up
 * when two or more attachments select an interface; a set the table does
 * not list fails the ADD (CNI code 101) as before.
 */
export interface NodeComposition {
  /** The composition's name (`db+web`): its program's pin folder. */
  name: string;
  /** Its policies, sorted: the set the plugin compares with the attachments that select an interface. */
  policies: string[];
  version: string;
  contentHash: string;
  programs: Partial<Record<Hook, string>>;
  programIds: Partial<Record<Hook, number>>;
}

/** The node table, as written to NODE_TABLE_PATH (atomically: a rename). */
export interface NodeTable {
  format: typeof NODE_TABLE_FORMAT;
  formatVersion: typeof NODE_TABLE_FORMAT_VERSION;
  /** The tc slot the agent attaches in: the plugin attaches (and replaces) only there. */
  filter: { priority: number; handle: number };
  /** Our programs' names begin with it: a filter in our slot running another program is not ours. */
  programPrefix: string;
  /** The namespace's registry of clsact qdiscs intercept made, which the plugin records its own in. */
  qdiscRegistry: { pinTemplate: string; name: string; keySize: number; valueSize: number; entries: number };
  /** Globs of the namespace names the agent serves (--netns-match): the plugin leaves others alone. */
  namespaces: string[];
  attachments: NodeAttachment[];
  /**
   * The compositions the node loaded. Added within format version 1: a
   * plugin that predates it ignores the field (and fails such an interface
   * with code 101, as it did), so an upgrade's table suits either binary.
   */
  compositions: NodeComposition[];
}
