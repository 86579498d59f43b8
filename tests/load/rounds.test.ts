/**
 * Safety in many rounds, against the real kernel, in namespaces this test
 * creates: concurrent runs on one namespace, and `kill -9` at random moments
 * of apply and of destroy, each repaired by the next run. The single-shot
 * safety tests are in tests/e2e/safety.test.ts; these rounds are the long
 * part, run by `npm run test:load` (CI runs it after `npm test`).
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { after, before, describe, test } from "node:test";
import { execa } from "execa";
import { intercept, type Lab } from "../../lab/network.js";
import { DEMO_YAML, OTHER_YAML, SafetyLab } from "../support/safety-lab.js";

let safety: SafetyLab;
let lab: Lab;

before(async () => {
  safety = await SafetyLab.create("intercept-rounds-");
  lab = safety.lab;
});

after(async () => {
  await safety?.destroy();
});

const policyFile = (name: string, text: string) => safety.policyFile(name, text);
const intercepted = () => safety.intercepted();

describe("one writer per namespace, in rounds", { concurrency: false }, () => {
  test("20 rounds of concurrent runs: the end state is one of the two runs', nothing leaks, destroy leaves nothing", async () => {
    const demo = await policyFile("demo.yaml", DEMO_YAML);
    const other = await policyFile("other.yaml", OTHER_YAML);
    for (let round = 0; round < 20; round++) {
      const kind = ["same policy", "different policies", "destroy against apply"][round % 3]!;
      const [a, b] =
        kind === "same policy"
          ? [
              ["apply", "--yes", demo],
              ["apply", "--yes", demo],
            ]
          : kind === "different policies"
            ? [
                ["apply", "--yes", demo],
                ["apply", "--yes", other],
              ]
            : [
                ["destroy", "--yes"],
                ["apply", "--yes", other],
              ];
      const results = await Promise.all([a, b].map((args) => intercept(...args, "--netns", lab.serverNs)));
      for (const result of results) assert.equal(result.exitCode, 0, `${kind}, round ${round}: ${result.stderr}`);
      const ends = await Promise.all(
        [a, b].map(async (args) =>
          args[0] === "destroy"
            ? (await intercept("status", "--netns", lab.serverNs, "--json")).stdout.includes('"programs": []')
            : (await intercept("plan", args.at(-1)!, "--netns", lab.serverNs, "--detailed-exitcode")).exitCode === 0,
        ),
      );
      assert.ok(ends.some(Boolean), `${kind}, round ${round}: the kernel is what one of the runs made`);
      const status = JSON.parse((await intercept("status", "--netns", lab.serverNs, "--json")).stdout);
      assert.ok(status.programs.length <= 1, `${kind}, round ${round}: no leaked versions`);
      assert.deepEqual(status.drift, []);
    }
    assert.equal((await intercept("destroy", "--yes", "--netns", lab.serverNs)).exitCode, 0);
    assert.equal(existsSync(`/sys/fs/bpf/intercept/${lab.pinKey}`), false, "no pins");
    const qdiscs = String((await lab.runInServer(["tc", "qdisc", "show", "dev", lab.serverLink])).stdout);
    assert.ok(!qdiscs.includes("clsact"), "no qdisc left");
  });
});

describe("killed at any moment, repaired by the next run, in rounds", { concurrency: false }, () => {
  test("20 kill -9 at random moments of an apply: the next apply repairs, and traffic flows", async () => {
    const policies = [await policyFile("demo.yaml", DEMO_YAML), await policyFile("other.yaml", OTHER_YAML)];
    for (let round = 0; round < 20; round++) {
      const policy = policies[round % 2]!;
      const apply = execa("node", ["bin/intercept.js", "apply", "--yes", policy, "--netns", lab.serverNs], {
        reject: false,
        stdin: "ignore",
      });
      await new Promise((resolve) => setTimeout(resolve, 150 + Math.random() * 500));
      apply.kill("SIGKILL");
      await apply;
      const repaired = await intercept("apply", "--yes", policy, "--netns", lab.serverNs);
      assert.equal(repaired.exitCode, 0, `round ${round}: ${repaired.stderr}`);
      assert.equal(
        (await intercept("plan", policy, "--netns", lab.serverNs, "--detailed-exitcode")).exitCode,
        0,
        `round ${round}: converged`,
      );
      assert.ok(await intercepted(), `round ${round}: traffic goes through the proxy`);
    }
  });

  test("20 kill -9 at random moments of a destroy: the next status shows whatever is left, and destroy removes it", async () => {
    const demo = await policyFile("demo.yaml", DEMO_YAML);
    const pins = `/sys/fs/bpf/intercept/${lab.pinKey}`;
    const qdiscs = async () => String((await lab.runInServer(["tc", "qdisc", "show", "dev", lab.serverLink])).stdout);
    let leftSomething = 0;
    for (let round = 0; round < 20; round++) {
      assert.equal(
        (await intercept("apply", demo, "--netns", lab.serverNs, "--yes")).exitCode,
        0,
        `round ${round}: apply`,
      );
      const destroy = execa("node", ["bin/intercept.js", "destroy", "--netns", lab.serverNs, "--yes"], {
        reject: false,
        stdin: "ignore",
      });
      await new Promise((resolve) => setTimeout(resolve, 250 + Math.random() * 350));
      destroy.kill("SIGKILL");
      await destroy;
      if (existsSync(pins) || (await qdiscs()).includes("clsact")) {
        leftSomething++;
        const status = JSON.parse((await intercept("status", "--netns", lab.serverNs, "--json")).stdout);
        const shown = status.programs.length + status.links.length + status.drift.length;
        assert.ok(
          shown > 0,
          `round ${round}: status shows what is left (${JSON.stringify(existsSync(pins) ? await readdir(pins, { recursive: true }) : [])})`,
        );
      }
      const again = await intercept("destroy", "--netns", lab.serverNs, "--yes");
      assert.equal(again.exitCode, 0, `round ${round}: ${again.stderr}`);
      assert.equal(existsSync(pins), false, `round ${round}: no pins left`);
      assert.ok(!(await qdiscs()).includes("clsact"), `round ${round}: no qdisc left`);
    }
    assert.ok(leftSomething > 0, "some kills left something behind");
  });
});
