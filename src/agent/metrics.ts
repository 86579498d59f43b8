import http from "node:http";
import type { AddressInfo } from "node:net";
import { Counter, Gauge, Registry } from "prom-client";
import type { ListenAddress } from "../model/listen-address.js";
import { InterceptError, messageOf } from "../errors.js";
import type { StatusReport } from "../reconcile/inspect.js";
import { ruleSummary, singleOriginalPort } from "../validate/index.js";
import type { NamespaceState } from "./fleet.js";
import { FINGERPRINT_SHOWN } from "./policy-fingerprint.js";

/** One namespace's kernel state at a scrape; `namespace` is its label value ("" for the agent's own). */
export interface NamespaceReport {
  namespace: string;
  report: StatusReport;
}

/** Whether every namespace the agent manages has been reconciled once: what /healthz answers. */
export interface Readiness {
  ready: boolean;
  /** One line for a person: what is ready, or which namespaces are not yet. */
  summary: string;
}

/**
 * Whether the kernel matches the files, as the agent knows it: when the
 * files were last read and what they held, the policies in force, and each
 * namespace's last reconcile. /healthz and the metrics both say this.
 */
export interface PolicyHealth {
  /** When the files were last read (ms since the epoch), by an event, the resync or SIGHUP. */
  lastReadAt: number | undefined;
  /** The content hash of the files as last read. */
  readFingerprint: string | undefined;
  /** What that read found: valid, invalid (settled and reported), settling (being written), error. */
  readOutcome: "valid" | "invalid" | "settling" | "error" | undefined;
  /** The content hash of the policies in force (the last valid files). */
  inForceFingerprint: string | undefined;
  namespaces: NamespaceState[];
}

/** The files read are in force, and every namespace's kernel matches them. */
export function upToDate(health: PolicyHealth): boolean {
  return (
    health.readFingerprint !== undefined &&
    health.readFingerprint === health.inForceFingerprint &&
    health.namespaces.every((state) => state.kernelMatches)
  );
}

/** /healthz's JSON body (`Accept: application/json`, or `/healthz?format=json`). */
export function healthJson(readiness: Readiness, health: PolicyHealth): object {
  const seconds = (ms: number | undefined) => (ms === undefined ? null : ms / 1000);
  return {
    ready: readiness.ready,
    summary: readiness.summary,
    policies: {
      lastReadAt: seconds(health.lastReadAt),
      readHash: shortHash(health.readFingerprint),
      readOutcome: health.readOutcome ?? null,
      inForceHash: shortHash(health.inForceFingerprint),
      invalid: health.readOutcome === "invalid",
      behind: !upToDate(health),
    },
    namespaces: health.namespaces.map((state) => ({
      namespace: state.namespace,
      ready: state.ready,
      kernelMatches: state.kernelMatches,
      lastReconcile: state.lastReconcile
        ? {
            result: state.lastReconcile.ok ? "ok" : "error",
            at: seconds(state.lastReconcile.at),
            policiesHash: shortHash(state.lastReconcile.version),
            ...(state.lastReconcile.error !== undefined && { error: state.lastReconcile.error }),
          }
        : null,
    })),
  };
}

/** A fingerprint as logs, metrics and /healthz show it. */
export function shortHash(fingerprint: string | undefined): string | null {
  return fingerprint === undefined ? null : fingerprint.slice(0, FINGERPRINT_SHOWN);
}

/** The metrics of one namespace's reconciles, by its label. */
export interface NamespaceMetrics {
  applied(): void;
  failed(): void;
  succeeded(): void;
}

/**
 * Prometheus metrics (prom-client): rule counters read from the maps when
 * scraped, and the agent's own. Every per-rule and per-namespace metric has
 * a `namespace` label (the `ip netns` name; empty, which Prometheus reads as
 * no label, for the agent's own namespace); a namespace that is forgotten
 * takes its series with it.
 */
