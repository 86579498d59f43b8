/** Runs wrk and reads its report. */
import { execa } from "execa";

export interface WrkResult {
  requestsPerSecond: number;
  requests: number;
  p99Ms: number;
  socketErrors: number;
  non2xx: number;
}

export async function runWrk(
  clientNs: string,
  url: string,
  options: { seconds: number; connections: number; close: boolean },
): Promise<WrkResult> {
  const args = [
    "-t1",
    `-c${options.connections}`,
    `-d${options.seconds}s`,
    "--latency",
    ...(options.close ? ["-H", "Connection: close"] : []),
    url,
  ];
  const { stdout } = await execa("ip", ["netns", "exec", clientNs, "wrk", ...args]);
  return parseWrk(stdout);
}

export function parseWrk(output: string): WrkResult {
  const number = (pattern: RegExp) => Number(pattern.exec(output)?.[1] ?? 0);
  const p99 = /^\s*99%\s+([\d.]+)(us|ms|s)\s*$/m.exec(output);
  const scale = { us: 0.001, ms: 1, s: 1000 } as const;
  const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  return {
    requestsPerSecond: number(/Requests\/sec:\s+([\d.]+)/),
    requests: number(/(\d+) requests in/),
    p99Ms: p99 ? Number(p99[1]) * scale[p99[2] as keyof typeof scale] : NaN,
    socketErrors: errors ? errors.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0,
    non2xx: number(/Non-2xx or 3xx responses: (\d+)/),
  };
}
