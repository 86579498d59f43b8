import { readFile, writeFile } from "node:fs/promises";
import assert from "node:assert/strict";

/** UPDATE_GOLDEN=1 (npm run test:update-golden) rewrites expected files on purpose. */
export const UPDATE_GOLDEN = process.env.UPDATE_GOLDEN === "1";

export async function assertGolden(expectedFile: string, actual: string): Promise<void> {
  if (UPDATE_GOLDEN) {
    await writeFile(expectedFile, actual);
    return;
  }
  const expected = await readFile(expectedFile, "utf8").catch(() => {
    throw new Error(`${expectedFile} is missing: run \`npm run test:update-golden\` and review the diff`);
  });
  assert.equal(actual, expected, `${expectedFile} differs (intended? run \`npm run test:update-golden\`)`);
}
