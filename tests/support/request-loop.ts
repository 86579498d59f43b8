/**
 * Sends one HTTP request after another (a new connection each) for a while
 * and reports how they went, as JSON on stdout. Run in the client namespace:
 *   node dist/tests/support/request-loop.js URL DURATION_MS HEADER_NAME
 */
import http from "node:http";

const [url, durationMs, headerName] = process.argv.slice(2) as [string, string, string];
const result = { requests: 0, failures: 0, withoutHeader: 0, errors: [] as string[] };
const deadline = Date.now() + Number(durationMs);

function request(): Promise<void> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: 2000 }, (response) => {
      response.resume();
      response.on("end", () => {
        if (response.statusCode !== 200) result.failures++;
        if (!response.headers[headerName.toLowerCase()]) result.withoutHeader++;
        resolve();
      });
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (error) => {
      result.failures++;
      if (result.errors.length < 5) result.errors.push(error.message);
      resolve();
    });
  });
}

while (Date.now() < deadline) {
  result.requests++;
  await request();
}
process.stdout.write(`${JSON.stringify(result)}\n`);
