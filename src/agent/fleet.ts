import type { ProgramBuilder } from "../toolchain/index.js";
import { InterceptError, messageOf } from "../errors.js";
import type { Host, NamespaceDatapath, NamespaceFile } from "../host/types.js";
import type { NetworkNamespace } from "../model/namespace.js";
import type { DesiredPolicy } from "../reconcile/index.js";
import { inspect } from "../reconcile/inspect.js";
import { appliesIn } from "../validate/namespaces.js";
import { namespaceLogger, type Logger } from "./log.js";
import type { AgentMetrics, NamespaceReport, Readiness } from "./metrics.js";
import { NamespaceAgent, retryDelay, type NamespaceAgentOptions, type ReconcileResult } from "./namespace-agent.js";

/** How many namespaces a scrape reads at once: a scrape of fifty must not starve their reconciles. */
const SCRAPE_CONCURRENCY = 4;
/**
 * How many namespaces one periodic resync checks, one at a time, taking
 * turns: the cost of a resync stays that of a few plans, however many
 * namespaces are served (fifty every 30 s would be a plan every 0.6 s).
 */
const RESYNC_BATCH = 4;
/** Names listed in a not-ready /healthz answer, at most. */
const NAMES_SHOWN = 10;

/** One served namespace's state, for /healthz and the metrics. */
export interface NamespaceState {
  /** The `ip netns` name, or "" for the agent's own namespace. */
  namespace: string;
  /** Reconciled once since it was joined. */
  ready: boolean;
  /** Its last reconcile succeeded, with the policies in force now. */
  kernelMatches: boolean;
  lastReconcile: ReconcileResult | undefined;
}

/** What stopping the fleet did: how many namespaces it held, and so cleaned up (or left, with --keep). */
export interface FleetStopped {
  held: number;
}

/** What every namespace's agent is started with. */
export interface FleetOptions extends Pick<NamespaceAgentOptions, "keep" | "lockTimeoutMs" | "lockHolder"> {
  /** Where every namespace's datapath, lock and link events come from. */
  host: Host;
  /** The policies in force, where their programs come from, and their content hash: shared by every namespace. */
  policies: () => { desired: DesiredPolicy[]; builder: ProgramBuilder; fingerprint?: string | undefined };
  /** Share the programs other namespaces have loaded (DatapathOptions.loadOnce). */
  loadOnce: boolean;
  /** A managed namespace disappeared (after it is forgotten). */
  onGone: (netns: NetworkNamespace) => void;
}

interface Member {
  netns: NetworkNamespace;
  key: string | undefined;
  /** Label and log field: the `ip netns` name, or "" for the agent's own namespace. */
  label: string;
  datapath: NamespaceDatapath | undefined;
  agent: NamespaceAgent | undefined;
  /** The start in progress or done; a failed one is retried while the member stays. */
  starting: Promise<void> | undefined;
  retry: NodeJS.Timeout | undefined;
  failures: number;
  removing: Promise<void> | undefined;
}

/**
 * The namespaces one agent serves, one NamespaceAgent each: each holds its
 * own lock and link watcher and reconciles on its own, so one namespace's
 * failure or slowness never holds up another. The policies are read,
 * validated, compiled and identified once (the PolicyWatcher); every
 * namespace plans with those same records and only the policies that apply
 * in it (a policy's `namespaces`), and loads the same built objects.
 *
 * A namespace is known by its name and its key (inode). A namespace that is
 * removed is forgotten: its agent stops, its pins are removed, its metrics
 * dropped. A name reused for a new namespace, or a key reused by the kernel
 * for one, starts a new agent only once the old one is gone.
 */
export class Fleet {
  private readonly members = new Map<string, Member>();
  /** Agents being stopped, by key: a new agent for the key waits for them (pins and locks are by key). */
  private readonly leaving = new Map<string, Promise<void>>();
  private scanned = false;
  private stopping = false;
  /** Where the next periodic resync starts among the namespaces. */
  private resyncTurn = 0;

  constructor(
    private readonly options: FleetOptions,
    private readonly log: Logger,
    private readonly metrics: AgentMetrics,
  ) {}

  /**
   * Serves one namespace; rejects when its agent cannot start (the agent
   * serving one namespace stops there). Members of a fleet that follows a
   * directory are started by follow(), which retries instead.
   */
  async serve(netns: NetworkNamespace): Promise<void> {
    const member = this.join(netns, undefined);
    await this.startMember(member);
    this.scanned = true;
  }

