/**
 * The test's side of lab/echo.ts: long-lived connections and probes made
 * from the client namespace, with the echo server's replies parsed.
 */
import { createInterface } from "node:readline";
import { execa, type ResultPromise } from "execa";
import type { Lab } from "./network.js";

/** What the echo server answers: which server, and the address the client asked for. */
export interface EchoReply {
  tag: string;
  localAddress: string;
  localPort: number;
  line: string;
}

export type ProbeResult = EchoReply | { error: string };

interface ConnectOptions {
  /** Connect from this source port (the same 4-tuple again, for TIME_WAIT). */
  localPort?: number;
  /** How long a connect may take before it counts as failed. */
  timeoutMs?: number;
}

type Line =
  | EchoReply
  | { event: "connected"; localPort: number }
  | { event: "error"; message: string }
  | { event: "closed" };

/** One connection from the client namespace, open until closed, exchanging a line at a time. */
export class EchoConnection {
  private readonly lines: Line[] = [];
  private waiting: (() => void) | undefined;
  private ended = false;
  localPort = 0;

  private constructor(private readonly child: ResultPromise) {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      this.lines.push(JSON.parse(line) as Line);
      this.waiting?.();
    });
    void child.then(() => {
      this.ended = true;
      this.waiting?.();
    });
  }

  /** Connects to @host:@port from the lab's client; rejects with the client's error when it cannot. */
  static async open(lab: Lab, host: string, port: number, options: ConnectOptions = {}): Promise<EchoConnection> {
    const args = ["connect", host, String(port), "--timeout", String(options.timeoutMs ?? 3000)];
    if (options.localPort !== undefined) args.push("--local-port", String(options.localPort));
    const child = execa("ip", ["netns", "exec", lab.clientNs, "node", "dist/lab/echo.js", ...args], {
      reject: false,
      buffer: false,
      stdin: "pipe",
    });
    const connection = new EchoConnection(child);
    const first = await connection.next();
    if ("event" in first && first.event === "connected") {
      connection.localPort = first.localPort;
      return connection;
    }
    child.kill("SIGKILL");
    throw new Error(
      "event" in first && first.event === "error" ? first.message : `unexpected first line ${JSON.stringify(first)}`,
    );
  }

  /** Sends @line and resolves with the server's reply; rejects if the connection fails or closes instead. */
  async send(line: string): Promise<EchoReply> {
    this.child.stdin!.write(`${line}\n`);
    const answer = await this.next(5000);
    if ("event" in answer) throw new Error(`no reply to ${JSON.stringify(line)}: ${JSON.stringify(answer)}`);
    return answer;
  }

  /** Asks the server to close first (it then holds the 4-tuple in TIME_WAIT); resolves once closed. */
  async closeFromServer(): Promise<void> {
    this.child.stdin!.write("close\n");
    const answer = await this.next(5000);
    if (!("event" in answer) || answer.event !== "closed")
      throw new Error(`expected the server to close, got ${JSON.stringify(answer)}`);
    await this.child;
  }

  /** Closes from the client's side. */
  async close(): Promise<void> {
    this.child.stdin!.end();
    await this.child;
  }

  kill(): void {
    this.child.kill("SIGKILL");
  }

  private async next(ms = 10_000): Promise<Line> {
    const deadline = Date.now() + ms;
    while (this.lines.length === 0) {
      if (this.ended) throw new Error("the echo client exited");
      if (Date.now() > deadline) throw new Error(`no line from the echo client within ${ms} ms`);
      await new Promise<void>((resolve) => {
        this.waiting = resolve;
        setTimeout(resolve, 100);
      });
    }
    return this.lines.shift()!;
  }
}

/** @count connections to @host:@port one after another from the lab's client, each answered or failed. */
export async function probe(lab: Lab, host: string, port: number, count = 1, timeoutMs = 3000): Promise<ProbeResult[]> {
  const run = await lab.runInClient([
    "node",
    "dist/lab/echo.js",
    "probe",
    host,
    String(port),
    String(count),
    "--timeout",
    String(timeoutMs),
  ]);
  if (run.exitCode !== 0) throw new Error(`echo probe failed: ${String(run.stderr)}`);
  return JSON.parse(String(run.stdout)) as ProbeResult[];
}
