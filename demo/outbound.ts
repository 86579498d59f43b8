/**
 * `npm run demo:outbound`: outbound capture end to end. An application in a
 * cgroup connects to a "remote" server in another network namespace; with
 * intercept applied its connection lands on a local proxy instead, which
 * reads the original destination with getsockopt(SO_ORIGINAL_DST), prints
 * it, and forwards there. Exits 0 only if the connection went through the
 * proxy while intercept was applied, and directly before and after.
 * Everything it makes (namespaces, cgroups, processes, pins) is removed.
 *   npm run demo:outbound -- [--port 8080] [--proxy-port 15001]
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { LabCgroup, OUTBOUND_HELPER } from "../lab/cgroup.js";
import { CLIENT_ADDRESS, intercept, Lab } from "../lab/network.js";

const { values } = parseArgs({
  options: { port: { type: "string", default: "8080" }, "proxy-port": { type: "string", default: "15001" } },
});
const port = values.port;
const proxyPort = values["proxy-port"];
const remote = CLIENT_ADDRESS;

const say = (line: string) => process.stdout.write(`\n=== ${line}\n`);
const lab = await Lab.create();
const cgroup = await LabCgroup.create(["app", "proxy"], "intercept-demo").catch(async (error: unknown) => {
  await lab.destroy();
  throw error;
});
const scratch = await mkdtemp(path.join(tmpdir(), "intercept-demo-"));
const cleanUp = async () => {
  await lab.destroy(); // intercept destroy first: the programs leave the cgroups
  await cgroup.destroy();
  await rm(scratch, { recursive: true, force: true });
};
for (const signal of ["SIGINT", "SIGTERM"] as const)
  process.on(signal, () => void cleanUp().then(() => process.exit(130)));

/** The application: one connection from the app cgroup in the host namespace; what came back. */
async function application(): Promise<string> {
  const result = await cgroup.run("app", lab.serverNs, ["python3", OUTBOUND_HELPER, "client", remote, port]);
  const response = (JSON.parse(result.stdout || "{}") as { response?: string | null }).response ?? result.stderr;
  console.log(response.trimEnd());
  return response;
}

let success = false;
try {
  const host = lab.serverNs;
  say(
    `host namespace ${host} (the application and the proxy), "remote" namespace ${lab.clientNs} (${remote}); cgroups ${cgroup.path("app")} and ${cgroup.path("proxy")} under ${cgroup.root}`,
  );
  await cgroup.start(undefined, lab.clientNs, ["python3", OUTBOUND_HELPER, "server", "--port", port], /server ready/);
  await cgroup.start(
    "proxy",
    host,
    ["python3", OUTBOUND_HELPER, "proxy", "--port", proxyPort, "--log"],
    /proxy ready/,
    (line) => {
      const entry = JSON.parse(line) as { original?: [string, number]; error?: string };
      if (entry.original)
        console.log(`[proxy] SO_ORIGINAL_DST says this connection was for ${entry.original[0]}:${entry.original[1]}`);
      if (entry.error) console.log(`[proxy] ${entry.error}`);
    },
  );

  say(`before apply: the application in ${cgroup.path("app")} connects to ${remote}:${port}`);
  const before = await application();

  const policy = path.join(scratch, "outbound.yaml");
  await writeFile(
    policy,
    [
      "name: demo_outbound",
      "outbound:",
      `  cgroups: ["${cgroup.path("app")}"]`,
      `  exempt: { cgroups: ["${cgroup.path("proxy")}"] }   # the proxy's own connections go direct`,
      "  rules:",
      `    - originalPort: ${port}`,
      `      port: ${proxyPort}`,
      "",
    ].join("\n"),
  );
  say(`intercept apply ${policy} --netns ${host}`);
  const applied = await intercept("apply", policy, "--netns", host, "--yes", "--no-color");
  console.log(applied.stdout + applied.stderr);
  if (applied.exitCode !== 0) throw new Error("apply failed");

  say(`with intercept: the same application connects to ${remote}:${port} again`);
  const during = await application();

  say(`intercept status --netns ${host}`);
  console.log((await intercept("status", policy, "--netns", host)).stdout);

  say(`intercept destroy --netns ${host}`);
  const destroyed = await intercept("destroy", "--netns", host, "--yes", "--no-color");
  console.log(destroyed.stdout + destroyed.stderr);
  const after = await application();

  const direct = (response: string) => response.startsWith("server ");
  success = direct(before) && during.startsWith(`proxy ${remote} ${port}\nserver `) && direct(after);
  say(
    success
      ? `OK: the connection to ${remote}:${port} went through the proxy on ${proxyPort} only while intercept was applied, and the proxy read its original destination`
      : "FAILED: expected the proxy only while intercept was applied",
  );
} catch (error) {
  console.error(`demo failed: ${(error as Error).message}`);
} finally {
  await cleanUp();
}
process.exitCode = success ? 0 : 1;
