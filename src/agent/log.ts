/** One line per event: human-readable, or JSON lines with --log-format json. */
export type LogFormat = "text" | "json";

export type LogEvent =
  | "agent started"
  | "agent stopped"
  | "namespace seen"
  | "namespace gone"
  | "link seen"
  | "link gone"
  | "link watcher"
  | "policy change"
  | "applied"
  | "rolled back"
  | "waiting"
  | "reload"
  | "flow"
  | "flows on"
  | "cni"
  | "error";

/** How much a line matters, for log pipelines that filter or alert on it (JSON lines' `level`). */
export type LogLevel = "info" | "warn" | "error";

/** Every event's level: an error failed something; a rollback or a wait is worth a look; the rest is routine. */
const LEVEL: Record<LogEvent, LogLevel> = {
  "agent started": "info",
  "agent stopped": "info",
  "namespace seen": "info",
  "namespace gone": "info",
  "link seen": "info",
  "link gone": "info",
  "link watcher": "warn",
  "policy change": "info",
  applied: "info",
  "rolled back": "warn",
  waiting: "warn",
  reload: "info",
  flow: "info",
  "flows on": "info",
  cni: "info",
  error: "error",
};

export function levelOf(event: LogEvent): LogLevel {
  return LEVEL[event];
}

export interface Logger {
  (event: LogEvent, message: string, fields?: Record<string, unknown>): void;
  /**
   * Runs @work, the lines it logs leaving in one write at its end (the
   * agent's flow records: a write a record cost more than the record).
   * Without it, a logger writes each line as it comes.
   */
  batch?(work: () => void): void;
}

/**
 * Text of a batch written at once, at most (about): past V8's largest
 * ordinary object (128 KiB), a string is given pages of its own.
 */
const BATCH_WRITE = 64 * 1024;

/**
 * JSON lines carry every field; a text line shows the network namespace an
 * event belongs to (`applied [cni-1234]: …`), the one field a reader of a
 * many-namespace agent's log cannot do without.
 */
export function createLogger(
  format: LogFormat,
  write: (text: string) => void = (text) => process.stdout.write(text),
): Logger {
  /** The lines of the batch being run not yet written, else undefined (each line written as it comes). */
  let batched: string | undefined;
  const log: Logger = (event, message, fields = {}) => {
    const time = new Date().toISOString();
    const where = typeof fields.namespace === "string" ? ` [${fields.namespace}]` : "";
    const line =
      format === "json"
        ? `${JSON.stringify({ time, level: LEVEL[event], event, message, ...fields })}\n`
        : `${time} ${event}${where}: ${message}\n`;
    if (batched === undefined) return write(line);
    batched += line;
    if (batched.length < BATCH_WRITE) return;
    write(batched);
    batched = "";
  };
  log.batch = (work) => {
    if (batched !== undefined) return work(); // within a batch already: its lines go with the outer one's
    batched = "";
    try {
      work();
    } finally {
      const rest = batched;
      batched = undefined;
      if (rest.length > 0) write(rest);
    }
  };
  return log;
}

/** @log, with every line carrying the network namespace @name (none for the agent's own namespace). */
export function namespaceLogger(log: Logger, name: string | undefined): Logger {
  if (name === undefined) return log;
  return (event, message, fields = {}) => log(event, message, { namespace: name, ...fields });
}
