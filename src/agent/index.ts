import { statSync, watch, type FSWatcher } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa, type ResultPromise } from "execa";
import { applyPlan } from "../apply/index.js";
import { buildObjects, compiledPolicies, planCompiled, type PlannedRun } from "../commands/pipeline.js";
import type { CompiledPolicy } from "../compile/index.js";
import { formatDiagnosticLine, reportableDiagnostics } from "../diagnostics.js";
import { PolicyError } from "../errors.js";
import { NETNS_DIR, onTerminationSignals, type NetworkNamespace } from "../kernel/exec.js";
import { describeNamespace } from "../kernel/namespace.js";
import { ensureBpffs } from "../kernel/pins.js";
import { readLiveState, type Link } from "../live/index.js";
import { DEFAULT_POLICY_DIR } from "../load/index.js";
import { summarise } from "../plan/index.js";
import { createLogger, type LogFormat, type Logger } from "./log.js";
import { AgentMetrics } from "./metrics.js";

export interface AgentOptions {
  netns: NetworkNamespace;
  /** On exit, leave the datapath in place (upgrades, restarts). */
  keep: boolean;
  logFormat: LogFormat;
  /** HOST:PORT to serve Prometheus metrics on; off when undefined. */
  metrics?: string;
}

/** How long file events settle before a reload: editors write in bursts. */
const FILE_DEBOUNCE_MS = 10;
/**
 * How long policy files must stay invalid before the errors are logged: a
 * writer that truncates in place (shell redirect, writeFile) leaves an empty
 * file for a moment, which is not the user's mistake. Valid reads apply at once.
 */
const INVALID_SETTLE_MS = 500;
/** A dead link watcher is restarted after 100 ms, doubling per quick failure up to 30 s. */
const LINK_WATCHER_RETRY_MS = 100;
const LINK_WATCHER_RETRY_MAX_MS = 30_000;
/** A watcher that lived this long counts as healthy: the next failure starts the back-off again. */
const LINK_WATCHER_HEALTHY_MS = 60_000;
const LINK_EVENTS_SCRIPT = fileURLToPath(new URL("./link-events.js", import.meta.url));

/**
 * `intercept agent`: keeps the kernel matching the policies as links and
 * files change. Every change goes through the same plan → apply as
 * `intercept apply`; reconciles are serialised, and events that arrive
 * during one are folded into the next.
 */
export async function runAgent(paths: string[], options: AgentOptions): Promise<number> {
  // Listening from the start and for good: a signal during start-up stops
  // the agent as soon as it has started.
  const stopRequested = new Promise<void>((resolve) => onTerminationSignals(() => resolve()));
  await ensureBpffs();
  const agent = new Agent(paths, options, createLogger(options.logFormat));
  await agent.start();
  await stopRequested;
  await agent.stop();
  return 0;
}

class Agent {
  private compiled: CompiledPolicy[] = [];
  private links = new Map<number, string>();
  private reconciling: Promise<void> | undefined;
  private again = false;
  private stopping = false;
  private fileTimer: NodeJS.Timeout | undefined;
  private invalidReport: NodeJS.Timeout | undefined;
  /** Counts policy reads, so a slow read never overrides a newer one. */
  private reads = 0;
  private readonly watchers: FSWatcher[] = [];
  private linkEvents: ResultPromise | undefined;
  private linkWatcherRetry: NodeJS.Timeout | undefined;
  private linkWatcherFailures = 0;
  private readonly metrics: AgentMetrics;
  private metricsServer: import("node:http").Server | undefined;

  constructor(
    private readonly paths: string[],
    private readonly options: AgentOptions,
    private readonly log: Logger,
  ) {
    this.metrics = new AgentMetrics({ live: () => readLiveState(options.netns), policies: () => this.compiled.map((c) => c.policy) });
  }

  /** Validates (an invalid start is an error: there is no last good state), applies, then follows events. */
  async start(): Promise<void> {
    this.compiled = await compiledPolicies(this.paths);
    this.log("agent started", `${this.compiled.length} polic${this.compiled.length === 1 ? "y" : "ies"} for ${describeNamespace(this.options.netns)}`, { netns: this.options.netns.name ?? null });
    await this.watchLinks();
    this.watchFiles();
    await this.reconcile();
    if (this.options.metrics) {
      const { server, address } = await this.metrics.serve(this.options.metrics);
      this.metricsServer = server;
      this.log("agent started", `metrics on http://${address}/metrics`, { metrics: address });
    }
  }

  /** Stops following events; unless --keep, removes everything intercept made. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.fileTimer);
    clearTimeout(this.invalidReport);
    clearTimeout(this.linkWatcherRetry);
    for (const watcher of this.watchers) watcher.close();
    this.linkEvents?.stdin?.end();
    this.linkEvents?.kill();
    this.metricsServer?.close();
    await this.reconciling;
    if (!this.options.keep) {
      this.compiled = [];
      await this.reconcileOnce();
    }
    this.log("agent stopped", this.options.keep ? "datapath left in place (--keep)" : "datapath removed");
  }

  /** Runs a reconcile now, or right after the one in progress; none once stopping. */
  reconcile(): Promise<void> {
    if (this.stopping) return this.reconciling ?? Promise.resolve();
    if (this.reconciling) {
      this.again = true;
      return this.reconciling;
    }
    this.reconciling = (async () => {
      do {
        this.again = false;
        await this.reconcileOnce();
      } while (this.again && !this.stopping);
      this.reconciling = undefined;
    })();
    return this.reconciling;
  }

  private async reconcileOnce(): Promise<void> {
    try {
      const run = await planCompiled(this.compiled, this.options.netns);
      this.noteLinks(run.live.links);
      if (run.plan.changes.length > 0) await this.apply(run);
      this.metrics.lastApply.setToCurrentTime();
    } catch (error) {
      this.metrics.applyFailures.inc();
      this.log("error", (error as Error).message.replaceAll("\n", " "));
    }
  }

