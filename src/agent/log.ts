/** One line per event: human-readable, or JSON lines with --log-format json. */
export type LogFormat = "text" | "json";

export type LogEvent =
  | "agent started"
  | "agent stopped"
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

export function createLogger(format: LogFormat, write: (line: string) => void = (line) => process.stdout.write(line)): Logger {
  return (event, message, fields = {}) => {
    const time = new Date().toISOString();
    write(format === "json" ? `${JSON.stringify({ time, event, message, ...fields })}\n` : `${time} ${event}: ${message}\n`);
  };
}
