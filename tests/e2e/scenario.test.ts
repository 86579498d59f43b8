/**
 * The classic scenario against the real kernel, in namespaces this test
 * creates (both ends of the veth pair) and always removes.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { execa } from "execa";
import { intercept, Lab } from "../../lab/network.js";

const hasHeader = (response: string, header: string) =>
  response.toLowerCase().split("\r\n").includes(header.toLowerCase());

let lab: Lab;
let scratch: string;

before(async () => {
  lab = await Lab.create();
  scratch = await mkdtemp(path.join(tmpdir(), "intercept-e2e-"));
  await lab.startInServer(["node", "dist/demo/test-server.js"], /ready/);
});

after(async () => {
  await lab?.destroy();
  await rm(scratch, { recursive: true, force: true });
  const namespaces = (await execa("ip", ["netns", "list"])).stdout;
  assert.ok(!namespaces.includes(lab.id), "the lab's namespaces are gone");
});

async function ourFilters(): Promise<string> {
  const shows = await Promise.all(
    ["ingress", "egress"].map((hook) =>
      execa("nsenter", [`--net=/var/run/netns/${lab.serverNs}`, "tc", "filter", "show", "dev", lab.serverLink, hook]),
    ),
  );
  return shows.map((show) => show.stdout).join("");
}

async function programIds(): Promise<number[]> {
  const status = JSON.parse((await intercept("status", "--netns", lab.serverNs, "--json")).stdout);
  return status.programs.flatMap((p: { programIds: { ingress: number; egress: number } }) => [
    p.programIds.ingress,
    p.programIds.egress,
  ]);
}

async function policyFile(name: string, text: string): Promise<string> {
  const file = path.join(scratch, name);
  await writeFile(file, text);
  return file;
}

describe("classic scenario", { concurrency: false }, () => {
  test("without interception the backend answers plainly", async () => {
    const { ok, response } = await lab.curl(8000);
    assert.ok(ok, response);
    assert.match(response, /\r\n\r\nHi$/);
    assert.ok(!hasHeader(response, "Server: intercept"));
  });

  test("apply: a request to 8000 reaches the proxy and carries its header", async () => {
    const applied = await intercept("apply", "policies/demo.ts", "--netns", lab.serverNs, "--yes", "--no-color");
    assert.equal(applied.exitCode, 0, applied.stderr);
    assert.match(applied.stdout, /Apply complete! Resources: 2 added, 0 changed, 0 destroyed\./);
    const { ok, response } = await lab.curl(8000);
    assert.ok(ok, response);
    assert.ok(hasHeader(response, "Server: intercept"), response);
    assert.match(response, /\r\n\r\nHi$/);
  });

  test("a second plan has nothing to do (detailed exit code 0)", async () => {
    const plan = await intercept(
      "plan",
      "policies/demo.ts",
      "--netns",
      lab.serverNs,
      "--detailed-exitcode",
      "--no-color",
    );
    assert.equal(plan.exitCode, 0, plan.stdout + plan.stderr);
    assert.match(plan.stdout, /^No changes\./);
  });

  test("status counts the steered connections, and shows the strategy", async () => {
    const status = JSON.parse(
      (await intercept("status", "policies/demo.ts", "--netns", lab.serverNs, "--json")).stdout,
    );
    const [rule] = status.programs[0].rules;
    assert.deepEqual(rule.rule, {
      originalPort: 8000,
      port: 9000,
      protocol: "tcp",
      family: "any",
      strategy: "steer",
      onProxyDown: "drop",
    });
    assert.equal(rule.counters.steered.packets, 1, JSON.stringify(rule));
    assert.equal(
      rule.counters.rewrittenIngress.packets + rule.counters.rewrittenEgress.packets,
      0,
      "steering rewrites nothing",
    );
    assert.deepEqual(
      status.links.map((l: { link: string }) => l.link),
      [lab.serverLink],
    );
  });

  test("disabling a rule is a live edit: same program, interception stops", async () => {
    const idsBefore = await programIds();
    const disabled = await policyFile(
      "demo.yaml",
      "interceptors:\n  - { port: 9000, originalPort: 8000, enabled: false }\n  - { port: 9443, originalPort: 8443 }\n",
    );
    const plan = await intercept("plan", disabled, "--netns", lab.serverNs, "--detailed-exitcode", "--no-color");
    assert.equal(plan.exitCode, 2);
    assert.match(plan.stdout, /~ rule\.demo\[0\] .*live edit/);
    assert.match(plan.stdout, /Plan: 0 to add, 1 to change, 0 to destroy\./);
    assert.equal((await intercept("apply", "--yes", disabled, "--netns", lab.serverNs)).exitCode, 0);
    assert.deepEqual(await programIds(), idsBefore);
    assert.ok(!hasHeader((await lab.curl(8000)).response, "Server: intercept"));
    assert.equal((await intercept("apply", "--yes", "policies/demo.ts", "--netns", lab.serverNs)).exitCode, 0);
    assert.deepEqual(await programIds(), idsBefore);
    assert.ok(hasHeader((await lab.curl(8000)).response, "Server: intercept"));
  });

  test("destroy: no header any more, and nothing of ours remains", async () => {
    const destroyed = await intercept("destroy", "--netns", lab.serverNs, "--yes");
    assert.equal(destroyed.exitCode, 0, destroyed.stderr);
    const { ok, response } = await lab.curl(8000);
    assert.ok(ok && !hasHeader(response, "Server: intercept"), response);
    assert.equal(await ourFilters(), "");
    const qdiscs = (
      await execa("nsenter", [`--net=/var/run/netns/${lab.serverNs}`, "tc", "qdisc", "show", "dev", lab.serverLink])
    ).stdout;
    assert.ok(!qdiscs.includes("clsact"), qdiscs);
    const status = JSON.parse((await intercept("status", "--netns", lab.serverNs, "--json")).stdout);
    assert.deepEqual(status.programs, []);
    assert.equal(existsSync(`/sys/fs/bpf/intercept/${lab.pinKey}`), false, "the namespace's pin directory is removed");
  });
});

describe("any port pair from a YAML policy, any header-injecting proxy", { concurrency: false }, () => {
  test("7000 → 7100 with X-Intercepted", async () => {
    await lab.startInServer(
      [
        "node",
        "dist/demo/test-server.js",
        "--backend-port",
        "7000",
        "--proxy-port",
        "7100",
        "--header",
        "X-Intercepted: yes",
      ],
      /ready/,
    );
    const policy = await policyFile("other.yaml", "interceptors:\n  - port: 7100\n    originalPort: 7000\n");
    assert.ok(!hasHeader((await lab.curl(7000)).response, "X-Intercepted: yes"));
    assert.equal((await intercept("apply", "--yes", policy, "--netns", lab.serverNs)).exitCode, 0);
    try {
      assert.ok(hasHeader((await lab.curl(7000)).response, "X-Intercepted: yes"));
      assert.ok(!hasHeader((await lab.curl(8000)).response, "Server: intercept"), "8000 is not in this policy");
    } finally {
      assert.equal((await intercept("destroy", "--yes", "--netns", lab.serverNs)).exitCode, 0);
    }
    assert.equal(await ourFilters(), "");
  });
});

describe("bad input: one-line error, non-zero exit, kernel unchanged", { concurrency: false }, () => {
  test("a namespace that does not exist", async () => {
    const result = await intercept("apply", "--yes", "policies/demo.ts", "--netns", `${lab.id}-missing`);
    assert.equal(result.exitCode, 1);
    assert.equal(
      result.stderr.trim(),
      `intercept: network namespace "${lab.id}-missing" does not exist (see \`ip netns list\`)`,
    );
  });

  test("a missing policy file", async () => {
    const result = await intercept("apply", "--yes", path.join(scratch, "absent.yaml"), "--netns", lab.serverNs);
    assert.equal(result.exitCode, 1);
    assert.match(result.stderr, /absent\.yaml:1:1: error\[load\/not-found\]: no such policy file or folder/);
    assert.equal(await ourFilters(), "");
  });

  test("an invalid policy", async () => {
    const bad = await policyFile("bad.yaml", "interceptors:\n  - { port: 0, originalPort: 8000 }\n");
    const result = await intercept("apply", "--yes", bad, "--netns", lab.serverNs);
    assert.equal(result.exitCode, 1);
    assert.match(
      result.stderr,
      /bad\.yaml:2:13: error\[schema\/range\]: interceptors\[0\]\.port must be between 1 and 65535, got 0/,
    );
    assert.equal(await ourFilters(), "");
  });

  test("a missing tool (clang)", async () => {
    // A PATH with every tool intercept uses except clang.
    const bin = path.join(scratch, "bin");
    await execa("mkdir", ["-p", bin]);
    for (const tool of ["node", "ip", "tc", "bpftool", "nsenter", "mount"]) {
      const found = (await execa("which", [tool])).stdout.trim();
      await symlink(found, path.join(bin, tool));
    }
    const result = await execa("node", ["bin/intercept.js", "apply", "policies/demo.ts", "--netns", lab.serverNs], {
      reject: false,
      env: { PATH: bin },
      extendEnv: false,
    });
    assert.equal(result.exitCode, 1);
    assert.equal(
      result.stderr.trim(),
      "intercept: clang not found: install clang and libbpf-dev (Debian: apt-get install clang llvm libbpf-dev), or build the objects where clang is with `intercept build --out DIR` and pass `--objects DIR` here",
    );
    assert.equal(await ourFilters(), "");
  });
});
