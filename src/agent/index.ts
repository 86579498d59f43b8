import type { ListenAddress } from "../model/listen-address.js";
import { InterceptError, messageOf, type PolicyError } from "../errors.js";
import { globMatch } from "../glob.js";
import type { Host, NamespaceWatch, Watch } from "../host/types.js";
import { describeNamespace, type NetworkNamespace } from "../model/namespace.js";
import { namedCgroups } from "../reconcile/make-plan-cgroups.js";
import { closePolicyWorker } from "../reconcile/policy-worker/client.js";
import { CniMode, type CniOptions } from "./cni.js";
import { Fleet } from "./fleet.js";
import { Lifecycle } from "./lifecycle.js";
import { createLogger, type LogFormat, type Logger } from "./log.js";
import { AgentMetrics, shortHash, type PolicyHealth } from "./metrics.js";
import { FlowExport } from "./flows.js";
import { AGENT_LOCK_HOLDER, FLEET_LOCK_HOLDER } from "../model/lock-holder.js";
import { collectOrphans } from "./orphans.js";
import { logInvalid, PolicyWatcher, readPolicySet, type PolicyRead, type PolicySet } from "./policy-watcher.js";

/** Which network namespaces an agent serves: one (named, or its own), or every one whose name matches. */
export type AgentNamespaces = { kind: "one"; netns: NetworkNamespace } | { kind: "matching"; globs: readonly string[] };

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
  /** How often the policies are read (and the namespaces reconciled) whatever the file events say; 0: never. Default 30 s. */
  resyncMs?: number;
  /** `--flows`: every rule's flow records on, logged and counted (src/agent/flows.ts). */
  flows?: boolean;
  /** CNI mode (`--cni`, with --netns-match): node programs, the node table and the chained plugin. */
  cni?: CniOptions;
}

/**
 * `intercept agent`: keeps the kernel matching the policies as links and
 * files change, in one network namespace or in every one whose name
 * matches --netns-match (followed as they come and go). SIGTERM and SIGINT
 * stop it (removing the datapath unless --keep), SIGHUP reads the policies
 * again. A fatal error stops it the same way and exits 1, so a supervisor
 * restarts it; an error while starting exits 1 before anything is left
 * behind. Everything it takes from the machine comes from @host: the
 * command line passes the kernel's (src/cli.ts), tests a fake.
 */
