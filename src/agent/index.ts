import type { ListenAddress } from "../model/listen-address.js";
import { InterceptError, messageOf, type PolicyError } from "../errors.js";
import type { NetworkNamespace } from "../kernel/exec.js";
import { describeNamespace } from "../kernel/namespace.js";
import { ensureBpffs } from "../kernel/pins.js";
import { requireKernelPrivileges } from "../kernel/privileges.js";
import { globMatch } from "../glob.js";
import { closePolicyWorker } from "../reconcile/policy-worker/client.js";
import { Fleet } from "./fleet.js";
import { Lifecycle } from "./lifecycle.js";
import { createLogger, type LogFormat, type Logger } from "./log.js";
import { AgentMetrics } from "./metrics.js";
import { NamespaceDirectory } from "./netns-directory.js";
import { AGENT_LOCK_HOLDER, FLEET_LOCK_HOLDER } from "../model/lock-holder.js";
import { collectOrphans } from "./orphans.js";
import { logInvalid, PolicyWatcher, readPolicySet, type PolicySet } from "./policy-watcher.js";

/** Which network namespaces an agent serves: one (named, or its own), or every one whose name matches. */
export type AgentNamespaces =
  | { kind: "one"; netns: NetworkNamespace }
  | { kind: "matching"; globs: readonly string[] };

export interface AgentOptions {
  namespaces: AgentNamespaces;
  /** On exit, leave the datapath in place (upgrades, restarts). */
  keep: boolean;
  logFormat: LogFormat;
  /** Where to serve Prometheus metrics and /healthz; off when undefined. */
  metrics?: ListenAddress;
  /** How long to wait for an `apply` holding a namespace's lock (another agent is refused at once). */
  lockTimeoutMs: number;
  /** Prebuilt objects (`--objects DIR`): no clang needed for the policies they cover. */
  objects?: string;
}

/**
 * `intercept agent`: keeps the kernel matching the policies as links and
 * files change, in one network namespace or in every one whose name
 * matches --netns-match (followed as they come and go). SIGTERM and SIGINT
 * stop it (removing the datapath unless --keep), SIGHUP reads the policies
 * again. A fatal error stops it the same way and exits 1, so a supervisor
 * restarts it; an error while starting exits 1 before anything is left
 * behind.
 */
export async function runAgent(paths: string[], options: AgentOptions): Promise<number> {
  const log = createLogger(options.logFormat);
  // Listening from the start and for good: a signal during start-up stops the agent once it has started.
  const lifecycle = new Lifecycle();
  const agent = new Agent(paths, options, log, lifecycle);
  try {
    await agent.start();
  } catch (error) {
    await agent.stop();
    throw error;
  }
  const ending = await lifecycle.ended;
  await agent.stop();
  lifecycle.release();
  if (ending.fatal === undefined) return 0;
  log("error", `fatal: ${messageOf(ending.fatal).replaceAll("\n", " ")}`);
  return 1;
}

/**
 * The composition: one PolicyWatcher (the policies, read and compiled once
 * for every namespace), one Fleet (a NamespaceAgent per namespace), the
 * namespace directory it follows (--netns-match) or the one namespace it
 * serves, and the metrics and /healthz listener.
 */
class Agent {
  private policies: PolicySet | undefined;
  private readonly metrics: AgentMetrics;
  private readonly watcher: PolicyWatcher;
  private readonly fleet: Fleet;
  private directory: NamespaceDirectory | undefined;
  private metricsServer: import("node:http").Server | undefined;
  private started = false;

