/**
 * `npm run demo`: the classic scenario end to end. A backend on the
 * original port answers "Hi"; a proxy forwards to it and injects a header;
 * a client in its own namespace asks for the original port. Exits 0 only
 * if the header arrives while intercept is applied, and not before or after,
 * and the proxy learned the original port from its socket (X-Original-Port).
 *   npm run demo -- [--policy FILE] [--original-port 8000] [--proxy-port 9000] [--header "Server: intercept"]
 */
import { parseArgs } from "node:util";
import { intercept, Lab } from "../lab/network.js";

const { values } = parseArgs({
  options: {
    policy: { type: "string", default: "policies/demo.ts" },
    "original-port": { type: "string", default: "8000" },
    "proxy-port": { type: "string", default: "9000" },
    header: { type: "string", default: "Server: intercept" },
  },
});

const say = (line: string) => process.stdout.write(`\n=== ${line}\n`);
const lab = await Lab.create();
const cleanUp = () => lab.destroy();
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => void cleanUp().then(() => process.exit(130)));

let success = false;
try {
  say(`namespaces ${lab.serverNs} (server) and ${lab.clientNs} (client), veth ${lab.serverLink} <-> ${lab.clientLink}`);
  await lab.startInServer(
    ["node", "dist/demo/test-server.js", "--backend-port", values["original-port"], "--proxy-port", values["proxy-port"], "--header", values.header],
    /ready/,
  );
  const headerName = values.header.split(":")[0]!.toLowerCase();
  const hasHeader = (response: string) => response.split("\r\n").some((line) => line.toLowerCase().startsWith(`${headerName}:`) && line.includes(values.header.split(":").slice(1).join(":").trim()));

  say(`before apply: curl port ${values["original-port"]} from the client`);
  const before = await lab.curl(Number(values["original-port"]));
  console.log(before.response);

  say(`intercept apply ${values.policy} --netns ${lab.serverNs}`);
  const applied = await intercept("apply", values.policy, "--netns", lab.serverNs, "--yes", "--no-color");
  console.log(applied.stdout + applied.stderr);
  if (applied.exitCode !== 0) throw new Error("apply failed");

  say(`with intercept: curl port ${values["original-port"]} from the client`);
  const during = await lab.curl(Number(values["original-port"]));
  console.log(during.response);
  const originalPort = /^x-original-port:\s*(\d+)\s*$/im.exec(during.response)?.[1];
  say(`the proxy read the original port from its socket: X-Original-Port ${originalPort ?? "(missing)"}`);

  say(`intercept destroy --netns ${lab.serverNs}`);
  const destroyed = await intercept("destroy", "--netns", lab.serverNs, "--yes", "--no-color");
  console.log(destroyed.stdout + destroyed.stderr);

  const after = await lab.curl(Number(values["original-port"]));
  let failure: string | undefined;
  if (!(before.ok && !hasHeader(before.response) && during.ok && hasHeader(during.response) && after.ok && !hasHeader(after.response))) {
    failure = `expected "${values.header}" only while intercept was applied`;
  } else if (originalPort !== values["original-port"]) {
    failure = `expected X-Original-Port ${values["original-port"]}, got ${originalPort ?? "none"} (a rewrite rule hands the proxy its own port)`;
  }
  success = failure === undefined;
  say(failure === undefined
    ? `OK: "${values.header}" came back through port ${values["original-port"]} only while intercept was applied, and the proxy saw X-Original-Port ${originalPort}`
    : `FAILED: ${failure}`);
} catch (error) {
  console.error(`demo failed: ${(error as Error).message}`);
} finally {
  await cleanUp();
}
process.exitCode = success ? 0 : 1;
