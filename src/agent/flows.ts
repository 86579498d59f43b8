/**
 * `agent --flows`: every rule's flow records switched on, and the records
 * exported: one log line each (event "flow", every field under
 * --log-format json), Prometheus counters by namespace, policy, verdict
 * and reason, the last few of each rule published for `status`
 * (src/flows/recent.ts), and every record relayed to each `watch` run
 * beside the agent (src/flows/relay.ts): a ring buffer has one reader,
 * and the agent holds its lock. A namespace is (re)visited when the agent
 * starts serving it or applies a change there: a new version's switches
 * start off, and its namespace's ring buffer exists only once a version is
 * loaded.
 */
import { Counter, type Registry } from "prom-client";
import { InterceptError, messageOf } from "../errors.js";
import { RecentFlows } from "../flows/recent.js";
import { FlowRelay } from "../flows/relay.js";
import { watchNamespace, type FlowEntry, type FlowWatch } from "../flows/session.js";
import { switchOn, versionsWithEvents } from "../flows/switch.js";
import { flowLine } from "../flows/view.js";
import type { Host } from "../host/types.js";
import { namespaceKey } from "../kernel/namespace.js";
import { PinLayout } from "../kernel/pins.js";
import type { NetworkNamespace } from "../model/namespace.js";
import { flowsFiles } from "../model/recent-flows.js";
import type { DesiredPolicy } from "../reconcile/desired.js";
import type { Logger } from "./log.js";

/** The log events after which a namespace's switches and reader are checked. */
const REVISIT_AFTER = new Set(["agent started", "namespace seen", "applied"]);

/** How soon a namespace whose ring buffer another process reads (a `watch` started first) is tried again. */
const BUSY_RETRY_MS = 5_000;

/** What the agent runs for one namespace it reads. */
interface Reader {
  watch: FlowWatch;
  relay: FlowRelay;
  recent: RecentFlows;
  stopping?: Promise<void>;
}

export class FlowExport {
  private readonly readers = new Map<string, Reader>();
  private readonly retries = new Map<string, NodeJS.Timeout>();
  private readonly flows: Counter<"namespace" | "policy" | "verdict" | "reason">;
  private visiting = Promise.resolve();
  private stopped = false;

  /**
   * @desired names the rules (the policies in force); file:line is left to
   * `watch`, since the agent reads policy files only in its bounded worker.
   * @host holds the reader lock and the files `status` reads.
   */
  constructor(
    private readonly log: Logger,
    registry: Registry,
    private readonly desired: () => DesiredPolicy[],
    private readonly host: Pick<Host, "lockFlowReader" | "publishRecentFlows" | "removeRecentFlows">,
  ) {
    this.flows = new Counter({
      name: "intercept_flows_total",
      help: "Connections the datapath decided about (flow records read), by verdict and reason.",
      labelNames: ["namespace", "policy", "verdict", "reason"],
      registers: [registry],
    });
  }

  /** @log, also telling this export when a namespace was served, changed or forgotten. */
  following(log: Logger): Logger {
    return (event, message, fields = {}) => {
      log(event, message, fields);
      const name = typeof fields.namespace === "string" ? fields.namespace : undefined;
      if (event === "namespace gone") this.visiting = this.visiting.then(() => this.forget(name ?? ""));
      if (!REVISIT_AFTER.has(event)) return;
      this.visit(name === undefined ? {} : { name });
    };
  }

  /** Switches every version of @netns on and starts its reader if none runs; one visit at a time. */
  visit(netns: NetworkNamespace): void {
    this.visiting = this.visiting.then(() => this.visitNow(netns));
  }

