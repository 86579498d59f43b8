/**
 * Sends one HTTP request after another (a new connection each) for a while
 * and reports how they went, as JSON on stdout. Run in the client namespace:
 *   node dist/lab/request-loop.js URL DURATION_MS HEADER_NAME [LOCAL_ADDRESS]
 *
 * It says "answered" on stderr after its first answer, so a test can act
 * while it runs (waitForAnswers) without guessing how long it takes to
 * start; SIGTERM ends it after the request in flight, before DURATION_MS.
 *
 * With LOCAL_ADDRESS, connections leave from it on sequential source ports
 * (from a random start), so no 4-tuple is reused while the server may still
 * hold the last one in TIME_WAIT: the kernel's randomised port choice
 * reuses them within seconds at these rates, which the server's steering
 * cannot serve (docs/steering.md, "TIME_WAIT"). Give each loop its own
 * address (Lab.addClientAddress).
 */
import http from "node:http";

const [url, durationMs, headerName, localAddress] = process.argv.slice(2) as [
  string,
  string,
  string,
  string | undefined,
];
const result = { requests: 0, failures: 0, withoutHeader: 0, errors: [] as string[] };
const deadline = Date.now() + Number(durationMs);
const FIRST_PORT = 20_000;
const PORTS = 40_000;
let nextPort = Math.floor(Math.random() * PORTS);

function request(): Promise<void> {
  const source = localAddress ? { localAddress, localPort: FIRST_PORT + (nextPort++ % PORTS) } : {};
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: 2000, ...source }, (response) => {
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

let stopped = false;
process.on("SIGTERM", () => (stopped = true));
while (Date.now() < deadline && !stopped) {
  result.requests++;
  await request();
  if (result.requests === 1) process.stderr.write("answered\n");
}
process.stdout.write(`${JSON.stringify(result)}\n`);
