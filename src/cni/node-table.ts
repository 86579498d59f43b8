import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { QDISC_REGISTRY_ENTRIES } from "../datapath/kernel.js";
import { PinLayout } from "../kernel/pins.js";
import { FILTER_HANDLE, FILTER_PREF } from "../kernel/tc.js";
import { QDISC_REGISTRY, TC_PROGRAM_PREFIX } from "../model/bpf-abi.js";
import {
  INODE_MARK,
  NODE_TABLE_FORMAT,
  NODE_TABLE_FORMAT_VERSION,
  type NodeAttachment,
  type NodeComposition,
  type NodeTable,
} from "../model/cni.js";
import { namespaceKeyOf } from "../model/namespace.js";

/**
 * The node table for @attachments and @compositions: every value the plugin uses comes from
 * the modules the agent itself attaches with (the tc slot, the program
 * prefix, the registry's name, shape and pin), never from a copy.
 */
export function nodeTable(
  attachments: NodeAttachment[],
  compositions: NodeComposition[],
  namespaces: readonly string[],
): NodeTable {
  return {
    format: NODE_TABLE_FORMAT,
    formatVersion: NODE_TABLE_FORMAT_VERSION,
    filter: { priority: FILTER_PREF, handle: Number(FILTER_HANDLE) },
    programPrefix: TC_PROGRAM_PREFIX,
    qdiscRegistry: {
      pinTemplate: registryTemplate(),
      name: QDISC_REGISTRY.name,
      keySize: QDISC_REGISTRY.key.size,
      valueSize: QDISC_REGISTRY.value.size,
      entries: QDISC_REGISTRY_ENTRIES,
    },
    namespaces: [...namespaces],
    attachments,
    compositions,
  };
}

/** The registry pin of a namespace, with INODE_MARK where its inode goes (the pin layout's own path, marked). */
function registryTemplate(): string {
  const sample = 1234567;
  const pin = new PinLayout(namespaceKeyOf(sample)).qdiscs;
  const key = namespaceKeyOf(sample);
  return pin.replace(`/${key}/`, `/${key.replace(String(sample), INODE_MARK)}/`);
}

/** Writes @table to @file by a rename: the plugin reads the old table or the new, never half of one. */
export async function writeNodeTable(file: string, table: NodeTable): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o755 });
  const temporary = `${file}.${process.pid}.tmp`;
  await writeFile(temporary, `${JSON.stringify(table, null, 2)}\n`, { mode: 0o644 });
  await rename(temporary, file);
}

export async function removeNodeTable(file: string): Promise<void> {
  await rm(file, { force: true });
}