  /**
   * The namespaces to serve (name → key) are now @namespaces: new ones are
   * started, those gone (or whose name now stands for another namespace)
   * forgotten. Two names of one namespace are served once, by the first.
   */
  follow(namespaces: ReadonlyMap<string, string>): void {
    this.scanned = true;
    const byKey = this.forgetMissing(namespaces);
    if (this.stopping) return;
    for (const [key, name] of byKey) {
      const member = this.members.get(name);
      if (!member || member.key !== key) this.startAfterLeaving(key, name);
    }
  }

  /**
   * Forgets the members that are not in @namespaces (name → key) under
   * their own name and key; returns who serves each key: two names of one
   * namespace are served once, by the first.
   */
  forgetMissing(namespaces: ReadonlyMap<string, string>): Map<string, string> {
    const byKey = new Map<string, string>();
    for (const [name, key] of namespaces) if (!byKey.has(key)) byKey.set(key, name);
    for (const member of this.members.values()) {
      if (member.key !== undefined && byKey.get(member.key) !== member.netns.name) void this.forget(member);
    }
    return byKey;
  }

  /** Asks every namespace for a reconcile (the policies changed). */
  reconcileAll(): void {
    for (const member of this.members.values()) void member.agent?.reconcile();
  }

  /**
   * The periodic resync: the next few namespaces (RESYNC_BATCH, in turn)
   * that were reconciled once have their kernel checked against the
   * policies again (a plan; an apply only if something differs), one at a
   * time. Those not reconciled yet are retrying already.
   */
  async resync(): Promise<void> {
    const members = [...this.members.values()].filter((member) => member.agent?.ready && !member.removing);
    const start = this.resyncTurn % Math.max(1, members.length);
    const batch = [...members.slice(start), ...members.slice(0, start)].slice(0, RESYNC_BATCH);
    this.resyncTurn = start + batch.length;
    for (const member of batch) {
      if (this.stopping) return;
      await member.agent?.reconcile();
    }
  }

  /** Ready once the namespaces were listed and each was reconciled once; before, which are not. */
  readiness(): Readiness {
    const members = [...this.members.values()].filter((member) => !member.removing);
    if (!this.scanned) return { ready: false, summary: "not ready: the network namespaces have not been listed yet" };
    const waiting = members.filter((member) => !member.agent?.ready).map((member) => member.label || "(own namespace)");
    if (waiting.length === 0)
      return {
        ready: true,
        summary: `ready: ${members.length} network namespace${members.length === 1 ? "" : "s"} reconciled`,
      };
    const shown =
      waiting.slice(0, NAMES_SHOWN).join(", ") +
      (waiting.length > NAMES_SHOWN ? `, and ${waiting.length - NAMES_SHOWN} more` : "");
    return {
      ready: false,
      summary: `not ready: ${waiting.length} of ${members.length} network namespaces not reconciled yet: ${shown}`,
    };
  }

  /**
   * Every served namespace's kernel state, for a scrape, a few at a time. A
   * namespace that cannot be read (it is being removed, or its reconcile is
   * failing and says why in the log) is left out of this scrape.
   */
  async reports(): Promise<NamespaceReport[]> {
    const members = [...this.members.values()].filter((member) => member.agent?.ready && !member.removing);
    const reports: NamespaceReport[] = [];
    const next = async (): Promise<void> => {
      for (let member = members.shift(); member; member = members.shift()) {
        const datapath = member.datapath;
        if (!datapath) continue;
        try {
          reports.push({ namespace: member.label, report: await inspect(datapath, this.policiesIn(member.netns)) });
        } catch (error) {
          if (!(error instanceof InterceptError)) throw error; // a bug, for the scrape to report
        }
      }
    };
    await Promise.all(Array.from({ length: SCRAPE_CONCURRENCY }, next));
    return reports.sort((a, b) => a.namespace.localeCompare(b.namespace));
  }

  /**
   * Each served namespace's state: whether its kernel matches the policies
   * in force (its last reconcile succeeded, with them), and that reconcile.
   */
  states(): NamespaceState[] {
    const fingerprint = this.options.policies().fingerprint;
    return [...this.members.values()]
      .filter((member) => !member.removing)
      .map((member) => {
        const lastReconcile = member.agent?.lastReconcile;
        const kernelMatches = lastReconcile?.ok === true && lastReconcile.version === fingerprint;
        return { namespace: member.label, ready: member.agent?.ready ?? false, kernelMatches, lastReconcile };
      })
      .sort((a, b) => a.namespace.localeCompare(b.namespace));
  }

  /**
   * Stops every namespace's agent at once (each removes its datapath unless
   * --keep); says how many namespaces were held, so nothing claims to have
   * removed a datapath it never held.
   */
  async stop(): Promise<FleetStopped> {
    this.stopping = true;
    let held = 0;
    await Promise.all(
      [...this.members.values()].map(async (member) => {
        clearTimeout(member.retry);
        // A start waiting for a lock gives up at once (stop asks it to); a failed one's failure was reported when it happened.
        if (await member.agent?.stop()) held++;
        await Promise.allSettled([member.starting]);
      }),
    );
    await Promise.all(this.leaving.values());
    return { held };
  }