export class AgentMetrics {
  readonly registry = new Registry();
  private readonly applies = new Counter({
    name: "intercept_applies_total",
    help: "Plans applied with changes.",
    labelNames: ["namespace"],
    registers: [this.registry],
  });
  private readonly applyFailures = new Counter({
    name: "intercept_apply_failures_total",
    help: "Reconciles that failed (an apply rolled back, or the kernel could not be read).",
    labelNames: ["namespace"],
    registers: [this.registry],
  });
  private readonly lastApply = new Gauge({
    name: "intercept_last_successful_apply_timestamp_seconds",
    help: "When the kernel last matched the policies after a reconcile.",
    labelNames: ["namespace"],
    registers: [this.registry],
  });

  /**
   * @inspect reads the kernel of every namespace at scrape time: its maps are
   * the truth. @health says what the agent read and reconciled (none: the
   * policy metrics are not exported).
   */
  constructor(inspect: () => Promise<NamespaceReport[]>, health?: () => PolicyHealth) {
    if (health) this.policyMetrics(health);
    // selector: the rule in one line (ruleSummary); original_port only for a rule of one port.
    const ruleLabels = ["namespace", "policy", "rule", "selector", "protocol", "original_port", "port"] as const;
    const directionLabels = [...ruleLabels, "direction"] as const;
    // The registry collects metrics in parallel, so they share one read per scrape.
    let reading: Promise<void> | undefined;
    const refresh = () => (reading ??= readKernel().finally(() => (reading = undefined)));
    const perNamespace = { labelNames: ["namespace"] as const, registers: [this.registry], collect: refresh };
    const links = new Gauge({
      name: "intercept_attached_links",
      help: "Links with intercept's filters attached.",
      ...perNamespace,
    });
    const drift = new Gauge({
      name: "intercept_drift",
      help: "Things an interrupted run left in the kernel (half-switched links, incomplete loads, empty qdiscs); the next reconcile repairs them.",
      ...perNamespace,
    });
    const unreadable = new Gauge({
      name: "intercept_counters_unreadable",
      help: "Program versions whose counters could not be read at this scrape.",
      ...perNamespace,
    });
    const cgroups = new Gauge({
      name: "intercept_attached_cgroups",
      help: "Cgroups with intercept's outbound programs attached.",
      ...perNamespace,
    });
    const packets = new Counter({
      name: "intercept_rule_packets_total",
      help: "Packets rewritten per rewrite rule and direction.",
      labelNames: directionLabels,
      registers: [this.registry],
      collect: refresh,
    });
    const bytes = new Counter({
      name: "intercept_rule_bytes_total",
      help: "Bytes rewritten per rewrite rule and direction.",
      labelNames: directionLabels,
      registers: [this.registry],
      collect: refresh,
    });
    const steered = new Counter({
      name: "intercept_rule_connections_steered_total",
      help: "Connections (SYNs) handed to the proxy's socket per steer rule.",
      labelNames: ruleLabels,
      registers: [this.registry],
      collect: refresh,
    });
    const timeWait = new Counter({
      name: "intercept_rule_time_wait_total",
      help: "SYNs per steer rule whose 4-tuple was still in TIME_WAIT (a client reusing its port within a minute of a connection the proxy closed): dropped or passed as onProxyDown says.",
      labelNames: ruleLabels,
      registers: [this.registry],
      collect: refresh,
    });
    const timeWaitRecycled = new Counter({
      name: "intercept_rule_time_wait_recycled_total",
      help: "Connections per steer rule steered through a 4-tuple whose TIME_WAIT the program ended for them.",
      labelNames: ruleLabels,
      registers: [this.registry],
      collect: refresh,
    });
    const redirected = new Counter({
      name: "intercept_outbound_connections_redirected_total",
      help: "Connections (connect() calls) sent to the local proxy per outbound rule.",
      labelNames: ruleLabels,
      registers: [this.registry],
      collect: refresh,
    });
    const proxyDown = new Counter({
      name: "intercept_rule_proxy_down_total",
      help: "SYNs per steer rule that found no proxy listening (dropped or passed as onProxyDown says).",
      labelNames: ruleLabels,
      registers: [this.registry],
      collect: refresh,
    });

    async function readKernel(): Promise<void> {
      const reports = await inspect();
      // Everything is set afresh from this scrape's reads: a namespace gone since the last one leaves no series.
      for (const metric of [
        links,
        drift,
        unreadable,
        cgroups,
        packets,
        bytes,
        steered,
        proxyDown,
        timeWait,
        timeWaitRecycled,
        redirected,
      ])
        metric.reset();
      for (const { namespace, report } of reports) {
        links.set({ namespace }, report.links.length);
        drift.set({ namespace }, report.drift.length);
        unreadable.set({ namespace }, report.programs.filter((program) => program.countersError !== undefined).length);
        cgroups.set({ namespace }, report.cgroups.filter((cgroup) => cgroup.programs.length > 0).length);
        for (const { program, rules } of report.programs) {
          for (const { index, owner, rule, outbound, counters } of rules) {
            if (!counters) continue; // unreadable: counted above, never exported as zero
            if (outbound) {
              const selector = `outbound tcp ${outbound.originalPort} → ${outbound.port}`;
              redirected.inc(
                {
                  namespace,
                  // A rule keeps its policy's address in a composed program; its programs' counts add up.
                  policy: owner?.policy ?? program.ref.policy,
                  rule: String(owner?.index ?? index),
                  selector,
                  protocol: "tcp",
                  original_port: String(outbound.originalPort),
                  port: String(outbound.port),
                },
                counters.redirected.packets,
              );
              continue;
            }
            const labels = {
              namespace,
              policy: owner?.policy ?? program.ref.policy,
              rule: String(owner?.index ?? index),
              selector: rule ? ruleSummary(rule) : "",
              protocol: rule?.protocol ?? "",
              original_port: String((rule && singleOriginalPort(rule)) ?? ""),
              port: String(rule?.port ?? ""),
            };
            if (rule?.strategy !== "steer") {
              for (const [direction, slot] of [
                ["ingress", "rewrittenIngress"],
                ["egress", "rewrittenEgress"],
              ] as const) {
                packets.inc({ ...labels, direction }, counters[slot].packets);
                bytes.inc({ ...labels, direction }, counters[slot].bytes);
              }
            }
            if (rule?.strategy !== "rewrite") {
              steered.inc(labels, counters.steered.packets);
              proxyDown.inc(labels, counters.proxyDown.packets);
              timeWait.inc(labels, counters.timeWait.packets);
              timeWaitRecycled.inc(labels, counters.timeWaitRecycled.packets);
            }
          }
        }
      }
    }
  }

