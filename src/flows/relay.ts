/**
 * The agent's relay of flow records: a ring buffer has one consumer
 * position, so two readers would each get part of the records. The agent
 * run with `--flows` reads the namespace's ring buffer and sends every
 * record to each `watch` connected to its unix socket
 * (src/model/recent-flows.ts names it), in the flow reader's own frame
 * protocol (./frames.ts): "ready" once the watcher is counted in, then
 * every record as read, a batch per write. A watcher that falls too far
 * behind is dropped (and told so when it reads the end), never waited for.
 */
import { rm } from "node:fs/promises";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { InterceptError } from "../errors.js";
import { type ControlWord, controlFrame, OVERRUN, READY, RecordBatches, recordFrames } from "./frames.js";
import type { FlowStream } from "./reader.js";

/** Bytes a watcher may have unread before it is dropped (some thousands of records). */
const MAX_BACKLOG = 4 * 1024 * 1024;

export class FlowRelay {
  private readonly clients = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    private readonly path: string,
  ) {}

  /**
   * Listens on @path. A socket file left there by an agent killed before it
   * removed it is replaced: the caller holds the ring buffer's reader lock,
   * so no other relay of this namespace runs.
   */
  static async listen(path: string): Promise<FlowRelay> {
    await rm(path, { force: true });
    const server = createServer();
    const relay = new FlowRelay(server, path);
    server.on("connection", (socket) => relay.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => {
        server.off("error", reject);
        resolve();
      });
    });
    return relay;
  }

  /** How many watchers are connected. */
  get watchers(): number {
    return this.clients.size;
  }

  /** Sends @records to every watcher: one write each. */
  send(records: readonly Buffer[]): void {
    if (this.clients.size === 0 || records.length === 0) return;
    const frames = recordFrames(records);
    for (const socket of this.clients) {
      if (socket.writableLength > MAX_BACKLOG) {
        socket.end(controlFrame(OVERRUN));
        this.clients.delete(socket);
        continue;
      }
      socket.write(frames);
    }
  }

  async close(): Promise<void> {
    for (const socket of this.clients) socket.end();
    this.clients.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await rm(this.path, { force: true });
  }

  private accept(socket: Socket): void {
    socket.on("error", () => this.clients.delete(socket)); // a watcher gone: the agent goes on reading
    socket.on("close", () => this.clients.delete(socket));
    socket.resume(); // a watcher sends nothing; what it sends is not read
    this.clients.add(socket);
    socket.write(controlFrame(READY));
  }
}

/** The relay at @path as a stream of records; undefined when no agent relays there (no socket, or a stale one). */
export async function connectRelay(path: string): Promise<FlowStream | undefined> {
  let socket: Socket;
  try {
    socket = await new Promise<Socket>((resolve, reject) => {
      const connecting = createConnection(path);
      connecting.once("connect", () => {
        connecting.off("error", reject);
        resolve(connecting);
      });
      connecting.once("error", reject);
    });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ECONNREFUSED") return undefined; // no agent relays this namespace
    throw new InterceptError("flows-unavailable", `cannot read the agent's flow records at ${path}: ${code}`);
  }
  let stopped = false;
  let markReady: () => void = () => undefined;
  let failReady: (error: Error) => void = () => undefined;
  const ready = new Promise<void>((resolve, reject) => {
    markReady = resolve;
    failReady = reject;
  });
  const frames = socket.pipe(new RecordBatches());
  let overrun = false;
  frames.on("control", (word: ControlWord) => {
    if (word === READY) markReady();
    if (word === OVERRUN) overrun = true;
  });
  socket.on("close", () => {
    failReady(new InterceptError("flows-unavailable", "the agent closed its flow records before they were ready"));
    // A socket that ended has ended its frames (pipe); one destroyed or failed has not.
    if (!frames.writableEnded) frames.end();
  });
  socket.on("error", () => undefined); // closes the socket, which ends the frames; what ended them is said below
  async function* batches(): AsyncGenerator<Buffer[]> {
    for await (const batch of frames) yield batch as Buffer[];
    if (stopped) return;
    throw new InterceptError(
      "flows-unavailable",
      overrun
        ? "this watch fell too far behind the agent's flow records and was dropped"
        : "the agent that relayed the flow records stopped",
    );
  }
  return {
    ready,
    batches: batches(),
    async stop() {
      stopped = true;
      socket.destroy(); // its close ends the batches
    },
  };
}
