import { copyFile, chmod, mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import { InterceptError } from "../errors.js";
import { CNI_PLUGIN_TYPE, type FailurePolicy } from "../model/cni.js";

/** Where the plugin goes and which conflist it joins: the runtime's CNI folders. */
export interface CniPaths {
  /** Where the runtime finds plugin binaries (kubelet's /opt/cni/bin). */
  binDir: string;
  /** Where the runtime reads network configurations (/etc/cni/net.d). */
  confDir: string;
}

/** The plugin's own settings, written into its conflist entry. */
export interface PluginSettings {
  nodeTable: string;
  failurePolicy: FailurePolicy;
  /** Where a fail-open ADD appends what it let through (JSON lines); none: stderr only. */
  logFile?: string;
}

/** The binary `npm run build:cni` makes, in this package. */
export function builtPlugin(): string {
  return fileURLToPath(new URL(`../../cni/${CNI_PLUGIN_TYPE}`, import.meta.url));
}

/** A network configuration's files, as runtimes read them: in name order, the first is the one in use. */
const CONFIG_EXTENSIONS = [".conflist", ".conf", ".json"];

interface Conflist {
  cniVersion?: string;
  name?: string;
  plugins: Record<string, unknown>[];
  [key: string]: unknown;
}

/**
 * Installs the plugin the way istio-cni does: the binary copied into the
 * runtime's bin folder (renamed into place, so a runtime never runs half a
 * copy), then an entry of ours appended to the chain of the configuration
 * in use (the first file in name order), replacing an entry of ours that
 * is already there. A single-plugin `.conf` becomes a `.conflist` with
 * that plugin first. Returns the configuration it is chained in, and
 * whether anything was written (a binary or configuration that was
 * already as wanted is not touched: runtimes watch these folders).
 */
export async function installPlugin(
  paths: CniPaths,
  settings: PluginSettings,
  binary = builtPlugin(),
): Promise<{ conflist: string; changed: boolean }> {
  const binaryChanged = await installBinary(binary, paths.binDir);
  const file = await primaryConfig(paths.confDir);
  if (!file)
    throw new InterceptError(
      "cni-install",
      `no CNI network configuration in ${paths.confDir}: intercept-cni chains after the node's network plugin, which has not written its configuration yet`,
    );
  const conflist = await readConflist(file);
  const entry = { type: CNI_PLUGIN_TYPE, ...settings };
  const index = conflist.plugins.findIndex((plugin) => plugin.type === CNI_PLUGIN_TYPE);
  // Already chained as wanted: the file is not touched (runtimes watch it).
  if (file.endsWith(".conflist") && index !== -1 && isDeepStrictEqual(conflist.plugins[index], entry))
    return { conflist: file, changed: binaryChanged };
  if (index === -1) conflist.plugins.push(entry);
  else conflist.plugins[index] = entry;
  const target = file.endsWith(".conflist") ? file : `${file.slice(0, -path.extname(file).length)}.conflist`;
  await writeAtomically(target, `${JSON.stringify(conflist, null, 2)}\n`);
  if (target !== file) await rm(file, { force: true });
  return { conflist: target, changed: true };
}

/** Removes our entry from every configuration that has one, and the binary. Returns the files it changed. */
export async function uninstallPlugin(paths: CniPaths): Promise<string[]> {
  const changed: string[] = [];
  for (const file of await configFiles(paths.confDir)) {
    let conflist: Conflist;
    try {
      conflist = await readConflist(file);
    } catch (error) {
      // Not a configuration of a form we could have changed: nothing of ours is in it.
      if (error instanceof InterceptError && error.code === "cni-install") continue;
      throw error;
    }
    const kept = conflist.plugins.filter((plugin) => plugin.type !== CNI_PLUGIN_TYPE);
    if (kept.length === conflist.plugins.length) continue;
    await writeAtomically(file, `${JSON.stringify({ ...conflist, plugins: kept }, null, 2)}\n`);
    changed.push(file);
  }
  await rm(path.join(paths.binDir, CNI_PLUGIN_TYPE), { force: true });
  return changed;
}

/** Copies @binary into @binDir (renamed into place); false when the same bytes were there already. */
async function installBinary(binary: string, binDir: string): Promise<boolean> {
  const target = path.join(binDir, CNI_PLUGIN_TYPE);
  if (await sameContent(binary, target)) return false;
  const temporary = path.join(binDir, `.${CNI_PLUGIN_TYPE}.${process.pid}.tmp`);
  try {
    await mkdir(binDir, { recursive: true });
    await copyFile(binary, temporary);
    await chmod(temporary, 0o755);
    await rename(temporary, target);
    return true;
  } catch (error) {
    await rm(temporary, { force: true });
    const code = (error as NodeJS.ErrnoException).code;
    throw new InterceptError(
      "cni-install",
      code === "ENOENT" && !(await exists(binary))
        ? `the CNI plugin ${binary} is not built: run \`npm run build:cni\``
        : `cannot install the CNI plugin into ${binDir}: ${(error as Error).message}`,
      { cause: error },
    );
  }
}

/** Whether both files exist and hold the same bytes. */
async function sameContent(a: string, b: string): Promise<boolean> {
  const [left, right] = await Promise.all([bytesOrNothing(a), bytesOrNothing(b)]);
  return left !== undefined && right !== undefined && left.equals(right);
}

/**
 * @file's bytes; nothing when it cannot be read (it is missing, most
 * often): then it is not the same, and the copy that follows is made,
 * and reports its own error if there is one.
 */
async function bytesOrNothing(file: string): Promise<Buffer | undefined> {
  try {
    return await readFile(file);
  } catch {
    return undefined;
  }
}

async function exists(file: string): Promise<boolean> {
  return readFile(file).then(
    () => true,
    () => false,
  );
}

async function configFiles(confDir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(confDir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
  return names
    .filter((name) => CONFIG_EXTENSIONS.includes(path.extname(name)) && !name.startsWith("."))
    .sort()
    .map((name) => path.join(confDir, name));
}

async function primaryConfig(confDir: string): Promise<string | undefined> {
  return (await configFiles(confDir))[0];
}

/** A configuration as a conflist: a single plugin's `.conf` becomes a chain of one. */
async function readConflist(file: string): Promise<Conflist> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, "utf8"));
  } catch (error) {
    throw new InterceptError("cni-install", `cannot read the CNI configuration ${file}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
    throw new InterceptError("cni-install", `${file} is not a CNI configuration (a JSON object)`);
  const config = parsed as Record<string, unknown>;
  if (Array.isArray(config.plugins)) return config as Conflist;
  if (typeof config.type !== "string")
    throw new InterceptError(
      "cni-install",
      `${file} is neither a conflist (plugins) nor a plugin's configuration (type)`,
    );
  const { cniVersion, name, ...plugin } = config;
  return { cniVersion: cniVersion as string, name: name as string, plugins: [plugin] };
}

/** Written beside its target under a name no runtime reads (a leading dot, no extension of theirs), then renamed. */
async function writeAtomically(file: string, content: string): Promise<void> {
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  await writeFile(temporary, content, { mode: 0o644 });
  await rename(temporary, file);
}
