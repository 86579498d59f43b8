/**
 * `agent --flows`: every rule's flow records switched on, and the records
 * exported: one log line each (event "flow", every field under
 * --log-format json) and Prometheus counters by namespace, policy, verdict
 * and reason. A namespace is (re)visited when the agent starts serving it
 * or applies a change there: a new version's switches start off, and its
 * namespace's ring buffer exists only once a version is loaded.
 */
import { Counter, type Registry } from "prom-client";
import { messageOf } from "../errors.js";
import { watchNamespace, type FlowWatch } from "../flows/session.js";
import { switchOn, versionsWithEvents } from "../flows/switch.js";
import { flowLine, type FlowView } from "../flows/view.js";
import { namespaceKey } from "../kernel/namespace.js";
import { PinLayout } from "../kernel/pins.js";
import type { NetworkNamespace } from "../model/namespace.js";
import type { DesiredPolicy } from "../reconcile/desired.js";
import type { Logger } from "./log.js";

/** The log events after which a namespace's switches and reader are checked. */
const REVISIT_AFTER = new Set(["agent started", "namespace seen", "applied"]);

export class FlowExport {
  private readonly readers = new Map<string, FlowWatch>();
  private readonly flows: Counter<"namespace" | "policy" | "verdict" | "reason">;
  private visiting = Promise.resolve();
  private stopped = false;

  /**
   * @desired names the rules (the policies in force); file:line is left to
   * `watch`, since the agent reads policy files only in its bounded worker.
   */
  constructor(
    private readonly log: Logger,
    registry: Registry,
    private readonly desired: () => DesiredPolicy[],
  ) {
    this.flows = new Counter({
      name: "intercept_flows_total",
      help: "Connections the datapath decided about (flow records read), by verdict and reason.",
      labelNames: ["namespace", "policy", "verdict", "reason"],
      registers: [registry],
    });
  }

  /** @log, also telling this export when a namespace was served or changed. */
  following(log: Logger): Logger {
    return (event, message, fields = {}) => {
      log(event, message, fields);
      if (!REVISIT_AFTER.has(event)) return;
      const name = typeof fields.namespace === "string" ? fields.namespace : undefined;
      this.visit(name === undefined ? {} : { name });
    };
  }

  /** Switches every version of @netns on and starts its reader if none runs; one visit at a time. */
  visit(netns: NetworkNamespace): void {
    this.visiting = this.visiting.then(() => this.visitNow(netns));
  }

  private async visitNow(netns: NetworkNamespace): Promise<void> {
    if (this.stopped) return;
    const key = netns.name ?? "";
    try {
      const pins = new PinLayout(await namespaceKey(netns));
      const versions = await versionsWithEvents(pins);
      if (versions.length === 0) return; // nothing loaded yet: the next "applied" comes back
      await switchOn(pins, versions); // the agent keeps them on: what it would put back is not kept
      if (!this.readers.has(key)) {
        const watch = await watchNamespace(netns, { desired: this.desired() });
        this.readers.set(key, watch);
        void this.export(key, watch);
        await watch.ready;
      }
      const names = versions.map((ref) => `${ref.policy}@${ref.version.slice(0, 8)}`).join(", ");
      this.log("flows on", `flow records on and read: ${names}`, {
        ...(netns.name !== undefined && { namespace: netns.name }),
        versions: versions.map((ref) => `${ref.policy}@${ref.version}`),
      });
    } catch (error) {
      this.log("error", `flow records of ${key || "this namespace"}: ${messageOf(error)}`, {
        ...(netns.name !== undefined && { namespace: netns.name }),
      });
    }
  }

  private async export(key: string, watch: FlowWatch): Promise<void> {
    try {
      for await (const view of watch.views) this.record(view);
    } catch (error) {
      this.log("error", `flow records: ${messageOf(error)}`, { ...(key && { namespace: key }) });
    } finally {
      // A namespace removed, or its last version unloaded: the next visit starts a reader again.
      this.readers.delete(key);
    }
  }

  private record(view: FlowView): void {
    this.flows.inc({
      namespace: view.namespace ?? "",
      policy: view.policy ?? "",
      verdict: view.verdict,
      reason: view.reason,
    });
    this.log("flow", flowLine(view), { ...view, namespace: view.namespace });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.visiting;
    await Promise.all([...this.readers.values()].map((watch) => watch.stop()));
  }
}
