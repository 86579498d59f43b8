import type { ListenAddress } from "../cli.js";
import type { ProgramBuilder } from "../build/index.js";
import { programBuilder } from "../commands/objects.js";
import { KernelDatapath } from "../datapath/kernel.js";
import { InterceptError, messageOf, type PolicyError } from "../errors.js";
import type { NetworkNamespace } from "../kernel/exec.js";
import { describeNamespace } from "../kernel/namespace.js";
import { loadDesired, type DesiredPolicy } from "../reconcile/index.js";
import { inspect } from "../reconcile/inspect.js";
import { Lifecycle } from "./lifecycle.js";
import { createLogger, type LogFormat, type Logger } from "./log.js";
import { AgentMetrics } from "./metrics.js";
import { NamespaceAgent } from "./namespace-agent.js";
import { logInvalid, PolicyWatcher } from "./policy-watcher.js";

export interface AgentOptions {
  netns: NetworkNamespace;
  /** On exit, leave the datapath in place (upgrades, restarts). */
  keep: boolean;
  logFormat: LogFormat;
  /** Where to serve Prometheus metrics; off when undefined. */
  metrics?: ListenAddress;
  /** How long to wait for an `apply` holding the namespace's lock (another agent is refused at once). */
  lockTimeoutMs: number;
  /** Prebuilt objects (`--objects DIR`): no clang needed for the policies they cover. */
  objects?: string;
}

/**
 * `intercept agent`: keeps the kernel matching the policies as links and
 * files change. SIGTERM and SIGINT stop it (removing the datapath unless
 * --keep), SIGHUP reads the policies again. A fatal error stops it the same
 * way and exits 1, so a supervisor restarts it; an error while starting
 * exits 1 before anything is left behind.
 */
export async function runAgent(paths: string[], options: AgentOptions): Promise<number> {
  const log = createLogger(options.logFormat);
  // Listening from the start and for good: a signal during start-up stops the agent once it has started.
  const lifecycle = new Lifecycle();
  const agent = new Agent(paths, options, log, lifecycle, await programBuilder(options.objects));
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

class Agent {
  private desired: DesiredPolicy[] = [];
  private readonly metrics: AgentMetrics;
  private readonly policies: PolicyWatcher;
  private namespace: NamespaceAgent | undefined;
  private metricsServer: import("node:http").Server | undefined;
  private started = false;

  constructor(
    private readonly paths: string[],
    private readonly options: AgentOptions,
    private readonly log: Logger,
    private readonly lifecycle: Lifecycle,
    private readonly builder: ProgramBuilder,
  ) {
    this.metrics = new AgentMetrics(async () => inspect(await this.datapath(), this.desired));
    this.policies = new PolicyWatcher(paths, builder, log, {
      valid: (desired) => this.policiesChanged(desired),
      invalid: (error) => this.policiesInvalid(error),
      fatal: (error) => lifecycle.fail(error),
    });
  }

  private datapathOpened: Promise<KernelDatapath> | undefined;

  private datapath(): Promise<KernelDatapath> {
    this.datapathOpened ??= KernelDatapath.open(this.options.netns, "agent");
    return this.datapathOpened;
  }

  /**
   * Reads the policies (invalid ones fail the start: there is no last good
   * state), binds the metrics listener, and only then touches the kernel.
   */
  async start(): Promise<void> {
    this.desired = await loadDesired(this.paths, this.builder);
    if (this.options.metrics) {
      const { server, address } = await this.metrics.serve(this.options.metrics);
      this.metricsServer = server;
      this.log("agent started", `metrics on http://${address}/metrics`, { metrics: address });
    }
    const datapath = await this.datapath();
    this.log("agent started", `${this.desired.length} polic${this.desired.length === 1 ? "y" : "ies"} for ${describeNamespace(this.options.netns)}`, { netns: this.options.netns.name ?? null });
    this.namespace = new NamespaceAgent(datapath, () => this.desired, {
      keep: this.options.keep, lockTimeoutMs: this.options.lockTimeoutMs, builder: this.builder,
      // The one namespace this agent serves is gone: nothing is left to do, and a supervisor should know.
      onGone: () => this.lifecycle.fail(new InterceptError("netns-not-found", `${describeNamespace(this.options.netns)} no longer exists`)),
    }, this.log, this.metrics);
    this.policies.start();
    this.lifecycle.onReload(() => {
      this.log("reload", "SIGHUP: reading the policies again");
      this.policies.reload();
    });
    await this.namespace.start();
    this.started = true;
  }

  /** Stops following events; unless --keep, removes everything intercept made. */
  async stop(): Promise<void> {
    this.policies.stop();
    this.metricsServer?.close();
    await this.namespace?.stop();
    if (this.started) this.log("agent stopped", this.options.keep ? "datapath left in place (--keep)" : "datapath removed");
  }

  private policiesChanged(desired: DesiredPolicy[]): void {
    this.metrics.policiesInvalid.set(0);
    this.desired = desired;
    this.log("policy change", `${desired.length} polic${desired.length === 1 ? "y" : "ies"} valid: reconciling`);
    void this.namespace?.reconcile();
  }

  private policiesInvalid(error: PolicyError): void {
    this.metrics.policiesInvalid.set(1);
    logInvalid(this.log, error);
  }
}
