#!/usr/bin/env node
// Runs a command while every core is kept busy, to show that tests wait on
// events rather than on how fast this machine happens to be:
//   node scripts/under-cpu-load.mjs npm run test:e2e
// The busy loops are worker threads of this process, one per core, and end
// with the command.
import { spawn } from "node:child_process";
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";

const [command, ...args] = process.argv.slice(2);
if (!command) {
  process.stderr.write("usage: under-cpu-load.mjs COMMAND [ARG…]\n");
  process.exit(1);
}
const spin = "for (;;) { for (let i = 0; i < 1e7; i++); }";
const workers = Array.from({ length: availableParallelism() }, () => new Worker(spin, { eval: true }));
process.stderr.write(`under-cpu-load: ${workers.length} busy loops while running ${[command, ...args].join(" ")}\n`);
const child = spawn(command, args, { stdio: "inherit" });
child.on("exit", (code, signal) => {
  for (const worker of workers) void worker.terminate();
  process.exit(code ?? (signal ? 1 : 0));
});
