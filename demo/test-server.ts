/**
 * The classic demo's servers: a backend that answers "Hi", and a proxy that
 * forwards every request to the backend over loopback and injects a
 * response header, plus X-Original-Port: the port the client asked for,
 * which a steered connection's socket holds as its local port
 * (docs/steering.md). Usage:
 *   node dist/demo/test-server.js [--backend-port 8000] [--proxy-port 9000] [--header "Server: intercept"]
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    "backend-port": { type: "string", default: "8000" },
    "proxy-port": { type: "string", default: "9000" },
    header: { type: "string", default: "Server: intercept" },
  },
});
const backendPort = Number(values["backend-port"]);
const proxyPort = Number(values["proxy-port"]);
const [headerName, ...headerValue] = values.header.split(":");

const backend = http.createServer((_request, response) => {
  response.writeHead(200, { "Content-Type": "text/plain" });
  response.end("Hi\n");
});

const proxy = http.createServer((request, response) => {
  const upstream = http.request(
    { host: "127.0.0.1", port: backendPort, method: request.method, path: request.url, headers: request.headers },
    (reply) => {
      response.writeHead(reply.statusCode ?? 502, {
        ...reply.headers,
        [headerName!.trim()]: headerValue.join(":").trim(),
        // Steering never rewrites the packet: the accepted socket's local port is the original destination.
        "X-Original-Port": String(request.socket.localPort),
      });
      reply.pipe(response);
    },
  );
  upstream.on("error", (error) => {
    response.writeHead(502);
    response.end(`proxy: ${error.message}\n`);
  });
  request.pipe(upstream);
});

const listen = (server: http.Server, port: number) =>
  new Promise<number>((resolve) => server.listen(port, () => resolve((server.address() as AddressInfo).port)));

const [backendBound, proxyBound] = await Promise.all([listen(backend, backendPort), listen(proxy, proxyPort)]);
console.log(`ready: backend on ${backendBound}, proxy on ${proxyBound} adding "${values.header}"`);
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => process.exit(0));
