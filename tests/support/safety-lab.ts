/**
 * The setup the safety tests share (tests/e2e/safety.test.ts and the rounds
 * of tests/load/rounds.test.ts): a two-namespace lab running the demo's test
 * server, a scratch folder for policy files, and the two rewrite policies
 * they switch between.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Lab } from "../../lab/network.js";

export const DEMO_YAML = "interceptors:\n  - { port: 9000, originalPort: 8000, strategy: rewrite }\n";
export const OTHER_YAML =
  "interceptors:\n  - { port: 9000, originalPort: 8000, strategy: rewrite }\n  - { port: 9443, originalPort: 8443, strategy: rewrite }\n";

export class SafetyLab {
  private constructor(
    readonly lab: Lab,
    /** Removed with the lab. */
    readonly scratch: string,
  ) {}

  /** The lab with its test server up, and a scratch folder named after @prefix. */
  static async create(prefix: string): Promise<SafetyLab> {
    const lab = await Lab.create();
    const scratch = await mkdtemp(path.join(tmpdir(), prefix));
    const created = new SafetyLab(lab, scratch);
    try {
      await lab.startInServer(["node", "dist/demo/test-server.js"], /ready/);
    } catch (error) {
      await created.destroy();
      throw error;
    }
    return created;
  }

  /** Writes @text to @name under the scratch folder; returns its path. */
  async policyFile(name: string, text: string): Promise<string> {
    const file = path.join(this.scratch, name);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, text);
    return file;
  }

  /** Whether a request from the client to @port is answered through the proxy. */
  async intercepted(port = 8000): Promise<boolean> {
    return /\r\nServer: intercept\r\n/i.test((await this.lab.curl(port)).response);
  }

  async destroy(): Promise<void> {
    await this.lab.destroy();
    await rm(this.scratch, { recursive: true, force: true });
  }
}
