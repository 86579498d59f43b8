/**
 * The demo's servers for the lab tests (the same servers `intercept demo`
 * starts, src/demo/servers.ts): a backend that answers "Hi", and a proxy
 * that forwards to it, adding a header and X-Original-Port. Usage:
 *   node dist/demo/test-server.js [--backend-port 8000] [--proxy-port 9000] [--header "Server: intercept"]
 */
import { parseArgs } from "node:util";
import { startDemoServers } from "../src/demo/servers.js";

const { values } = parseArgs({
  options: {
    "backend-port": { type: "string", default: "8000" },
    "proxy-port": { type: "string", default: "9000" },
    header: { type: "string", default: "Server: intercept" },
  },
});
const servers = await startDemoServers({
  backendPort: Number(values["backend-port"]),
  proxyPort: Number(values["proxy-port"]),
  header: values.header,
});
console.log(`ready: backend on ${servers.backendPort}, proxy on ${servers.proxyPort} adding "${values.header}"`);
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => process.exit(0));
