/**
 * One HTTP request, run by `intercept demo` inside the sandbox's client
 * namespace:  node request-process.js ADDRESS PORT SANDBOX_ID
 * Prints the response as it came (status line, headers, body) and exits 0,
 * or prints why there was none and exits 1. SANDBOX_ID marks the process
 * as the sandbox's (see servers-process.ts).
 */
import http from "node:http";

const [address, port] = process.argv.slice(2);
const request = http.get({ host: address, port: Number(port), path: "/", timeout: 5000, agent: false }, (response) => {
  const headers: string[] = [];
  for (let i = 0; i < response.rawHeaders.length; i += 2)
    headers.push(`${response.rawHeaders[i]}: ${response.rawHeaders[i + 1]}`);
  let body = "";
  response.setEncoding("utf8");
  response.on("data", (chunk: string) => (body += chunk));
  response.on("end", () => {
    process.stdout.write(
      `HTTP/${response.httpVersion} ${response.statusCode} ${response.statusMessage}\n${headers.join("\n")}\n\n${body}`,
    );
  });
});
request.on("timeout", () => request.destroy(new Error("no response within 5 s")));
request.on("error", (error) => {
  process.stdout.write(`no response: ${error.message}\n`);
  process.exitCode = 1;
});