  private policiesIn(netns: NetworkNamespace): DesiredPolicy[] {
    return this.options.policies().desired.filter((want) => appliesIn(want.policy, netns.name));
  }

  private join(netns: NetworkNamespace, key: string | undefined): Member {
    const member: Member = {
      netns,
      key,
      label: netns.name ?? "",
      datapath: undefined,
      agent: undefined,
      starting: undefined,
      retry: undefined,
      failures: 0,
      removing: undefined,
    };
    this.members.set(member.label, member);
    return member;
  }

  /** Joins a namespace at once (a later scan sees it), and starts it once its name's and its key's previous agents are gone. */
  private startAfterLeaving(key: string, name: string): void {
    const old = this.members.get(name);
    const member = this.join({ name }, key);
    void (async () => {
      if (old) await this.forget(old);
      await this.leaving.get(key);
      if (member.removing || this.stopping) return;
      this.log("namespace seen", `network namespace "${name}": serving it`, { namespace: name });
      this.startWithRetry(member);
    })();
  }

  /** Starts a following fleet's member; a failure is logged (unless the namespace went) and retried. */
  private startWithRetry(member: Member): void {
    member.starting = this.startMember(member);
    member.starting.catch(async (error: unknown) => {
      if (member.removing || this.stopping) return;
      if (!(await this.stillThere(member))) return; // gone: the directory says so too, and forget() follows
      // Tried again as a failed reconcile is: 1 s, doubling up to 30 s.
      const delay = retryDelay(member.failures++);
      namespaceLogger(this.log, member.netns.name)(
        "error",
        `${messageOf(error).replaceAll("\n", " ")}; trying again in ${delay / 1000} s`,
      );
      member.retry = setTimeout(() => {
        if (!member.removing && !this.stopping) this.startWithRetry(member);
      }, delay);
    });
  }

  private async startMember(member: Member): Promise<void> {
    const datapath = await this.options.host.openDatapath(member.netns, "agent", {
      loadOnce: this.options.loadOnce,
    });
    if (member.key !== undefined && datapath.namespaceKey !== member.key) {
      throw new InterceptError(
        "netns-not-found",
        `network namespace "${member.netns.name}" was replaced while it was opened`,
      );
    }
    member.key = datapath.namespaceKey;
    member.datapath = datapath;
    if (this.stopping) throw new InterceptError("apply-interrupted", "the agent is stopping"); // opened as it stopped: nothing taken yet
    const agent = new NamespaceAgent(
      datapath,
      () => this.policiesIn(member.netns),
      {
        host: this.options.host,
        keep: this.options.keep,
        lockTimeoutMs: this.options.lockTimeoutMs,
        lockHolder: this.options.lockHolder,
        builder: () => this.options.policies().builder,
        version: () => this.options.policies().fingerprint,
        onGone: () => void this.forget(member),
      },
      namespaceLogger(this.log, member.netns.name),
      this.metrics.forNamespace(member.label),
    );
    member.agent = agent;
    await agent.start();
  }

  /** Forgets a namespace that is gone: its agent stops and removes its pins; once, however often asked. */
  private forget(member: Member): Promise<void> {
    member.removing ??= (async () => {
      clearTimeout(member.retry);
      if (this.members.get(member.label) === member) this.members.delete(member.label);
      const leaving = (async () => {
        await Promise.allSettled([member.starting]); // only its end is awaited: a start cut short by the namespace going is no error
        await member.agent?.vanished();
      })();
      if (member.key !== undefined) this.leaving.set(member.key, leaving);
      try {
        await leaving;
      } finally {
        if (member.key !== undefined && this.leaving.get(member.key) === leaving) this.leaving.delete(member.key);
      }
      this.metrics.forget(member.label);
      namespaceLogger(this.log, member.netns.name)(
        "namespace gone",
        `${member.netns.name ? `network namespace "${member.netns.name}"` : "the namespace"} is gone: its pins are removed`,
      );
      this.options.onGone(member.netns);
    })();
    return member.removing;
  }

  /** Whether the member's namespace file is still its namespace (a failure to tell counts as yes: it is reported). */
  private async stillThere(member: Member): Promise<boolean> {
    if (member.netns.name === undefined) return true;
    let file: NamespaceFile;
    try {
      file = await this.options.host.identifyNamespace(member.netns.name);
    } catch {
      return true; // cannot tell: the agent goes on, and its next failure there is reported
    }
    return file.kind === "namespace" && (member.key === undefined || file.key === member.key);
  }
}