  constructor(
    private readonly paths: string[],
    private readonly options: AgentOptions,
    private readonly log: Logger,
    private readonly lifecycle: Lifecycle,
  ) {
    this.metrics = new AgentMetrics(() => this.fleet.reports());
    this.fleet = new Fleet({
      keep: options.keep,
      lockTimeoutMs: options.lockTimeoutMs,
      lockHolder: options.namespaces.kind === "matching" ? FLEET_LOCK_HOLDER : AGENT_LOCK_HOLDER,
      policies: () => this.policies!,
      onGone: (netns) => {
        // The one namespace this agent serves is gone: nothing is left to do, and a supervisor should know.
        if (options.namespaces.kind === "one") lifecycle.fail(new InterceptError("netns-not-found", `${describeNamespace(netns)} no longer exists`));
      },
    }, log, this.metrics);
    this.watcher = new PolicyWatcher(paths, options.objects, log, {
      valid: (policies) => this.policiesChanged(policies),
      invalid: (error) => this.policiesInvalid(error),
      fatal: (error) => lifecycle.fail(error),
    });
  }

  /**
   * Reads the policies (invalid ones fail the start: there is no last good
   * state), binds the metrics listener, checks privileges, and only then
   * touches the kernel.
   */
  async start(): Promise<void> {
    this.policies = await readPolicySet(this.paths, this.options.objects);
    // Followed from now on: a file changed while the namespaces start is not missed.
    this.watcher.start();
    if (this.options.metrics) {
      const { server, address } = await this.metrics.serve(this.options.metrics, () => this.fleet.readiness());
      this.metricsServer = server;
      this.log("agent started", `metrics on http://${address}/metrics, readiness on /healthz`, { metrics: address });
    }
    const { namespaces } = this.options;
    const count = `${this.policies.desired.length} polic${this.policies.desired.length === 1 ? "y" : "ies"}`;
    if (namespaces.kind === "one") {
      this.log("agent started", `${count} for ${describeNamespace(namespaces.netns)}`, { namespace: namespaces.netns.name ?? null });
      await this.fleet.serve(namespaces.netns);
      // Its removal is seen even when no link event follows it (a namespace with no links left, say).
      if (namespaces.netns.name !== undefined) await this.followDirectory((name) => name === namespaces.netns.name, false);
    } else {
      await requireKernelPrivileges("agent");
      await ensureBpffs();
      this.log("agent started", `${count} for the network namespaces matching ${namespaces.globs.join(", ")}`, { namespaces: namespaces.globs });
      await collectOrphans(this.log);
      await this.followDirectory((name) => namespaces.globs.some((glob) => globMatch(glob, name)), true);
    }
    this.lifecycle.onReload(() => {
      this.log("reload", "SIGHUP: reading the policies again");
      this.watcher.reload();
    });
    this.started = true;
  }

  /** Stops following events; unless --keep, removes everything intercept made. */
  async stop(): Promise<void> {
    this.watcher.stop();
    // A policy read in flight (a hostile file runs to its deadline) must not hold the process after clean-up.
    const closing = closePolicyWorker();
    this.directory?.stop();
    await this.fleet.stop();
    await closing;
    this.metricsServer?.close();
    if (this.started) this.log("agent stopped", this.options.keep ? "datapath left in place (--keep)" : "datapath removed");
  }

  /**
   * Follows /var/run/netns for the names @matches. With @serve, the fleet
   * serves what it finds; without, only removals matter: the one namespace
   * is served already, and its removal (or replacement) ends the agent.
   */
  private async followDirectory(matches: (name: string) => boolean, serve: boolean): Promise<void> {
    const changed = (found: ReadonlyMap<string, string>) => (serve ? this.fleet.follow(found) : this.fleet.forgetMissing(found));
    this.directory = new NamespaceDirectory({ matches }, { changed, failed: (error) => this.lifecycle.fail(error) });
    changed(await this.directory.start());
  }

  private policiesChanged(policies: PolicySet): void {
    this.metrics.policiesInvalid.set(0);
    this.policies = policies;
    this.log("policy change", `${policies.desired.length} polic${policies.desired.length === 1 ? "y" : "ies"} valid: reconciling`);
    this.fleet.reconcileAll();
  }

  private policiesInvalid(error: PolicyError): void {
    this.metrics.policiesInvalid.set(1);
    logInvalid(this.log, error);
  }
}
