/**
 * The docs cannot drift from the code. The plan examples in README.md and
 * docs/gitops.md are rendered here from scenarios over the fake datapath, so
 * they show only plans intercept produces; the field tables of docs/policy.md
 * are generated from the schema; the kernel-minimum table in README.md is
 * checked against minimumKernel(); and every relative link resolves.
 * `npm run test:update-golden` rewrites the generated parts on purpose.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync, statSync } from "node:fs";
import { readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";
import { minimumKernel } from "../../src/compile/index.js";
import { DIAGNOSTIC_CODES } from "../../src/diagnostics.js";
import { loadPolicySource, policyFromData } from "../../src/load/index.js";
import { renderPlan } from "../../src/plan/index.js";
import { validatePolicies } from "../../src/validate/index.js";
import { executePlan, makePlan, type DesiredPolicy } from "../../src/reconcile/index.js";
import { desiredPolicy } from "../support/desired.js";
import { FakeDatapath } from "../support/fake-datapath.js";
import { UPDATE_GOLDEN } from "../support/golden.js";
import { LAYERS } from "../support/layers.js";

const MARKER = "<!-- plan example: produced by tests/unit/docs.test.ts (npm run test:update-golden) -->";

/** The kernel of namespace "edge" with @live applied, and the plan that takes it to @wanted. */
async function planFrom(live: DesiredPolicy[], wanted: DesiredPolicy[], links: string[]): Promise<string> {
  const fake = new FakeDatapath({ name: "edge" });
  for (const link of links) fake.addLink(link);
  await executePlan(makePlan(live, await fake.observe()), fake, {
    objectFor: (hash) => ({ objectPath: `${hash}.o`, prefixes: [] }),
  });
  return renderPlan(makePlan(wanted, await fake.observe()), { colour: false });
}

/** Checks (or, updating golden files, rewrites) the fenced block after the marker in @file. */
async function assertExample(file: string, rendered: string): Promise<void> {
  const text = await readFile(file, "utf8");
  const start = text.indexOf(MARKER);
  assert.ok(start >= 0, `${file} has the plan example marker`);
  const open = text.indexOf("```\n", start) + 4;
  const close = text.indexOf("```\n", open);
  const expected = `${rendered.trimEnd()}\n`;
  if (UPDATE_GOLDEN) {
    await writeFile(file, text.slice(0, open) + expected + text.slice(close));
    return;
  }
  assert.equal(
    text.slice(open, close),
    expected,
    `${file}'s plan example differs (intended? run \`npm run test:update-golden\`)`,
  );
}

const web = (enabled: boolean) =>
  desiredPolicy(
    "web",
    [
      { originalPort: 8080, port: 15006 },
      { originalPort: 8443, port: 15006, enabled },
    ],
    { include: ["eth0", "eth1"], exclude: [] },
  );

test("README: a policy that grows a rule is replaced, and each link switched to the new version", async () => {
  const grown = desiredPolicy(
    "web",
    [
      { originalPort: 8080, port: 15006 },
      { originalPort: 8443, port: 15006 },
      { originalPort: 9090, port: 15006 },
    ],
    { include: ["eth0", "eth1"], exclude: [] },
  );
  await assertExample("README.md", await planFrom([web(true)], [grown], ["eth0", "eth1"]));
});

test("docs/gitops.md: a live edit and a new policy on another link", async () => {
  const dns = desiredPolicy("dns", [{ originalPort: 53, port: 5353, protocol: "udp" }], {
    include: ["eth2"],
    exclude: [],
  });
  await assertExample("docs/gitops.md", await planFrom([web(true)], [web(false), dns], ["eth0", "eth1", "eth2"]));
});

test("docs/policy.md: the field tables are the ones generated from schemas/policy.schema.json", async () => {
  // A plain .mjs script (run by hand too), imported by path: it has no type declarations.
  const generator = await import(pathToFileURL(path.resolve("scripts/generate-policy-docs.mjs")).href);
  const schema: unknown = JSON.parse(await readFile("schemas/policy.schema.json", "utf8"));
  const page = await readFile("docs/policy.md", "utf8");
  const expected: string = generator.withFields(page, generator.renderFields(schema));
  if (UPDATE_GOLDEN) {
    await writeFile("docs/policy.md", expected);
    return;
  }
  assert.equal(
    page,
    expected,
    "docs/policy.md's field tables differ from the schema (intended? run `npm run test:update-golden`)",
  );
});

const CODES_BEGIN =
  "<!-- BEGIN diagnostic codes: generated from DIAGNOSTIC_CODES in src/diagnostics.ts by tests/unit/docs.test.ts; do not edit -->";
const CODES_END = "<!-- END diagnostic codes -->";