  private async apply(run: PlannedRun): Promise<void> {
    await applyPlan(run.plan, run.live, await buildObjects(run), (line) => {
      if (!line.startsWith("Apply complete")) this.log("applied", line, { change: line.split(":")[0] });
    });
    this.metrics.applies.inc();
    const { add, change, destroy } = summarise(run.plan);
    this.log("applied", `policies applied: ${add} added, ${change} changed, ${destroy} destroyed`, { add, change, destroy });
  }

  /** Logs links that appeared or went away since the last reconcile. */
  private noteLinks(links: Link[]): void {
    const current = new Map(links.filter((l) => !l.loopback).map((l) => [l.ifindex, l.name]));
    for (const [ifindex, name] of current) {
      if (this.links.get(ifindex) !== name) this.log("link seen", `${name} (ifindex ${ifindex})`, { link: name, ifindex });
    }
    for (const [ifindex, name] of this.links) {
      if (!current.has(ifindex)) this.log("link gone", `${name} (ifindex ${ifindex})`, { link: name, ifindex });
    }
    this.links = current;
  }

  /**
   * Link events come from a small process in the target namespace; any event
   * means "look again". Resolves once it listens; if it dies later it is
   * restarted (restartLinkWatcher).
   */
  private async watchLinks(): Promise<void> {
    const command = ["node", LINK_EVENTS_SCRIPT];
    const [file, args] = this.options.netns.name
      ? ["nsenter", [`--net=${NETNS_DIR}/${this.options.netns.name}`, ...command]]
      : [command[0]!, command.slice(1)];
    const child = execa(file, args, { reject: false, stdin: "pipe", buffer: false });
    const started = performance.now();
    this.linkEvents = child;
    await new Promise<void>((resolve, reject) => {
      let listening = false;
      let pending = "";
      child.stdout?.on("data", (chunk: Buffer) => {
        pending += chunk.toString();
        const lines = pending.split("\n");
        pending = lines.pop()!;
        for (const line of lines) {
          if (line.includes('"ready"')) {
            listening = true;
            resolve();
          } else if (!this.stopping) void this.reconcile();
        }
      });
      child.on("exit", (code, signal) => {
        const exit = `exited (${code ?? signal})`;
        if (!listening) return reject(new Error(`link watcher ${exit} before listening`));
        if (this.stopping) return;
        if (performance.now() - started >= LINK_WATCHER_HEALTHY_MS) this.linkWatcherFailures = 0;
        this.restartLinkWatcher(`link watcher ${exit}`);
      });
    });
  }

  /** Restarts the link watcher with back-off, then reconciles: links may have changed while nobody listened. */
  private restartLinkWatcher(reason: string): void {
    if (this.stopping) return;
    const delay = Math.min(LINK_WATCHER_RETRY_MAX_MS, LINK_WATCHER_RETRY_MS * 2 ** this.linkWatcherFailures++);
    this.log("error", `${reason}; restarting it in ${delay} ms`);
    this.linkWatcherRetry = setTimeout(() => {
      this.watchLinks().then(
        () => {
          this.log("link watcher", "restarted: following link changes again");
          void this.reconcile();
        },
        (error: Error) => this.restartLinkWatcher(error.message),
      );
    }, delay);
  }

  /**
   * Watches the policy files and folders with Node's fs.watch (inotify). Not
   * chokidar: it drops a change that follows another on the same path within
   * 50 ms, losing the final state of quick successive saves. A file is watched
   * through its folder, so editors' save-by-rename is seen too.
   */
  private watchFiles(): void {
    const targets = this.paths.length > 0 ? this.paths : [DEFAULT_POLICY_DIR];
    for (const target of targets) {
      const folder = statSync(target).isDirectory();
      const name = folder ? undefined : path.basename(target);
      const watcher = watch(folder ? target : path.dirname(target), { recursive: folder }, (_event, changed) => {
        if (name && changed !== name) return;
        clearTimeout(this.invalidReport); // the files are still moving
        clearTimeout(this.fileTimer);
        this.fileTimer = setTimeout(() => void this.reloadPolicies(), FILE_DEBOUNCE_MS);
      });
      this.watchers.push(watcher);
    }
  }

  /**
   * A valid edit is applied at once. An invalid one keeps the last good
   * policies in force and is logged with its located errors once the files
   * have settled (INVALID_SETTLE_MS).
   */
  private async reloadPolicies(): Promise<void> {
    const read = ++this.reads;
    try {
      const compiled = await compiledPolicies(this.paths);
      if (this.stopping || read !== this.reads) return; // stop() decides the final state; a newer read wins
      clearTimeout(this.invalidReport);
      this.metrics.policiesInvalid.set(0);
      this.compiled = compiled;
      this.log("policy change", `${this.compiled.length} polic${this.compiled.length === 1 ? "y" : "ies"} valid: reconciling`);
      await this.reconcile();
    } catch (error) {
      if (!(error instanceof PolicyError)) throw error;
      if (this.stopping || read !== this.reads) return;
      clearTimeout(this.invalidReport);
      this.invalidReport = setTimeout(() => this.reportInvalid(error), INVALID_SETTLE_MS);
    }
  }

  private reportInvalid(error: PolicyError): void {
    this.metrics.policiesInvalid.set(1);
    for (const diagnostic of reportableDiagnostics(error.diagnostics)) {
      this.log("error", formatDiagnosticLine(diagnostic), { file: diagnostic.file, line: diagnostic.line, column: diagnostic.column, code: diagnostic.code });
    }
    this.log("error", `${error.message}: keeping the last good policies`);
  }
}
