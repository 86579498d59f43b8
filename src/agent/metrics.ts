import http from "node:http";
import type { AddressInfo } from "node:net";
import { Counter, Gauge, Registry } from "prom-client";
import type { ListenAddress } from "../cli.js";
import { InterceptError, messageOf } from "../errors.js";
import type { StatusReport } from "../reconcile/inspect.js";
import { ruleSummary, singleOriginalPort } from "../validate/index.js";

/** Prometheus metrics (prom-client): rule counters read from the maps when scraped, and the agent's own. */
export class AgentMetrics {
  readonly registry = new Registry();
  readonly applies = new Counter({ name: "intercept_applies_total", help: "Plans applied with changes.", registers: [this.registry] });
  readonly applyFailures = new Counter({ name: "intercept_apply_failures_total", help: "Applies that failed (and were rolled back).", registers: [this.registry] });
  readonly policiesInvalid = new Gauge({ name: "intercept_policies_invalid", help: "1 while the policy files are invalid and the last good policies stay in force.", registers: [this.registry] });
  readonly lastApply = new Gauge({ name: "intercept_last_successful_apply_timestamp_seconds", help: "When the kernel last matched the policies after a reconcile.", registers: [this.registry] });

  /** @inspect reads the kernel at scrape time: its maps are the truth. */
  constructor(inspect: () => Promise<StatusReport>) {
    // selector: the rule in one line (ruleSummary); original_port only for a rule of one port.
    const ruleLabels = ["policy", "rule", "selector", "protocol", "original_port", "port"] as const;
    const directionLabels = [...ruleLabels, "direction"] as const;
    // The registry collects metrics in parallel, so they share one read per scrape.
    let reading: Promise<void> | undefined;
    const refresh = () => (reading ??= readKernel().finally(() => (reading = undefined)));
    const links = new Gauge({ name: "intercept_attached_links", help: "Links with intercept's filters attached.", registers: [this.registry], collect: refresh });
    const packets = new Counter({ name: "intercept_rule_packets_total", help: "Packets rewritten per rewrite rule and direction.", labelNames: directionLabels, registers: [this.registry], collect: refresh });
    const bytes = new Counter({ name: "intercept_rule_bytes_total", help: "Bytes rewritten per rewrite rule and direction.", labelNames: directionLabels, registers: [this.registry], collect: refresh });
    const steered = new Counter({ name: "intercept_rule_connections_steered_total", help: "Connections (SYNs) handed to the proxy's socket per steer rule.", labelNames: ruleLabels, registers: [this.registry], collect: refresh });
    const timeWait = new Counter({ name: "intercept_rule_time_wait_total", help: "SYNs per steer rule whose 4-tuple stayed in TIME_WAIT (a client reusing its port within a minute of a connection the proxy closed, where the TIME_WAIT could not be ended for it): dropped or passed as onProxyDown says.", labelNames: ruleLabels, registers: [this.registry], collect: refresh });
    const timeWaitRecycled = new Counter({ name: "intercept_rule_time_wait_recycled_total", help: "Connections per steer rule steered through a 4-tuple whose TIME_WAIT was ended for them (a subset of intercept_rule_connections_steered_total).", labelNames: ruleLabels, registers: [this.registry], collect: refresh });
    const proxyDown = new Counter({ name: "intercept_rule_proxy_down_total", help: "SYNs per steer rule that found no proxy listening (dropped or passed as onProxyDown says).", labelNames: ruleLabels, registers: [this.registry], collect: refresh });
    const redirected = new Counter({ name: "intercept_outbound_connections_redirected_total", help: "Connections (connect() calls) sent to the local proxy per outbound rule.", labelNames: ruleLabels, registers: [this.registry], collect: refresh });
    const cgroups = new Gauge({ name: "intercept_attached_cgroups", help: "Cgroups with intercept's outbound programs attached.", registers: [this.registry], collect: refresh });
    const drift = new Gauge({ name: "intercept_drift", help: "Things an interrupted run left in the kernel (half-switched links, incomplete loads, empty qdiscs); the next reconcile repairs them.", registers: [this.registry], collect: refresh });
    const unreadable = new Gauge({ name: "intercept_counters_unreadable", help: "Program versions whose counters could not be read at this scrape.", registers: [this.registry], collect: refresh });

    async function readKernel(): Promise<void> {
      const report = await inspect();
      links.set(report.links.length);
      cgroups.set(report.cgroups.filter((cgroup) => cgroup.programs.length > 0).length);
      drift.set(report.drift.length);
      for (const metric of [packets, bytes, steered, proxyDown, timeWait, timeWaitRecycled, redirected]) metric.reset();
      unreadable.set(report.programs.filter((program) => program.countersError !== undefined).length);
      for (const { program, rules } of report.programs) {
        for (const { index, rule, outbound, counters } of rules) {
          if (!counters) continue; // unreadable: counted above, never exported as zero
          if (outbound) {
            redirected.inc({ policy: program.ref.policy, rule: String(index), selector: `outbound tcp ${outbound.originalPort} → ${outbound.port}`, protocol: "tcp", original_port: String(outbound.originalPort), port: String(outbound.port) }, counters.redirected.packets);
            continue;
          }
          const labels = { policy: program.ref.policy, rule: String(index), selector: rule ? ruleSummary(rule) : "", protocol: rule?.protocol ?? "", original_port: String((rule && singleOriginalPort(rule)) ?? ""), port: String(rule?.port ?? "") };
          if (rule?.strategy !== "steer") {
            for (const [direction, slot] of [["ingress", "rewrittenIngress"], ["egress", "rewrittenEgress"]] as const) {
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

  /** Serves /metrics on @listen; resolves with the bound address, rejects when it cannot be bound. */
  serve(listen: ListenAddress): Promise<{ server: http.Server; address: string }> {
    const server = http.createServer(async (request, response) => {
      if (request.url !== "/metrics") {
        response.writeHead(404).end("not found: try /metrics\n");
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
        reject(new InterceptError("metrics-listen", `--metrics: cannot listen on ${listen.host}:${listen.port}: ${error.code ?? error.message}`));
      });
      server.listen(listen.port, listen.host, () => {
        const { address, port } = server.address() as AddressInfo;
        resolve({ server, address: `${address.includes(":") ? `[${address}]` : address}:${port}` });
      });
    });
  }
}
