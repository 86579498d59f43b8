import http from "node:http";
import type { AddressInfo } from "node:net";
import { Counter, Gauge, Registry } from "prom-client";
import { readRuleCounters } from "../live/counters.js";
import { isAttached, type LiveState } from "../live/index.js";
import type { ValidPolicy } from "../validate/index.js";

/** What the metrics need from the agent at scrape time. */
export interface MetricsSource {
  live(): Promise<LiveState>;
  policies(): ValidPolicy[];
}

/** Prometheus metrics (prom-client): rule counters read from the maps when scraped, and the agent's own. */
export class AgentMetrics {
  readonly registry = new Registry();
  readonly applies = new Counter({ name: "intercept_applies_total", help: "Plans applied with changes.", registers: [this.registry] });
  readonly applyFailures = new Counter({ name: "intercept_apply_failures_total", help: "Applies that failed (and were rolled back).", registers: [this.registry] });
  readonly policiesInvalid = new Gauge({ name: "intercept_policies_invalid", help: "1 while the policy files are invalid and the last good policies stay in force.", registers: [this.registry] });
  readonly lastApply = new Gauge({ name: "intercept_last_successful_apply_timestamp_seconds", help: "When the kernel last matched the policies after a reconcile.", registers: [this.registry] });

  constructor(source: MetricsSource) {
    const ruleLabels = ["policy", "rule", "protocol", "original_port", "port", "direction"] as const;
    // The kernel's maps are the truth, read at scrape time; the registry collects metrics in
    // parallel, so they share one read per scrape.
    let reading: Promise<void> | undefined;
    const refresh = () => (reading ??= readKernel().finally(() => (reading = undefined)));
    const links = new Gauge({ name: "intercept_attached_links", help: "Links with intercept's filters attached.", registers: [this.registry], collect: refresh });
    const packets = new Counter({ name: "intercept_rule_packets_total", help: "Packets rewritten per rule and direction.", labelNames: ruleLabels, registers: [this.registry], collect: refresh });
    const bytes = new Counter({ name: "intercept_rule_bytes_total", help: "Bytes rewritten per rule and direction.", labelNames: ruleLabels, registers: [this.registry], collect: refresh });

    async function readKernel(): Promise<void> {
      const live = await source.live();
      links.set(live.attachments.filter(isAttached).length);
      packets.reset();
      bytes.reset();
      for (const program of live.programs) {
        const rules = source.policies().find((p) => p.name === program.policy)?.rules ?? [];
        for (const [index, counters] of (await readRuleCounters(program)).entries()) {
          const rule = rules[index];
          for (const direction of ["ingress", "egress"] as const) {
            const labels = { policy: program.policy, rule: String(index), protocol: rule?.protocol ?? "", original_port: String(rule?.originalPort ?? ""), port: String(rule?.port ?? ""), direction };
            packets.inc(labels, counters[direction].packets);
            bytes.inc(labels, counters[direction].bytes);
          }
        }
      }
    }
  }

  /** Serves /metrics on host:port; resolves with the bound address. */
  serve(listen: string): Promise<{ server: http.Server; address: string }> {
    const [host, port] = parseListen(listen);
    const server = http.createServer(async (request, response) => {
      if (request.url !== "/metrics") {
        response.writeHead(404).end("not found: try /metrics\n");
        return;
      }
      try {
        response.writeHead(200, { "Content-Type": this.registry.contentType }).end(await this.registry.metrics());
      } catch (error) {
        response.writeHead(500).end(`${(error as Error).message}\n`);
      }
    });
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        const { address, port: bound } = server.address() as AddressInfo;
        resolve({ server, address: `${address}:${bound}` });
      });
    });
  }
}

/** "HOST:PORT" or ":PORT" / "PORT" (then 127.0.0.1: never exposed unless asked). */
function parseListen(listen: string): [string, number] {
  const at = listen.lastIndexOf(":");
  const host = at > 0 ? listen.slice(0, at).replace(/^\[|\]$/g, "") : "127.0.0.1";
  const port = Number(at >= 0 ? listen.slice(at + 1) : listen);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--metrics: invalid address "${listen}" (HOST:PORT)`);
  return [host, port];
}