  private async visitNow(netns: NetworkNamespace): Promise<void> {
    if (this.stopped) return;
    const label = netns.name ?? "";
    const where = netns.name !== undefined ? { namespace: netns.name } : {};
    clearTimeout(this.retries.get(label));
    this.retries.delete(label);
    try {
      const pins = new PinLayout(await namespaceKey(netns));
      const versions = await versionsWithEvents(pins);
      if (versions.length === 0) {
        await this.forget(label); // its last program went: nothing writes records there any more
        return; // the next "applied" comes back
      }
      await switchOn(pins, versions); // the agent keeps them on: what it would put back is not kept
      const reader = this.readers.get(label) ?? (await this.startReader(netns, label));
      if (!reader) return;
      reader.recent.retain(new Set(versions.map((ref) => ref.version)));
      const names = versions.map((ref) => `${ref.policy}@${ref.version.slice(0, 8)}`).join(", ");
      this.log("flows on", `flow records on and read: ${names}`, {
        ...where,
        versions: versions.map((ref) => `${ref.policy}@${ref.version}`),
      });
    } catch (error) {
      this.log("error", `flow records of ${label || "this namespace"}: ${messageOf(error)}`, where);
    }
  }

  /** Takes the namespace's ring buffer (its lock), relays it and publishes its last records; undefined while another reads it. */
  private async startReader(netns: NetworkNamespace, label: string): Promise<Reader | undefined> {
    let watch: FlowWatch;
    try {
      watch = await watchNamespace(netns, {
        desired: this.desired(),
        lockReader: (key) => this.host.lockFlowReader(key, "intercept agent --flows"),
      });
    } catch (error) {
      if (!(error instanceof InterceptError) || error.code !== "lock-held") throw error;
      this.log("waiting", `${messageOf(error)}; trying again in ${BUSY_RETRY_MS / 1000} s`, {
        ...(netns.name !== undefined && { namespace: netns.name }),
      });
      this.retries.set(
        label,
        setTimeout(() => this.visit(netns), BUSY_RETRY_MS),
      );
      return undefined;
    }
    let relay: FlowRelay;
    try {
      relay = await FlowRelay.listen(flowsFiles(watch.key).socket);
    } catch (error) {
      await watch.stop();
      throw error;
    }
    const recent = new RecentFlows(this.host, watch.key, {
      failed: (error) => this.log("error", `the last flow records for status: ${messageOf(error)}`),
    });
    const reader: Reader = { watch, relay, recent };
    this.readers.set(label, reader);
    void this.export(label, reader);
    await watch.ready;
    await recent.publish(); // an empty file: status says an agent reads here, and no record came yet
    return reader;
  }

  private async export(label: string, reader: Reader): Promise<void> {
    try {
      for await (const batch of reader.watch.entries) {
        reader.relay.send(batch.map((entry) => entry.bytes)); // one write a watcher
        const logBatch = () => {
          for (const entry of batch) this.record(entry, reader);
        };
        if (this.log.batch)
          this.log.batch(logBatch); // the batch's lines in one write
        else logBatch();
      }
    } catch (error) {
      this.log("error", `flow records: ${messageOf(error)}`, { ...(label && { namespace: label }) });
    } finally {
      // Its reader stopped (or was stopped): the next visit starts one again.
      await this.stopReader(label, reader);
    }
  }

  private record({ record, view }: FlowEntry, reader: Reader): void {
    reader.recent.add(record, view);
    this.flows.inc({
      namespace: view.namespace ?? "",
      policy: view.policy ?? "",
      verdict: view.verdict,
      reason: view.reason,
    });
    this.log("flow", flowLine(view), { ...view, namespace: view.namespace });
  }

  /** Stops reading @label's records, and removes what it published: status then says no agent reads there. */
  private async forget(label: string): Promise<void> {
    clearTimeout(this.retries.get(label));
    this.retries.delete(label);
    const reader = this.readers.get(label);
    if (reader) await this.stopReader(label, reader);
  }

  private stopReader(label: string, reader: Reader): Promise<void> {
    reader.stopping ??= (async () => {
      if (this.readers.get(label) === reader) this.readers.delete(label);
      try {
        await reader.relay.close();
        await reader.watch.stop();
        await reader.recent.close();
      } catch (error) {
        // Said, not thrown: the agent goes on (a file left behind names a pid that is gone, which status says).
        this.log("error", `stopping the flow records of ${label || "this namespace"}: ${messageOf(error)}`);
      }
    })();
    return reader.stopping;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const timer of this.retries.values()) clearTimeout(timer);
    this.retries.clear();
    await this.visiting;
    await Promise.all([...this.readers].map(([label, reader]) => this.stopReader(label, reader)));
  }
}