export async function runAgent(
  paths: string[],
  options: AgentOptions,
  host: Host,
  log: Logger = createLogger(options.logFormat),
): Promise<number> {
  // Listening from the start and for good: a signal during start-up stops the agent at once, cutting the start short.
  const lifecycle = new Lifecycle(host);
  const agent = new Agent(paths, options, log, lifecycle, host);
  const starting = agent.start();
  const startedFirst = await Promise.race([starting.then(() => true), lifecycle.ended.then(() => false)]).catch(
    async (error: unknown) => {
      await agent.stop();
      lifecycle.release(); // a start that failed lets go of the signals too: the caller decides what follows
      throw error;
    },
  );
  if (!startedFirst) {
    const stopped = agent.stop();
    // The start, cut short by the stop, fails for that reason: the ending says what happened.
    await Promise.allSettled([starting]);
    await stopped;
  }
  const ending = await lifecycle.ended;
  if (startedFirst) await agent.stop();
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
  /** The content hash of the policies in force. */
  private inForce: string | undefined;
  /** The last read of the files: when, what they held, and what was found. */
  private lastRead: PolicyRead | undefined;
  private readonly metrics: AgentMetrics;
  private readonly watcher: PolicyWatcher<PolicySet>;
  private readonly fleet: Fleet;
  private readonly cni: CniMode | undefined;
  private directory: NamespaceWatch | undefined;
  /** The cgroups the policies in force name, followed: a cgroup made again gets its programs back at once. */
  private cgroups: { paths: string; watch: Watch | undefined } | undefined;
  private metricsServer: import("node:http").Server | undefined;
  private started = false;
  private stopping: Promise<void> | undefined;
  private readonly flows: FlowExport | undefined;

  constructor(
    paths: string[],
    private readonly options: AgentOptions,
    private log: Logger,
    private readonly lifecycle: Lifecycle,
    private readonly host: Host,
  ) {
    this.metrics = new AgentMetrics(
      () => this.fleet.reports(),
      () => this.health(),
    );
    // --flows follows the log: a namespace served or changed gets its records switched on and read.
    this.flows = options.flows
      ? new FlowExport(log, this.metrics.registry, () => this.policies?.desired ?? [], host)
      : undefined;
    if (this.flows) this.log = this.flows.following(log);
    this.fleet = new Fleet(
      {
        host,
        keep: options.keep,
        // A shared program writes its records into the ring buffer of the namespace that loaded it,
        // which the agent would read for two namespaces at once: with --flows, each loads its own.
        loadOnce: !options.flows,
        lockTimeoutMs: options.lockTimeoutMs,
        lockHolder: options.namespaces.kind === "matching" ? FLEET_LOCK_HOLDER : AGENT_LOCK_HOLDER,
        policies: () => ({ ...this.policies!, fingerprint: this.inForce }),
        onGone: (netns) => {
          // The one namespace this agent serves is gone: nothing is left to do, and a supervisor should know.
          if (options.namespaces.kind === "one")
            lifecycle.fail(new InterceptError("netns-not-found", `${describeNamespace(netns)} no longer exists`));
        },
      },
      this.log,
      this.metrics,
    );
    this.cni =
      options.cni && options.namespaces.kind === "matching"
        ? new CniMode(options.cni, options.namespaces.globs, log)
        : undefined;
    this.watcher = new PolicyWatcher<PolicySet>(
      {
        paths,
        objects: options.objects,
        read: readPolicySet,
        log,
        isEmpty: (policies) => policies.desired.length === 0,
        ...(options.resyncMs !== undefined && { resyncMs: options.resyncMs }),
      },
      {
        valid: (policies, fingerprint) => this.policiesChanged(policies, fingerprint),
        invalid: (error) => this.policiesInvalid(error),
        read: (read) => this.policiesRead(read),
        resynced: () => {
          void this.fleet.resync(); // the kernel is checked against the policies too: a plan with no changes does nothing
          void this.cni?.reinstall(); // logs its own failure
        },
        fatal: (error) => lifecycle.fail(error),
      },
    );
  }

  /**
   * Binds the metrics listener, reads the policies (invalid ones fail the
   * start: there is no last good state), checks privileges, and only then
   * touches the kernel. "agent started" is said once it serves: a second
   * agent refused for a namespace never says it.
   */
  async start(): Promise<void> {
    let metrics: string | undefined;
    if (this.options.metrics) {
      // First: a busy address is said at once. /healthz answers "not ready" until the namespaces are served.
      const { server, address } = await this.metrics.serve(
        this.options.metrics,
        () => this.fleet.readiness(),
        () => this.health(),
      );
      this.metricsServer = server;
      metrics = address;
    }
    // Watched from before the first read: a file changed while the namespaces start is not missed.
    this.policies = await this.watcher.start();
    this.inForce = this.watcher.fingerprint;
    // From here on, not once the start is done: a SIGHUP while the namespaces start is not lost.
    this.lifecycle.onReload(() => {
      this.log("reload", "SIGHUP: reading the policies again");
      this.watcher.reload();
    });
    await this.followCgroups();
    const served = metrics === undefined ? "" : `; metrics on http://${metrics}/metrics, readiness on /healthz`;
    const fields = { ...(metrics !== undefined && { metrics }), policiesHash: shortHash(this.inForce) };
    const { namespaces } = this.options;
    const count = `${this.policies.desired.length} polic${this.policies.desired.length === 1 ? "y" : "ies"}`;
    if (namespaces.kind === "one") {
      await this.fleet.serve(namespaces.netns);
      if (this.stopping) return;
      this.started = true;
      this.log("agent started", `${count} for ${describeNamespace(namespaces.netns)}${served}`, {
        namespace: namespaces.netns.name ?? null,
        ...fields,
      });
      // Its removal is seen even when no link event follows it (a namespace with no links left, say).
      if (namespaces.netns.name !== undefined)
        await this.followDirectory((name) => name === namespaces.netns.name, false);
    } else {
      await this.host.requireKernelAccess("agent");
      if (this.stopping) return;
      this.started = true;
      this.log(
        "agent started",
        `${count} for the network namespaces matching ${namespaces.globs.join(", ")}${served}`,
        { namespaces: namespaces.globs, ...fields },
      );
      await collectOrphans(this.host, this.log);
      if (this.stopping) return;
      await this.cni?.start(this.policies); // before the namespaces: the plugin is chained once the table is written
      if (this.stopping) return;
      await this.followDirectory((name) => namespaces.globs.some((glob) => globMatch(glob, name)), true);
    }
  }

  /** Stops following events; unless --keep, removes everything intercept made. Once, however often asked. */
  stop(): Promise<void> {
    this.stopping ??= this.stopOnce();
    return this.stopping;
  }

  private async stopOnce(): Promise<void> {
    this.watcher.stop();
    // A policy read in flight (a hostile file runs to its deadline) must not hold the process after clean-up.
    const closing = closePolicyWorker();
    this.directory?.stop();
    await this.flows?.stop(); // before the fleet removes the programs its readers read
    await this.cni?.stop(this.options.keep); // out of the chain first: no pod gets a node program after the clean-up
    this.cgroups?.watch?.stop();
    const { held } = await this.fleet.stop();
    this.host.close();
    await closing;
    this.metricsServer?.close();
    if (!this.started) return;
    this.log("agent stopped", this.stoppedMessage(held), { held });
  }

  /** What stopping did, as it was: an agent that held no namespace removed nothing. */
  private stoppedMessage(held: number): string {
    if (held === 0) return "no network namespace was held: nothing to remove";
    const where = this.options.namespaces.kind === "one" ? "" : ` in ${held} network namespace${held === 1 ? "" : "s"}`;
    return this.options.keep ? `datapath left in place${where} (--keep)` : `datapath removed${where}`;
  }

  /** What the agent read, has in force, and reconciled: for /healthz and the metrics. */
  private health(): PolicyHealth {
    return {
      lastReadAt: this.lastRead?.at,
      readFingerprint: this.lastRead?.fingerprint,
      readOutcome: this.lastRead?.outcome,
      inForceFingerprint: this.inForce,
      namespaces: this.fleet.states(),
    };
  }

  /**
   * Follows /var/run/netns for the names @matches. With @serve, the fleet
   * serves what it finds; without, only removals matter: the one namespace
   * is served already, and its removal (or replacement) ends the agent.
   */
  private async followDirectory(matches: (name: string) => boolean, serve: boolean): Promise<void> {
    const changed = (found: ReadonlyMap<string, string>) =>
      serve ? this.fleet.follow(found) : this.fleet.forgetMissing(found);
    const directory = this.host.watchNamespaces(matches, { changed, failed: (error) => this.lifecycle.fail(error) });
    this.directory = directory;
    const found = await directory.start();
    if (this.stopping)
      directory.stop(); // stopped while it listed: stop() may have run before it was there
    else changed(found);
  }

  private policiesChanged(policies: PolicySet, fingerprint: string): void {
    this.policies = policies;
    this.inForce = fingerprint;
    const count = `${policies.desired.length} polic${policies.desired.length === 1 ? "y" : "ies"}`;
    this.log("policy change", `${count} valid (content ${shortHash(fingerprint)}): reconciling`, {
      policiesHash: shortHash(fingerprint),
    });
    void this.cni?.update(policies); // logs its own failure; the table stays as it was
    this.fleet.reconcileAll();
    void this.followCgroups();
  }

  /**
   * Follows the cgroups the policies in force name, captured and exempt
   * (again when they change): one made again, or removed, wakes a reconcile
   * of every namespace at once, instead of at the next link event or
   * resync. A pod's cgroup under a captured one needs nothing: the kernel
   * gives a new cgroup its parent's programs as it is made.
   */
  private async followCgroups(): Promise<void> {
    const paths = [...new Set(namedCgroups(this.policies?.desired ?? []))].sort();
    const key = paths.join("\n");
    if (this.stopping || this.cgroups?.paths === key) return;
    this.cgroups?.watch?.stop();
    const following: { paths: string; watch: Watch | undefined } = { paths: key, watch: undefined };
    this.cgroups = following;
    if (paths.length === 0) return;
    try {
      const watch = await this.host.watchCgroups(paths, {
        changed: () => this.fleet.reconcileAll(),
        failed: (error) =>
          this.log("error", `cannot follow the cgroups: ${messageOf(error)}; the resync still checks them`),
      });
      if (this.cgroups === following && !this.stopping) following.watch = watch;
      else watch.stop();
    } catch (error) {
      this.log("error", `cannot follow the cgroups: ${messageOf(error)}; the resync still checks them`);
    }
  }

  /** Every read; files that were reported invalid and now hold the policies in force again say so. */
  private policiesRead(read: PolicyRead): void {
    const was = this.lastRead?.outcome;
    this.lastRead = read;
    if (was === "invalid" && read.outcome === "valid" && read.fingerprint === this.inForce) {
      this.log(
        "policy change",
        `the policies are valid again, the same as those in force (content ${shortHash(read.fingerprint)}): nothing to reconcile`,
        { policiesHash: shortHash(read.fingerprint) },
      );
    }
  }

  private policiesInvalid(error: PolicyError): void {
    logInvalid(this.log, error);
  }
}
