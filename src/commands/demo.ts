import { constants } from "node:fs";
import { access, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { CLIENT_ADDRESS, Sandbox, SERVER_ADDRESS } from "../demo/sandbox.js";
import { InterceptError } from "../errors.js";
import type { CommandContext } from "./context.js";

const CLI = fileURLToPath(new URL("../../../bin/intercept.js", import.meta.url));
const SERVERS = fileURLToPath(new URL("../demo/servers-process.js", import.meta.url));
const REQUEST = fileURLToPath(new URL("../demo/request-process.js", import.meta.url));

const ORIGINAL_PORT = 8000;
const PROXY_PORT = 9000;
const HEADER = "Server: intercept";

/** The policy the demo applies, as a user would write it. */
const POLICY = `import { definePolicy } from "intercept-bpf";

// New TCP connections for port ${ORIGINAL_PORT} go to the proxy on ${PROXY_PORT}, which still sees ${ORIGINAL_PORT} as its local port.
export default definePolicy({
  interceptors: [{ originalPort: ${ORIGINAL_PORT}, port: ${PROXY_PORT}, description: "the demo's proxy" }],
});
`;

/** What the demo needs of the machine, and the package that brings each tool. */
const TOOLS: Record<string, string> = {
  ip: "iproute2",
  tc: "iproute2",
  bpftool: "bpftool",
  clang: "clang",
  nsenter: "util-linux",
  flock: "util-linux",
};

/**
 * `intercept demo`: interception seen working, in a sandbox of its own. It
 * makes a server and a client network namespace (unique names, addresses
 * from 198.18.0.0/15), starts a backend on ${ORIGINAL_PORT} and a proxy on
 * ${PROXY_PORT} in the server's, and asks for ${ORIGINAL_PORT} from the
 * client's before, during and after `intercept apply` of a one-rule policy
 * in the server's namespace. Then it removes everything, also when stopped
 * by Ctrl-C or SIGTERM. The namespace it runs in is never changed.
 * Exit 0 only if the proxy's header came back while, and only while, the
 * policy was applied.
 */
export async function demoCommand({ host, stdout, stderr }: CommandContext): Promise<number> {
  await checkPrerequisites();
  const say = (line: string) => stdout.write(`${line}\n`);
  const stage = (line: string) => say(`\n=== ${line}`);
  const scratch = await mkdtemp(path.join(tmpdir(), "intercept-demo-"));
  let sandbox: Sandbox | undefined;
  let interrupted: NodeJS.Signals | undefined;
  let cleanUp: Promise<void> | undefined;
  const removeAll = () =>
    (cleanUp ??= (async () => {
      await sandbox?.remove();
      await rm(scratch, { recursive: true, force: true });
    })());
  // Registered before the first namespace exists: a signal at any point finds everything to remove.
  const release = host.onTerminationSignals((signal) => {
    if (interrupted !== undefined) return; // Removal is under way; a second Ctrl-C must not stop it half-way.
    interrupted = signal;
    stderr.write(`\n${signal} received: removing the sandbox…\n`);
    void removeAll().then(() => {
      stderr.write(
        `Removed ${sandbox ? `${sandbox.serverNs}, ${sandbox.clientNs} and their pins` : "the sandbox"}. Demo cancelled.\n`,
      );
      process.exit(signal === "SIGINT" ? 130 : 143);
    });
  });
  try {
    sandbox = Sandbox.prepare();
    await sandbox.create();
    const policy = path.join(scratch, "demo.ts");
    await writeFile(policy, POLICY);
    say(`intercept demo: two network namespaces of its own, removed when it ends (Ctrl-C too).`);
    say(
      `  ${sandbox.serverNs}  ${SERVER_ADDRESS}  a backend on :${ORIGINAL_PORT} answering "Hi", a proxy on :${PROXY_PORT} adding "${HEADER}"`,
    );
    say(`  ${sandbox.clientNs}  ${CLIENT_ADDRESS}  asks http://${SERVER_ADDRESS}:${ORIGINAL_PORT}/`);
    say(`  pins under ${sandbox.pins}`);
    say(`\nThe policy (${policy}):\n\n${POLICY.trimEnd().replace(/^/gm, "  ")}`);
    await sandbox.startIn(
      sandbox.serverNs,
      [process.execPath, SERVERS, String(ORIGINAL_PORT), String(PROXY_PORT), HEADER, sandbox.id],
      /^ready/m,
    );
    const ask = async (when: string) => {
      stage(`${when}: GET http://${SERVER_ADDRESS}:${ORIGINAL_PORT}/ from ${sandbox!.clientNs}`);
      const response = await sandbox!.runIn(sandbox!.clientNs, [
        process.execPath,
        REQUEST,
        SERVER_ADDRESS,
        String(ORIGINAL_PORT),
        sandbox!.id,
      ]);
      say(response.output.trimEnd());
      return {
        ok: response.exitCode === 0,
        proxied: headerValue(response.output, "Server") === "intercept",
        originalPort: headerValue(response.output, "X-Original-Port"),
      };
    };
    const intercept = async (step: number, ...args: string[]) => {
      stage(`${step}. intercept ${args.join(" ")}`);
      const result = await sandbox!.runIntercept([process.execPath, CLI, ...args]);
      say(result.output.trimEnd());
      if (result.exitCode !== 0)
        throw new InterceptError(
          "command-failed",
          `intercept ${args[0]} failed in the sandbox (exit ${result.exitCode}): see its output above`,
        );
    };

    const before = await ask("1. before");
    await intercept(2, "apply", policy, "--netns", sandbox.serverNs, "--yes", "--no-color");
    const during = await ask("3. with intercept applied");
    await intercept(4, "destroy", "--netns", sandbox.serverNs, "--yes", "--no-color");
    const after = await ask("5. after destroy");

    const worked =
      before.ok &&
      !before.proxied &&
      during.ok &&
      during.proxied &&
      during.originalPort === String(ORIGINAL_PORT) &&
      after.ok &&
      !after.proxied;
    stage(
      worked
        ? `OK: port ${ORIGINAL_PORT} was answered through the proxy ("${HEADER}") only while intercept was applied; the proxy saw X-Original-Port ${ORIGINAL_PORT}.`
        : `FAILED: expected "${HEADER}" and X-Original-Port ${ORIGINAL_PORT} only while intercept was applied (see the responses above).`,
    );
    return worked ? 0 : 1;
  } finally {
    // Interrupted: the signal handler is removing the sandbox, and exits once it is done (130 or
    // 143); this path waits for that rather than return a result of a run that did not finish.
    if (interrupted === undefined) {
      await removeAll();
      release();
      stdout.write(
        `\nRemoved ${sandbox ? `${sandbox.serverNs}, ${sandbox.clientNs} and their pins` : "the sandbox"}.\n`,
      );
    } else {
      await new Promise<never>(() => {});
    }
  }
}

/** A response header's value (the request process prints the response as it came). */
function headerValue(response: string, name: string): string | undefined {
  const line = response
    .split("\n\n")[0]!
    .split("\n")
    .find((header) => header.toLowerCase().startsWith(`${name.toLowerCase()}:`));
  return line?.slice(name.length + 1).trim();
}

/** Root and the tools, checked before anything is made: one line saying all that is missing. */
async function checkPrerequisites(): Promise<void> {
  const missing: string[] = [];
  for (const [tool, pkg] of Object.entries(TOOLS)) {
    if (!(await onPath(tool)) && !missing.includes(pkg)) missing.push(pkg);
  }
  const notRoot = process.getuid?.() !== 0;
  if (!notRoot && missing.length === 0) return;
  const list = new Intl.ListFormat("en", { type: "conjunction" });
  const needs = [
    ...(notRoot ? ["root (sudo npx --no-install intercept demo)"] : []),
    ...(missing.length > 0 ? [`${list.format(missing)} installed`] : []),
  ];
  throw new InterceptError(
    notRoot ? "privilege" : "tool-missing",
    `intercept demo needs ${needs.join(", and ")}: it builds network namespaces and loads BPF programs into them`,
  );
}

async function onPath(tool: string): Promise<boolean> {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter).filter(Boolean)) {
    try {
      await access(path.join(dir, tool), constants.X_OK);
      return true;
    } catch {
      // Not in this folder: the next one on PATH is tried.
    }
  }
  return false;
}
