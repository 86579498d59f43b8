import { readFile } from "node:fs/promises";

/** The package.json of the package this CLI runs from (dist/src/commands → root), whatever the cwd. */
const PACKAGE_JSON = new URL("../../../package.json", import.meta.url);

/** `intercept --version`: prints the package version. */
export async function versionCommand(): Promise<number> {
  const { version } = JSON.parse(await readFile(PACKAGE_JSON, "utf8")) as { version: string };
  process.stdout.write(`${version}\n`);
  return 0;
}
