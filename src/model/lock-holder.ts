/**
 * What a namespace lock's holder writes into the lock file, and how it is
 * read back: by whoever waits for the lock (to say for whom), and by the
 * agent's orphan collection (to know an agent held it last).
 */

/** The record in a lock file: who holds it, since when. */
export interface LockRecord {
  pid: number;
  holder: string;
  since: string;
  /**
   * The writer's pid namespace ("pid:[4026531836]"): its pid means the
   * same to a reader only in the same one (an agent in a pod without
   * hostPID has other pids than the host's `intercept apply`).
   */
  pidNamespace?: string;
}

/** What the agent writes when it serves one namespace. */
export const AGENT_LOCK_HOLDER = "intercept agent";

/** What an agent serving namespaces by --netns-match writes into the locks it holds. */
export const FLEET_LOCK_HOLDER = `${AGENT_LOCK_HOLDER} --netns-match`;

/** Whether @holder is an agent, however it serves namespaces. */
export function isAgentHolder(holder: string | undefined): boolean {
  return holder !== undefined && holder.startsWith(AGENT_LOCK_HOLDER);
}

/** The text @holder (this process) writes into a lock it took. */
export function lockRecordText(holder: string, pid = process.pid, since = new Date(), pidNamespace?: string): string {
  return JSON.stringify({ pid, holder, since: since.toISOString(), pidNamespace } satisfies LockRecord);
}

/**
 * Who wrote @text, as far as it says: undefined when it is no record (not
 * written yet, or cut short). A holder is cut to 64 characters for messages.
 */
export function readLockRecord(
  text: string,
): { pid: number | undefined; holder: string | undefined; pidNamespace?: string } | undefined {
  let written: { pid?: unknown; holder?: unknown; pidNamespace?: unknown };
  try {
    written = JSON.parse(text);
  } catch {
    return undefined; // a holder that has the lock and has not written its name yet
  }
  if (typeof written !== "object" || written === null) return undefined;
  return {
    pid: Number.isInteger(written.pid) ? (written.pid as number) : undefined,
    holder: typeof written.holder === "string" ? written.holder.slice(0, 64) : undefined,
    ...(typeof written.pidNamespace === "string" && { pidNamespace: written.pidNamespace }),
  };
}
