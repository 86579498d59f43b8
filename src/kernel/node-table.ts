import { readFile } from "node:fs/promises";
import { NODE_TABLE_FORMAT, NODE_TABLE_PATH, type NodeTable } from "../model/cni.js";
import type { VersionRef } from "../model/version.js";

/**
 * The node's programs by kernel id, as the node table of `agent --cni`
 * lists them (policies' own and compositions'): a filter the CNI plugin attached runs one of these, and is
 * ours although no version pinned in the namespace has its id. Empty when
 * there is no table (not in CNI mode) or it is not one of ours.
 */
export async function readNodePrograms(file = NODE_TABLE_PATH): Promise<Map<number, VersionRef>> {
  const programs = new Map<number, VersionRef>();
  let table: Partial<NodeTable>;
  try {
    table = JSON.parse(await readFile(file, "utf8")) as Partial<NodeTable>;
  } catch (error) {
    // No table: not in CNI mode. One being replaced is renamed over, never half-written.
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return programs;
    throw error;
  }
  if (table.format !== NODE_TABLE_FORMAT || !Array.isArray(table.attachments)) return programs;
  for (const { policy, version, programIds } of table.attachments)
    for (const id of Object.values(programIds ?? {})) programs.set(id, { policy, version });
  // A table written before compositions were added has none.
  for (const { name, version, programIds } of table.compositions ?? [])
    for (const id of Object.values(programIds ?? {})) programs.set(id, { policy: name, version });
  return programs;
}
