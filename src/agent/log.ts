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
  | "error";

export interface Logger {
  (event: LogEvent, message: string, fields?: Record<string, unknown>): void;
}

/**
 * JSON lines carry every field; a text line shows the network namespace an
 * event belongs to (`applied [cni-1234]: …`), the one field a reader of a
 * many-namespace agent's log cannot do without.
 */
export function createLogger(format: LogFormat, write: (line: string) => void = (line) => process.stdout.write(line)): Logger {
  return (event, message, fields = {}) => {
    const time = new Date().toISOString();
    const where = typeof fields.namespace === "string" ? ` [${fields.namespace}]` : "";
    write(format === "json" ? `${JSON.stringify({ time, event, message, ...fields })}\n` : `${time} ${event}${where}: ${message}\n`);
  };
}

/** @log, with every line carrying the network namespace @name (none for the agent's own namespace). */
export function namespaceLogger(log: Logger, name: string | undefined): Logger {
  if (name === undefined) return log;
  return (event, message, fields = {}) => log(event, message, { namespace: name, ...fields });
}
