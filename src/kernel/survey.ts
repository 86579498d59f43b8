import { execa } from "execa";
import { InterceptError } from "../errors.js";
import type { NetworkNamespace } from "../model/namespace.js";
import { type Link, toLinks, type IpLink } from "./links.js";
import { Together } from "./together.js";

/** A namespace's links, and which of them have a qdisc that tc filters hang on. */
export interface LinkSurvey {
  links: Link[];
  /**
   * Links with a clsact or ingress qdisc: only they can hold a tc filter on
   * the ingress or egress hook (a classic tc filter needs its qdisc), so
   * only their filters need to be asked for.
   */
  filterHolders: Set<string>;
}

/** The qdiscs on which ingress and egress filters are attached. */
const FILTER_QDISCS = new Set(["clsact", "ingress"]);

/** A namespace name that can stand in a line of `ip -batch` as it is. */
const BATCHABLE_NAME = /^[\w.@:+=,-]+$/;

interface TcQdisc {
  kind: string;
  dev: string;
}

/** Surveys of many namespaces at once, one `ip -batch` for all who ask meanwhile. */
const together = new Together<string, LinkSurvey | undefined>(surveyAll);

/**
 * The links of the named namespace @netns and its filter qdiscs, asked
 * together with the other namespaces surveyed meanwhile: a burst of
 * namespaces costs one process of the agent's for many (each a fork of the
 * agent, ~10 ms of its CPU), where `ip link` and `tc` in each cost two.
 * Undefined when it cannot be told that way (the agent's own namespace, a
 * name a batch line cannot hold, or a namespace of the batch that could
 * not be entered): the caller then asks the namespace itself.
 */
export function surveyLinks(netns: NetworkNamespace): Promise<LinkSurvey | undefined> {
  if (netns.name === undefined || !BATCHABLE_NAME.test(netns.name)) return Promise.resolve(undefined);
  return together.run(netns.name);
}

/**
 * One `ip -force -batch`: in each namespace, `ip -j link show` and `tc -j
 * qdisc show`, each a JSON line. `ip netns exec` runs them in the
 * namespace (in batch mode it forks for each line, from ip, not from the
 * agent); it remounts /sys there, which neither needs. A namespace that
 * cannot be entered prints nothing, so when lines are missing none can be
 * told apart: every one of the batch is then undefined, asked on its own.
 */
async function surveyAll(names: string[]): Promise<(LinkSurvey | undefined)[]> {
  const input = names.flatMap((name) => [`netns exec ${name} ip -j link show`, `netns exec ${name} tc -j qdisc show`]);
  const result = await execa("ip", ["-force", "-batch", "-"], {
    input: `${input.join("\n")}\n`,
    reject: false,
    extendEnv: false,
  });
  if ((result as { code?: string }).code === "ENOENT")
    throw new InterceptError("tool-missing", "ip not found: install iproute2");
  return readSurveys(names.length, String(result.stdout));
}

/**
 * The surveys of @count namespaces from what surveyAll's batch printed:
 * two JSON lines each, links then qdiscs. Any line missing (a namespace
 * that could not be entered prints none) or not JSON, and none can be
 * told apart: all are undefined.
 */
export function readSurveys(count: number, stdout: string): (LinkSurvey | undefined)[] {
  const lines = stdout.split("\n").filter((line) => line.trim());
  const unknown = () => Array.from({ length: count }, () => undefined);
  if (lines.length !== count * 2) return unknown();
  try {
    return Array.from({ length: count }, (_, index) =>
      toSurvey(JSON.parse(lines[index * 2]!) as IpLink[], JSON.parse(lines[index * 2 + 1]!) as TcQdisc[]),
    );
  } catch (error) {
    if (error instanceof SyntaxError) return unknown(); // not what ip and tc print: each namespace is asked alone
    throw error;
  }
}

function toSurvey(links: IpLink[], qdiscs: TcQdisc[]): LinkSurvey {
  const filterHolders = new Set(qdiscs.filter((qdisc) => FILTER_QDISCS.has(qdisc.kind)).map((qdisc) => qdisc.dev));
  return { links: toLinks(links), filterHolders };
}