  /** Whether the files, the policies in force and the kernel agree: set from @health at every scrape. */
  private policyMetrics(health: () => PolicyHealth): void {
    const registers = [this.registry];
    const gauge = (
      name: string,
      help: string,
      set: (gauge: Gauge, now: PolicyHealth) => void,
      labelNames: string[] = [],
    ) => {
      const metric: Gauge = new Gauge({
        name,
        help,
        labelNames,
        registers,
        collect: () => {
          metric.reset();
          set(metric, health());
        },
      });
    };
    gauge(
      "intercept_policies_invalid",
      "1 while the policy files are invalid (unchanged for the settle time) and the last good policies stay in force.",
      (g, now) => g.set(now.readOutcome === "invalid" ? 1 : 0),
    );
    gauge(
      "intercept_policies_behind",
      "1 while the files last read are not what every namespace's kernel was last reconciled to: invalid or still being written, a reconcile pending or failing.",
      (g, now) => g.set(upToDate(now) ? 0 : 1),
    );
    gauge(
      "intercept_policies_last_read_timestamp_seconds",
      "When the policy files were last read (an event, the periodic resync, or SIGHUP).",
      (g, now) => {
        if (now.lastReadAt !== undefined) g.set(now.lastReadAt / 1000);
      },
    );
    gauge(
      "intercept_policies_read_info",
      "The content hash of the policy files as last read (and of --objects), as the hash label.",
      (g, now) => {
        if (now.readFingerprint !== undefined) g.set({ hash: shortHash(now.readFingerprint)! }, 1);
      },
      ["hash"],
    );
    gauge(
      "intercept_policies_in_force_info",
      "The content hash of the policies in force (the last valid files), as the hash label.",
      (g, now) => {
        if (now.inForceFingerprint !== undefined) g.set({ hash: shortHash(now.inForceFingerprint)! }, 1);
      },
      ["hash"],
    );
    gauge(
      "intercept_kernel_matches",
      "1 when the namespace's last reconcile succeeded with the policies in force.",
      (g, now) => {
        for (const state of now.namespaces) g.set({ namespace: state.namespace }, state.kernelMatches ? 1 : 0);
      },
      ["namespace"],
    );
    gauge(
      "intercept_last_reconcile_success",
      "1 when the namespace's last reconcile succeeded, 0 when it failed.",
      (g, now) => {
        for (const state of now.namespaces)
          if (state.lastReconcile) g.set({ namespace: state.namespace }, state.lastReconcile.ok ? 1 : 0);
      },
      ["namespace"],
    );
    gauge(
      "intercept_last_reconcile_timestamp_seconds",
      "When the namespace's last reconcile ended, successful or not.",
      (g, now) => {
        for (const state of now.namespaces)
          if (state.lastReconcile) g.set({ namespace: state.namespace }, state.lastReconcile.at / 1000);
      },
      ["namespace"],
    );
  }

