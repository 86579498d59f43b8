/**
 * The demo's servers as a process of their own, started by `intercept demo`
 * inside the sandbox's server namespace:
 *   node servers-process.js BACKEND_PORT PROXY_PORT HEADER SANDBOX_ID
 * Prints "ready" once both listen; exits on SIGINT or SIGTERM. SANDBOX_ID
 * is not used here: it marks the process as the sandbox's, so that what
 * the demo started can be found by its command line.
 */
import { startDemoServers } from "./servers.js";

const [backendPort, proxyPort, header] = process.argv.slice(2);
const servers = await startDemoServers({
  backendPort: Number(backendPort),
  proxyPort: Number(proxyPort),
  header: header ?? "Server: intercept",
});
process.stdout.write(`ready: backend on ${servers.backendPort}, proxy on ${servers.proxyPort}\n`);
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => process.exit(0));
