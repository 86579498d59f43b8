/**
 * `validate` as any user in a read-only checkout: run as nobody (setpriv)
 * in a copy of the checkout that nobody may write to, with a home it cannot
 * write either. The TS policy cache goes to <tmpdir>/intercept-cache-<uid>,
 * and the checkout is left exactly as it was.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chown, cp, mkdir, mkdtemp, readdir, rm, stat, symlink, writeFile, chmod } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { execa } from "execa";

const NOBODY = 65534;
const skip =
  process.getuid?.() !== 0
    ? "needs root to switch to another user"
    : !existsSync("/usr/bin/setpriv")
      ? "needs setpriv (util-linux)"
      : false;

const scratch = await mkdtemp(path.join(tmpdir(), "intercept-unprivileged-"));
after(() => rm(scratch, { recursive: true, force: true }));

/** Every path under @dir with its size, mode and modification time. */
async function snapshot(dir: string): Promise<string> {
  const entries = (await readdir(dir, { recursive: true })).filter((entry) => !entry.startsWith("node_modules"));
  const described = await Promise.all(
    entries.sort().map(async (entry) => {
      const info = await stat(path.join(dir, entry));
      return `${entry} ${info.size} ${info.mode} ${info.mtimeMs}`;
    }),
  );
  return described.join("\n");
}

test("validate works as nobody in a read-only checkout and writes nothing into it", {
  skip,
  timeout: 60_000,
}, async () => {
  await chmod(scratch, 0o755);
  const checkout = path.join(scratch, "checkout");
  for (const part of ["bin", "dist/src", "src/api.ts", "schemas", "package.json", "policies", "examples"]) {
    await cp(part, path.join(checkout, part), { recursive: true });
  }
  await symlink(path.resolve("node_modules"), path.join(checkout, "node_modules"));
  await writeFile(
    path.join(checkout, "policies", "broken.ts"),
    'import { definePolicy } from "intercept-bpf";\nexport default definePolicy({ interceptors: [{ originalPort: 8000, port: 70000 }] });\n',
  );
  await execa("chmod", ["-R", "a-w,a+rX", checkout]);
  const temporary = path.join(scratch, "tmp");
  await mkdir(temporary);
  await chown(temporary, NOBODY, NOBODY);
  const before = await snapshot(checkout);

  const asNobody = (...args: string[]) =>
    execa(
      "setpriv",
      [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "node", "bin/intercept.js", ...args],
      {
        cwd: checkout,
        env: { PATH: process.env.PATH, HOME: checkout, TMPDIR: temporary },
        extendEnv: false,
        reject: false,
      },
    );

  for (const round of ["cache miss", "cache hit"]) {
    const valid = await asNobody("validate", "policies/demo.ts");
    assert.equal(valid.exitCode, 0, `${round}: ${valid.stderr}`);
    assert.equal(valid.stdout, "1 policy valid: policies/demo.ts");
  }
  const invalid = await asNobody("validate", "policies");
  assert.equal(invalid.exitCode, 1);
  assert.match(
    invalid.stderr,
    /^policies\/broken\.ts:2:74: error\[schema\/range\]: interceptors\[0\]\.port must be between 1 and 65535, got 70000$/m,
  );
  assert.doesNotMatch(invalid.stderr, /EACCES|^\s+at /m);

  assert.equal(await snapshot(checkout), before, "the checkout is unchanged");
  const cache = path.join(temporary, `intercept-cache-${NOBODY}`, "policies");
  const entries = await readdir(cache);
  // broken.ts is read without a problem (its port is out of range, which validation finds): both are cached.
  assert.equal(entries.filter((entry) => entry.endsWith(".json")).length, 2, "demo.ts and broken.ts are cached");
  assert.equal((await stat(cache)).uid, NOBODY);
});
