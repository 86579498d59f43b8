/**
 * Load once, attach everywhere (src/datapath/shared-versions.ts), against
 * the real kernel, with `intercept apply` and `destroy` in namespaces this
 * test creates: the first namespace loads a policy's program, the next ones
 * pin that same program and its maps (one program id on every link), each
 * sharer holds its own namespace slot and its filter carries it, a sharer
 * outlives the namespace that loaded the program, a later namespace shares
 * from a sharer, and destroying the last one frees the program. Everything
 * is removed in `after`, even on failure.
 */
import assert from "node:assert/strict";
import { randomInt } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { execa } from "execa";
import { NamespaceSet } from "../../lab/namespaces.js";
import { intercept } from "../../lab/network.js";

const namespaces = NamespaceSet.unique("lo");
const keys = new Set<string>();
let scratch: string;
let policy: string;

/** A port no other test's program has: the version loaded here is this test's own, never another's to share. */
const PORT = 20_000 + randomInt(10_000);
const POLICY = `interfaces: { include: [a] }\ninterceptors:\n  - { originalPort: ${PORT}, port: ${PORT + 1} }\n`;

async function apply(name: string): Promise<void> {
  const done = await intercept("apply", "--netns", name, "--auto-approve", policy);
  assert.equal(done.exitCode, 0, done.stderr);
}

async function destroy(name: string): Promise<void> {
  const done = await intercept("destroy", "--netns", name, "--auto-approve");
  assert.equal(done.exitCode, 0, done.stderr);
}

/** The pinned claims of the one version of `p` in namespace @name's folder: slot → namespace key. */
async function claims(name: string): Promise<Map<number, string>> {
  const key = await namespaces.key(name);
  const versions = path.join("/sys/fs/bpf/intercept", key, "p");
  const { stdout: listed } = await execa("ls", [versions]);
  const pin = path.join(versions, listed.trim(), "maps", "namespace_slots");
  const { stdout } = await execa("bpftool", ["-j", "map", "dump", "pinned", pin]);
  const entries = JSON.parse(stdout) as { formatted: { key: number; value: number } }[];
  return new Map(entries.map(({ formatted }) => [formatted.key, `ns${formatted.value}`]));
}

/** The classid of intercept's ingress filter on `a` in namespace @name (tc shows it as `flowid 1:N`; none for slot 0). */
async function classid(name: string): Promise<string | undefined> {
  const { stdout } = await execa("nsenter", [
    `--net=/var/run/netns/${name}`,
    "tc",
    "filter",
    "show",
    "dev",
    "a",
    "ingress",
  ]);
  return /flowid (\S+)/.exec(stdout)?.[1];
}

async function programExists(id: number): Promise<boolean> {
  return (await execa("bpftool", ["prog", "show", "id", String(id)], { reject: false })).exitCode === 0;
}

describe("load once, attach everywhere", { timeout: 120_000 }, () => {
  before(async () => {
    scratch = await mkdtemp(path.join(tmpdir(), "intercept-load-once-"));
    policy = path.join(scratch, "p.yaml");
    await writeFile(policy, POLICY);
    for (const index of [0, 1, 2, 3]) {
      await namespaces.create(namespaces.name(index));
      keys.add(await namespaces.key(namespaces.name(index)));
    }
  });

  after(async () => {
    await namespaces.remove(keys);
    await rm(scratch, { recursive: true, force: true });
  });

  const [first, second, third, fourth] = [0, 1, 2, 3].map((index) => namespaces.name(index)) as [
    string,
    string,
    string,
    string,
  ];

  test("the first namespace loads the program; the next ones pin it, each with a slot of its own", async () => {
    for (const name of [first, second, third]) await apply(name);
    const ids = await Promise.all([first, second, third].map((name) => namespaces.ingressProgram(name, "a")));
    assert.ok(ids[0] !== undefined);
    assert.deepEqual(ids, [ids[0], ids[0], ids[0]], "one program on every link");
    const held = await claims(first);
    assert.deepEqual(
      [...held.values()].sort(),
      [await namespaces.key(second), await namespaces.key(third)].sort(),
      "the sharers hold a slot each; the namespace that loaded it, slot 0, none",
    );
    assert.deepEqual(await claims(second), held, "one claims map, pinned in every folder");
    assert.equal(await classid(first), undefined, "slot 0: no classid");
    const slotOf = (name: string) =>
      namespaces.key(name).then((key) => [...held].find(([, owner]) => owner === key)?.[0]);
    assert.equal(await classid(second), `1:${await slotOf(second)}`);
    assert.equal(await classid(third), `1:${await slotOf(third)}`);
  });

  test("a sharer outlives the namespace that loaded the program, and gives its slot back when it goes", async () => {
    const id = await namespaces.ingressProgram(second, "a");
    await destroy(first);
    assert.equal(existsSync(path.join("/sys/fs/bpf/intercept", await namespaces.key(first))), false);
    assert.equal(await namespaces.ingressProgram(second, "a"), id, "the others still run it");
    await destroy(third);
    assert.deepEqual([...(await claims(second)).values()], [await namespaces.key(second)]);
    await apply(fourth);
    assert.equal(await namespaces.ingressProgram(fourth, "a"), id, "shared from a namespace that shares it itself");
    await destroy(second);
    await destroy(fourth);
    assert.equal(await programExists(id!), false, "the last folder gone, the kernel freed the program");
  });
});
