/**
 * The demo's servers: a backend that answers "Hi", and a proxy that
 * forwards every request to the backend over loopback and adds a response
 * header, plus X-Original-Port: the port the client asked for, which a
 * steered connection's socket holds as its local port (docs/steering.md).
 */
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface DemoServerOptions {
  backendPort: number;
  proxyPort: number;
  /** "Name: value", added by the proxy to every response. */
  header: string;
}

export interface DemoServers {
  backendPort: number;
  proxyPort: number;
  close(): Promise<void>;
}

/** Starts both servers; resolves once both listen. */
export async function startDemoServers(options: DemoServerOptions): Promise<DemoServers> {
  const [headerName, ...headerValue] = options.header.split(":");
  const backend = http.createServer((_request, response) => {
    response.writeHead(200, { "Content-Type": "text/plain" });
    response.end("Hi\n");
  });
  const proxy = http.createServer((request, response) => {
    const upstream = http.request(
      {
        host: "127.0.0.1",
        port: options.backendPort,
        method: request.method,
        path: request.url,
        headers: request.headers,
      },
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
  const [backendPort, proxyPort] = await Promise.all([
    listen(backend, options.backendPort),
    listen(proxy, options.proxyPort),
  ]);
  return {
    backendPort,
    proxyPort,
    close: async () => {
      await Promise.all(
        [backend, proxy].map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
      );
    },
  };
}

function listen(server: http.Server, port: number): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, () => resolve((server.address() as AddressInfo).port));
  });
}