test("docs/policy.md: the diagnostic codes table lists every code of src/diagnostics.ts, with its meaning", async () => {
  const page = await readFile("docs/policy.md", "utf8");
  const start = page.indexOf(CODES_BEGIN);
  const end = page.indexOf(CODES_END);
  assert.ok(start >= 0 && end > start, "docs/policy.md has the diagnostic codes block");
  const rows = Object.entries(DIAGNOSTIC_CODES).map(
    ([code, meaning]) => `| \`${code}\` | ${meaning.replace(/\|/g, "\\|")} |`,
  );
  const block = ["| code | what it reports |", "| --- | --- |", ...rows].join("\n");
  const expected = `${page.slice(0, start + CODES_BEGIN.length)}\n\n${block}\n\n${page.slice(end)}`;
  if (UPDATE_GOLDEN) {
    await writeFile("docs/policy.md", expected);
    return;
  }
  assert.equal(
    page,
    expected,
    "docs/policy.md's diagnostic codes differ from src/diagnostics.ts (intended? run `npm run test:update-golden`)",
  );
});

const KERNEL_MARKER =
  "<!-- kernel minimum: checked by tests/unit/docs.test.ts against minimumKernel() in src/compile/index.ts -->";

/** One policy for each row of the kernel-minimum table, by the row's first cell. */
const KERNEL_ROWS: Record<string, object> = {
  "steer rules": { interceptors: [{ originalPort: 8000, port: 9000 }] },
  "rewrite rules": { interceptors: [{ originalPort: 53, port: 5353, protocol: "udp" }] },
  "steer and rewrite rules": {
    interceptors: [
      { originalPort: 8000, port: 9000 },
      { originalPort: 53, port: 5353, protocol: "udp" },
    ],
  },
  "outbound capture only": {
    outbound: { cgroups: ["app.slice"], exempt: { uids: [1337] }, rules: [{ originalPort: 5432, port: 15001 }] },
  },
  "steer rules and outbound capture": {
    interceptors: [{ originalPort: 8000, port: 9000 }],
    outbound: { cgroups: ["app.slice"], exempt: { uids: [1337] }, rules: [{ originalPort: 5432, port: 15001 }] },
  },
};

/** The rows of the Markdown table that follows @marker in @text: each row's cells, header and rule left out. */
function tableAfter(text: string, marker: string): string[][] {
  const start = text.indexOf(marker);
  assert.ok(start >= 0, `the marker ${marker} is there`);
  const lines = text
    .slice(start + marker.length)
    .trimStart()
    .split("\n");
  const table = lines.slice(
    0,
    lines.findIndex((line) => !line.startsWith("|")),
  );
  return table.slice(2).map((line) =>
    line
      .split("|")
      .slice(1, -1)
      .map((cell) => cell.trim()),
  );
}

test("README: the kernel-minimum table says what minimumKernel() computes for each kind of policy", async () => {
  const rows = tableAfter(await readFile("README.md", "utf8"), KERNEL_MARKER);
  assert.deepEqual(
    rows.map(([label]) => label).sort(),
    Object.keys(KERNEL_ROWS).sort(),
    "one row for each kind of policy the test knows",
  );
  for (const [label, kernel] of rows) {
    const { policies, diagnostics } = validatePolicies([
      policyFromData(`kernel-table.yaml`, { name: "row", ...KERNEL_ROWS[label!] }),
    ]);
    assert.deepEqual(diagnostics, [], label);
    assert.equal(kernel, minimumKernel(policies[0]!), `README's kernel minimum for "${label}"`);
  }
});

/** README.md and every Markdown page under docs/. */
function markdownFiles(): string[] {
  const walk = (dir: string): string[] =>
    readdirSync(dir).flatMap((name) => {
      const file = path.join(dir, name);
      return statSync(file).isDirectory() ? walk(file) : name.endsWith(".md") ? [file] : [];
    });
  return ["README.md", ...walk("docs")];
}

