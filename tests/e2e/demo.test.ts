/** README's first command: `npm run demo` must show the proxy's header through port 8000, and clean up. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { execa } from "execa";

test("npm run demo prints a response carrying Server: intercept and exits 0", async () => {
  const demo = await execa("npm", ["run", "demo"], { reject: false });
  assert.equal(demo.exitCode, 0, `${demo.stdout}\n${demo.stderr}`);
  assert.match(demo.stdout, /\r?\nServer: intercept\r?\n/);
  assert.match(demo.stdout, /\r?\nX-Original-Port: 8000\r?\n/i);
  assert.match(demo.stdout, /=== OK: "Server: intercept" came back through port 8000 only while intercept was applied, and the proxy saw X-Original-Port 8000/);
  // The demo names its namespaces ("=== namespaces X (server) and Y (client)"): both must be gone.
  const [, server, client] = /=== namespaces (\S+) \(server\) and (\S+) \(client\)/.exec(demo.stdout) ?? [];
  assert.ok(server && client, demo.stdout);
  const left = (await execa("ip", ["netns", "list"])).stdout.split("\n").map((line) => line.split(" ")[0]);
  assert.deepEqual(left.filter((name) => name === server || name === client), [], "the demo removed its namespaces");
});
