/**
 * A line echo server and its clients, for tests that follow connections
 * across policy changes. Every reply is one JSON line saying which server
 * answered (its tag) and the accepted socket's local address and port: the
 * original destination a steered connection asked for.
 *
 *   node dist/lab/echo.js serve --tag NAME [--host ADDRESS] PORT…
 *     listens on every PORT (on :: dual-stack unless --host is given),
 *     prints "ready"; a line "close" makes the server end the connection
 *     (so the server side holds the 4-tuple in TIME_WAIT), any other line
 *     is answered with {"tag","localAddress","localPort","line"};
 *   node dist/lab/echo.js connect HOST PORT [--local-port N] [--timeout MS]
 *     one long-lived connection driven over stdin/stdout: prints
 *     {"event":"connected","localPort"} or {"event":"error","message"}, then
 *     sends each stdin line and prints each reply, {"event":"closed"} when
 *     the server ends it;
 *   node dist/lab/echo.js probe HOST PORT COUNT [--timeout MS]
 *     COUNT connections one after another, each sending one line and
 *     closing first once answered (the client keeps the TIME_WAIT, so no
 *     4-tuple is reused towards the server); prints a JSON array of the
 *     replies, or {"error"} for a connection that failed.
 */
import net from "node:net";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import type { EchoReply } from "./echo-client.js";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    tag: { type: "string", default: "echo" },
    host: { type: "string" },
    "local-port": { type: "string" },
    timeout: { type: "string", default: "3000" },
  },
});
const [mode, ...rest] = positionals;
const timeoutMs = Number(values.timeout);

function serve(ports: number[]): void {
  let listening = 0;
  for (const port of ports) {
    const server = net.createServer((socket) => {
      const lines = createInterface({ input: socket });
      lines.on("line", (line) => {
        if (line === "close") {
          socket.end();
          return;
        }
        const reply: EchoReply = {
          tag: values.tag,
          localAddress: socket.localAddress!,
          localPort: socket.localPort!,
          line,
        };
        socket.write(`${JSON.stringify(reply)}\n`);
      });
      socket.on("error", () => socket.destroy()); // a client that vanished: nothing to answer
    });
    server.listen({ port, ...(values.host !== undefined && { host: values.host }) }, () => {
      if (++listening === ports.length) console.log(`ready: ${values.tag} on ${ports.join(", ")}`);
    });
  }
}

/** Opens a connection; resolves with the socket, or rejects with the error or a timeout. */
function open(host: string, port: number): Promise<net.Socket> {
  const localPort = values["local-port"] === undefined ? {} : { localPort: Number(values["local-port"]) };
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, ...localPort });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`connect timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

async function connect(host: string, port: number): Promise<void> {
  const print = (event: object) => process.stdout.write(`${JSON.stringify(event)}\n`);
  let socket: net.Socket;
  try {
    socket = await open(host, port);
  } catch (error) {
    print({ event: "error", message: (error as Error).message });
    return;
  }
  print({ event: "connected", localPort: socket.localPort });
  createInterface({ input: socket }).on("line", (line) => process.stdout.write(`${line}\n`));
  socket.on("error", (error) => print({ event: "error", message: error.message }));
  socket.on("close", () => {
    print({ event: "closed" });
    process.exit(0);
  });
  createInterface({ input: process.stdin }).on("line", (line) => socket.write(`${line}\n`));
  process.stdin.on("end", () => socket.end());
}

async function probe(host: string, port: number, count: number): Promise<void> {
  const results: (EchoReply | { error: string })[] = [];
  for (let i = 0; i < count; i++) {
    try {
      const socket = await open(host, port);
      const reply = await new Promise<EchoReply>((resolve, reject) => {
        createInterface({ input: socket }).once("line", (line) => resolve(JSON.parse(line) as EchoReply));
        socket.once("error", reject);
        socket.once("end", () => reject(new Error("closed before answering")));
        setTimeout(() => reject(new Error(`no answer after ${timeoutMs} ms`)), timeoutMs).unref();
        socket.write(`probe ${i}\n`);
      });
      socket.end();
      results.push(reply);
    } catch (error) {
      results.push({ error: (error as Error).message });
    }
  }
  process.stdout.write(`${JSON.stringify(results)}\n`);
}

const [host, port, count] = rest;
if (mode === "serve") serve(rest.map(Number));
else if (mode === "connect") await connect(host!, Number(port));
else if (mode === "probe") await probe(host!, Number(port), Number(count));
else {
  console.error(
    "usage: echo.js serve --tag NAME [--host ADDRESS] PORT… | connect HOST PORT [--local-port N] | probe HOST PORT COUNT",
  );
  process.exit(2);
}
