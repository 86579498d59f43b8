/**
 * Prints one JSON line per rtnetlink link event of the network namespace it
 * runs in. The agent starts it under `nsenter --net` for another namespace,
 * so the agent itself stays where the pins under /sys/fs/bpf are visible.
 */
import { createRequire } from "node:module";

// netlink is CommonJS with a native part; require keeps its types simple.
const { createRtNetlink } = createRequire(import.meta.url)("netlink") as typeof import("netlink");

// ref: keep the event loop alive for as long as we listen.
const socket = createRtNetlink({ ref: true } as Parameters<typeof createRtNetlink>[0]);
socket.addMembership("LINK");
socket.on("message", (message) => {
  for (const part of message) {
    if (part.kind !== "link") continue;
    const { data, attrs } = part as { data: { index: number }; attrs: { ifname?: string } };
    process.stdout.write(`${JSON.stringify({ ifindex: data.index, name: attrs.ifname ?? null })}\n`);
  }
});
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
// The agent ends us by closing our stdin (or by signal).
process.stdin.on("end", () => process.exit(0)).resume();
