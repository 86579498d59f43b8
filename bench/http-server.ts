/**
 * The benchmark's HTTP server: answers every request with "Hi", keep-alive
 * as the client asks. Single-threaded Node, as a typical sidecar target.
 *   node dist/bench/http-server.js PORT
 */
import http from "node:http";

const port = Number(process.argv[2] ?? 9000);
const body = Buffer.from("Hi\n");
const server = http.createServer((_request, response) => {
  response.writeHead(200, { "Content-Type": "text/plain", "Content-Length": body.length });
  response.end(body);
});
server.keepAliveTimeout = 60_000;
server.listen(port, () => console.log(`ready on ${port}`));
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => process.exit(0));