  /** The reconcile metrics of the namespace labelled @namespace, shown (at zero) from now on. */
  forNamespace(namespace: string): NamespaceMetrics {
    const labels = { namespace };
    this.applies.inc(labels, 0);
    this.applyFailures.inc(labels, 0);
    return {
      applied: () => this.applies.inc(labels),
      failed: () => this.applyFailures.inc(labels),
      succeeded: () => this.lastApply.setToCurrentTime(labels),
    };
  }

  /** Drops a forgotten namespace's series. */
  forget(namespace: string): void {
    for (const metric of [this.applies, this.applyFailures, this.lastApply]) metric.remove({ namespace });
  }

  /**
   * Serves /metrics, and /healthz (200 once every namespace was reconciled
   * once, 503 with the names still waiting before) on @listen; resolves with
   * the bound address, rejects when it cannot be bound. /healthz answers in
   * one line of text, or as JSON with what @health says (whether the files
   * read are in force and the kernel matches them) when asked for JSON.
   */
  serve(
    listen: ListenAddress,
    readiness: () => Readiness,
    health?: () => PolicyHealth,
  ): Promise<{ server: http.Server; address: string }> {
    const server = http.createServer(async (request, response) => {
      const [url, query] = (request.url ?? "").split("?");
      if (url === "/healthz") {
        const now = readiness();
        const json =
          health &&
          (new URLSearchParams(query).get("format") === "json" ||
            /\bapplication\/json\b/.test(request.headers.accept ?? ""));
        if (json)
          response
            .writeHead(now.ready ? 200 : 503, { "Content-Type": "application/json" })
            .end(`${JSON.stringify(healthJson(now, health()))}\n`);
        else
          response
            .writeHead(now.ready ? 200 : 503, { "Content-Type": "text/plain; charset=utf-8" })
            .end(`${now.summary}\n`);
        return;
      }
      if (url !== "/metrics") {
        response.writeHead(404).end("not found: try /metrics or /healthz\n");
        return;
      }
      try {
        response.writeHead(200, { "Content-Type": this.registry.contentType }).end(await this.registry.metrics());
      } catch (error) {
        response.writeHead(500).end(`${messageOf(error)}\n`);
      }
    });
    return new Promise((resolve, reject) => {
      server.once("error", (error: NodeJS.ErrnoException) => {
        reject(
          new InterceptError(
            "metrics-listen",
            `--metrics: cannot listen on ${listen.host}:${listen.port}: ${error.code ?? error.message}`,
          ),
        );
      });
      server.listen(listen.port, listen.host, () => {
        const { address, port } = server.address() as AddressInfo;
        resolve({ server, address: `${address.includes(":") ? `[${address}]` : address}:${port}` });
      });
    });
  }
}