/** The Markdown links of @text, outside fenced code blocks and inline code. */
function linksOf(text: string): string[] {
  const prose = text.replace(/^```[\s\S]*?^```/gm, "").replace(/`[^`\n]*`/g, "");
  return [...prose.matchAll(/\[[^\]]*\]\(([^)\s]+)\)/g)].map((match) => match[1]!);
}

/** The anchors GitHub makes for @text's headings (github-slugger's rule), and its explicit ids. */
function anchorsOf(text: string): Set<string> {
  const anchors = new Set<string>();
  const prose = text.replace(/^```[\s\S]*?^```/gm, "");
  for (const [, heading] of prose.matchAll(/^#{1,6} (.+)$/gm)) {
    const words = heading!.replace(/\[([^\]]*)\]\([^)]*\)/g, "$1").toLowerCase();
    const base = words.replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, "").replace(/ /g, "-");
    let slug = base;
    for (let n = 1; anchors.has(slug); n++) slug = `${base}-${n}`;
    anchors.add(slug);
  }
  for (const [, id] of text.matchAll(/<a id="([^"]+)"><\/a>/g)) anchors.add(id!);
  return anchors;
}

test("README and docs: every relative link resolves inside the repository, anchors included", async () => {
  const root = path.resolve(".");
  const broken: string[] = [];
  for (const file of markdownFiles()) {
    for (const link of linksOf(await readFile(file, "utf8"))) {
      if (/^[a-z]+:/i.test(link)) continue;
      const [target, anchor] = link.split("#") as [string, string | undefined];
      const resolved = target === "" ? path.resolve(file) : path.resolve(path.dirname(file), target);
      if (path.relative(root, resolved).startsWith("..")) broken.push(`${file}: ${link} leads outside the repository`);
      else if (!existsSync(resolved)) broken.push(`${file}: ${link} does not exist`);
      else if (
        anchor !== undefined &&
        resolved.endsWith(".md") &&
        !anchorsOf(await readFile(resolved, "utf8")).has(anchor)
      ) {
        broken.push(`${file}: ${link} names no heading of ${path.relative(root, resolved)}`);
      }
    }
  }
  assert.deepEqual(broken, []);
});

test("docs/benchmarks.md links nowhere outside the repository", async () => {
  const outside = linksOf(await readFile("docs/benchmarks.md", "utf8")).filter((link) => /^[a-z]+:/i.test(link));
  assert.deepEqual(outside, []);
});

/** The policies shown in @text: fenced YAML and TS blocks that hold interceptors, outbound or definePolicy. */
function policyExamples(text: string): { language: "yaml" | "ts"; body: string; line: number }[] {
  return [...text.matchAll(/^```(yaml|ts)\n([\s\S]*?)^```/gm)]
    .filter(([, , body]) => /^(interceptors|outbound):|definePolicy\(/m.test(body!))
    .map((match) => ({
      language: match[1] as "yaml" | "ts",
      body: match[2]!,
      line: text.slice(0, match.index).split("\n").length,
    }));
}

test("README and docs: every policy example is valid", async () => {
  const problems: string[] = [];
  let examples = 0;
  for (const file of markdownFiles()) {
    for (const { language, body, line } of policyExamples(await readFile(file, "utf8"))) {
      examples++;
      // A TS fragment without its import is the body of a policy file: give it the file's first line.
      const source =
        language === "ts" && !body.includes("import ")
          ? `import { definePolicy } from "intercept-bpf";\n${body}`
          : body;
      const loaded = await loadPolicySource(`example.${language}`, source);
      const { diagnostics } = validatePolicies(loaded.policies);
      for (const diagnostic of [...loaded.diagnostics, ...diagnostics])
        problems.push(`${file}:${line}: ${diagnostic.code}: ${diagnostic.message}`);
    }
  }
  assert.ok(examples >= 8, `found the examples (${examples})`);
  assert.deepEqual(problems, []);
});

test("docs/internals.md: the folder map names every folder and file of src/", async () => {
  const internals = await readFile(new URL("../../../docs/internals.md", import.meta.url), "utf8");
  const map = internals.slice(internals.indexOf("## The folder map"));
  const entries = await readdir(new URL("../../../src/", import.meta.url), { withFileTypes: true });
  const missing = entries
    .map((entry) => (entry.isDirectory() ? `\`src/${entry.name}/\`` : `\`src/${entry.name}\``))
    .filter((name) => !map.includes(name));
  assert.deepEqual(missing, [], "add them to the folder map in docs/internals.md");
});

test("README.md: the folder map draws every unit of src/ in its layer, top to bottom", async () => {
  const readme = await readFile(new URL("../../../README.md", import.meta.url), "utf8");
  const section = readme.slice(readme.indexOf("## How it works"));
  const diagram = section.slice(section.indexOf("```mermaid"), section.indexOf("```\n\n"));
  // One box a line (`id["…"]`), topmost (cli) first; each box names its units as `src/NAME/` or `src/NAME.ts`.
  const boxes = diagram
    .split("\n")
    .filter((line) => /^\s+\w+\["/.test(line))
    .map((line) => [...line.matchAll(/src\/([\w-]+(?:\.ts)?)\/?/g)].map((match) => match[1]).sort());
  const layersTopDown = [...LAYERS].reverse().map((units) => [...units].sort());
  assert.deepEqual(boxes, layersTopDown, "README.md's folder map and tests/support/layers.ts disagree");
  const entries = await readdir(new URL("../../../src/", import.meta.url), { withFileTypes: true });
  const drawn = new Set(boxes.flat());
  const missing = entries.map((entry) => entry.name).filter((name) => !drawn.has(name));
  assert.deepEqual(missing, [], "every folder and top-level file of src/ is in a layer");
});
