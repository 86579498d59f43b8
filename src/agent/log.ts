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
}

/**
 * JSON lines carry every field; a text line shows the network namespace an
 * event belongs to (`applied [cni-1234]: …`), the one field a reader of a
 * many-namespace agent's log cannot do without.
 */
export function createLogger(
  format: LogFormat,
  write: (line: string) => void = (line) => process.stdout.write(line),
): Logger {
  return (event, message, fields = {}) => {
    const time = new Date().toISOString();
    const where = typeof fields.namespace === "string" ? ` [${fields.namespace}]` : "";
    write(
      format === "json"
        ? `${JSON.stringify({ time, level: LEVEL[event], event, message, ...fields })}\n`
        : `${time} ${event}${where}: ${message}\n`,
    );
  };
}

/** @log, with every line carrying the network namespace @name (none for the agent's own namespace). */
export function namespaceLogger(log: Logger, name: string | undefined): Logger {
  if (name === undefined) return log;
  return (event, message, fields = {}) => log(event, message, { namespace: name, ...fields });
}
