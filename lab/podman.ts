/**
 * A real container runtime for the CNI tests: podman (runc, cgroupfs) with
 * its CNI backend, configured in a folder of the test's own
 * (CONTAINERS_CONF: network_backend "cni", cni_plugin_dirs,
 * network_config_dir), running containers over a root filesystem that
 * holds only the static busybox (no image registry is reachable here).
 * Every network gets a subnet of its own inside 198.18.0.0/15 and a bridge
 * made beforehand with its gateway address, so the host reaches the pod
 * addresses over it and nothing is ever routed off the machine. Names carry
 * a random prefix; destroy() removes the containers, networks, bridges and
 * the folder, after a failure too.
 */
import { randomBytes, randomInt } from "node:crypto";
import { mkdir, mkdtemp, rm, symlink, writeFile, copyFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";

/** The CNI plugins Debian's containernetworking-plugins installs. */
const SYSTEM_CNI_PLUGINS = "/usr/lib/cni";
const BUSYBOX = "/usr/bin/busybox";
const BUSYBOX_APPLETS = ["sh", "httpd", "sleep", "cat", "echo"];

/** What podman needs on this machine (see issue 22): runc (crun refuses the hybrid cgroup layout), bounded rlimits. */
const RUNTIME_FLAGS = ["--runtime", "runc", "--cgroup-manager", "cgroupfs"];
const RUN_FLAGS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"];

export interface PodmanNetwork {
  name: string;
  bridge: string;
  /** 198.19.<octet>.0/24 */
  subnet: string;
  gateway: string;
  /** The conflist podman reads it from. */
  file: string;
}

export interface RunResult {
  exitCode: number | undefined;
  stdout: string;
  stderr: string;
}

export class PodmanLab {
  private readonly containers = new Set<string>();
  private readonly networks: PodmanNetwork[] = [];

  private constructor(
    readonly prefix: string,
    readonly dir: string,
  ) {}

  /** The folder podman's CNI backend reads networks from. */
  get confDir(): string {
    return path.join(this.dir, "net.d");
  }

  /** A folder of plugins searched before the system's: where the test installs intercept-cni. */
  get binDir(): string {
    return path.join(this.dir, "bin");
  }

  get rootfs(): string {
    return path.join(this.dir, "rootfs");
  }

  static async create(): Promise<PodmanLab> {
    const prefix = `icp${randomBytes(3).toString("hex")}`;
    const lab = new PodmanLab(prefix, await mkdtemp(path.join(tmpdir(), `${prefix}-`)));
    try {
      await mkdir(lab.confDir);
      await mkdir(lab.binDir);
      await lab.makeRootfs();
      await writeFile(
        path.join(lab.dir, "containers.conf"),
        [
          "[network]",
          'network_backend = "cni"',
          `cni_plugin_dirs = ["${lab.binDir}", "${SYSTEM_CNI_PLUGINS}"]`,
          `network_config_dir = "${lab.confDir}"`,
          "",
        ].join("\n"),
      );
    } catch (error) {
      await lab.destroy();
      throw error;
    }
    return lab;
  }

  /** A root filesystem with busybox and its applets, and two sites: /www/app and /www/proxy. */
  private async makeRootfs(): Promise<void> {
    const bin = path.join(this.rootfs, "bin");
    await mkdir(bin, { recursive: true });
    await copyFile(BUSYBOX, path.join(bin, "busybox"));
    for (const applet of BUSYBOX_APPLETS) await symlink("busybox", path.join(bin, applet));
    for (const site of ["app", "proxy"]) {
      await mkdir(path.join(this.rootfs, "www", site), { recursive: true });
      await writeFile(path.join(this.rootfs, "www", site, "index.html"), `${site}\n`);
    }
  }

  /**
   * A bridge network in a subnet of its own, its bridge made now with the
   * gateway address (the bridge plugin adopts it), so the pod's address is
   * on-link for the host before the pod exists. @chain: plugin entries
   * after the bridge (intercept-cni's, say).
   */
  async network(chain: Record<string, unknown>[] = []): Promise<PodmanNetwork> {
    const index = this.networks.length;
    const octet = await this.freeOctet();
    const network: PodmanNetwork = {
      name: `${this.prefix}n${index}`,
      bridge: `${this.prefix}b${index}`,
      subnet: `198.19.${octet}.0/24`,
      gateway: `198.19.${octet}.1`,
      file: path.join(this.confDir, `${this.prefix}n${index}.conflist`),
    };
    this.networks.push(network);
    await execa("ip", ["link", "add", network.bridge, "type", "bridge"]);
    await execa("ip", ["addr", "add", `${network.gateway}/24`, "dev", network.bridge]);
    await execa("ip", ["link", "set", network.bridge, "up"]);
    const conflist = {
      cniVersion: "0.4.0",
      name: network.name,
      plugins: [
        {
          type: "bridge",
          bridge: network.bridge,
          isGateway: true,
          ipMasq: false,
          ipam: {
            type: "host-local",
            ranges: [[{ subnet: network.subnet, gateway: network.gateway }]],
            routes: [{ dst: `${network.subnet}` }],
          },
          capabilities: { ips: true },
        },
        ...chain,
      ],
    };
    await writeFile(network.file, `${JSON.stringify(conflist, null, 2)}\n`);
    return network;
  }

  /**
   * A third octet of 198.19.0.0/16 that no network of this lab and no route
   * of the host uses: two bridges with one subnet would send the pod's
   * answers to the wrong one (a random pick alone collided about once in
   * forty labs).
   */
  private async freeOctet(): Promise<number> {
    const { stdout } = await execa("ip", ["-4", "-j", "route", "show", "table", "all"]);
    const routed = (JSON.parse(stdout) as { dst?: string }[]).map((route) => route.dst ?? "");
    const taken = new Set(this.networks.map((network) => network.subnet));
    const free = Array.from({ length: 256 }, (_, octet) => octet).filter((octet) => {
      const subnet = `198.19.${octet}.0/24`;
      return !taken.has(subnet) && !routed.includes(subnet) && !routed.includes(`198.19.${octet}.1`);
    });
    if (free.length === 0) throw new Error("no free /24 left in 198.19.0.0/16 for a podman network");
    return free[randomInt(0, free.length)]!;
  }

  /** The address @host (2–254) of @network. */
  address(network: PodmanNetwork, host: number): string {
    return network.gateway.replace(/\.1$/, `.${host}`);
  }

  /** `podman run -d` of @command in a new container on @network at @ip; a failed run is returned, not thrown. */
  async run(network: PodmanNetwork, ip: string, command: string[]): Promise<RunResult & { name: string }> {
    const name = `${this.prefix}c${this.containers.size}`;
    this.containers.add(name);
    const result = await this.podman([
      "run",
      "-d",
      "--name",
      name,
      "--network",
      network.name,
      "--ip",
      ip,
      ...RUN_FLAGS,
      "--rootfs",
      this.rootfs,
      ...command,
    ]);
    return { ...result, name };
  }

  /** The container's network namespace file (podman's SandboxKey). */
  async sandbox(container: string): Promise<string> {
    const { stdout } = await this.podman(["inspect", container, "--format", "{{.NetworkSettings.SandboxKey}}"]);
    return stdout.trim();
  }

  /** Whether @container is running. */
  async running(container: string): Promise<boolean> {
    const { stdout, exitCode } = await this.podman(["inspect", container, "--format", "{{.State.Running}}"]);
    return exitCode === 0 && stdout.trim() === "true";
  }

  async remove(container: string): Promise<RunResult> {
    return this.podman(["rm", "-f", "-t", "0", container]);
  }

  podman(args: string[]): Promise<RunResult> {
    return execa("podman", [...RUNTIME_FLAGS, ...args], {
      reject: false,
      env: { CONTAINERS_CONF: path.join(this.dir, "containers.conf") },
    }).then(({ exitCode, stdout, stderr }) => ({ exitCode, stdout: String(stdout), stderr: String(stderr) }));
  }

  /** Removes the containers (their CNI DEL runs), the networks and their bridges, and the folder. Never throws. */
  async destroy(): Promise<void> {
    for (const container of this.containers) await this.remove(container);
    for (const network of this.networks) {
      await rm(network.file, { force: true });
      await execa("ip", ["link", "del", network.bridge], { reject: false });
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * Polls http://@address:@port/ until something answers, each attempt cut
 * short after @attemptMs; resolves with the first body. A client that
 * began before the pod existed: what it gets first is what the pod's
 * first connections met.
 */
export async function firstAnswer(
  address: string,
  port: number,
  deadline: AbortSignal,
  attemptMs = 250,
): Promise<string> {
  for (;;) {
    deadline.throwIfAborted();
    const attempt = AbortSignal.any([deadline, AbortSignal.timeout(attemptMs)]);
    try {
      const response = await fetch(`http://${address}:${port}/`, { signal: attempt });
      return (await response.text()).trim();
    } catch (error) {
      // Refused, unreachable or cut short: the pod is not up yet; the deadline ends the loop.
      if (deadline.aborted) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_PAUSE_MS)); // the client's pace, not a wait for the test
  }
}

/** Between a refused attempt and the next: a client that polls, not one that spins a core. */
const POLL_PAUSE_MS = 5;
