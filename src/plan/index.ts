import { InterceptError } from "../errors.js";
import { describeNamespace } from "../kernel/namespace.js";
import { isAttached, programOnLink, runsProgram, slotTakenBy, type Link, type LiveProgram, type LiveState } from "../live/index.js";
import { FILTER_HANDLE, FILTER_PREF } from "../kernel/tc.js";
import type { InterfaceSelection, ValidPolicy } from "../validate/index.js";
import type { AttachmentChange, Change, Plan, ProgramChange, RuleChange } from "./model.js";

export type { AttachmentChange, Change, Plan, PlanSummary, ProgramChange, RuleChange } from "./model.js";
export { summarise } from "./model.js";
export { renderPlan } from "./render.js";

/** A policy as it should be live: its program identity and its rules' switches. */
export interface DesiredPolicy {
  policy: ValidPolicy;
  contentHash: string;
}

/**
 * Stage 6: the changes that make @live match @desired. Deterministic, pure:
 * programs (in policy order, then stale ones), links (by address), rules.
 */
export function makePlan(desired: DesiredPolicy[], live: LiveState): Plan {
  const linkOwners = assignLinks(desired, live);
  const changes: Change[] = [];
  const current = new Map<string, LiveProgram | undefined>();
  for (const want of desired) {
    const [program, programChanges] = planProgram(want, live);
    current.set(want.policy.name, program);
    changes.push(...programChanges);
  }
  for (const stale of live.programs.filter((p) => !desired.some((d) => d.policy.name === p.policy))) {
    changes.push(programDelete(stale, `policy "${stale.policy}" is no longer given`));
  }
  changes.push(...planAttachments(linkOwners, live));
  for (const want of desired) changes.push(...planRules(want, current.get(want.policy.name)));
  return { netns: live.netns, namespaceKey: live.namespaceKey, changes };
}

/** The live version to keep (same content hash), and the changes around it. */
function planProgram(want: DesiredPolicy, live: LiveState): [LiveProgram | undefined, ProgramChange[]] {
  const name = want.policy.name;
  const versions = live.programs.filter((p) => p.policy === name);
  const keep = versions.find((p) => p.contentHash === want.contentHash);
  const others = versions.filter((p) => p !== keep);
  const enabled = want.policy.rules.map((rule) => rule.enabled);
  const changes: ProgramChange[] = [];
  if (!keep && others.length > 0) {
    const [replaced, ...extra] = others;
    changes.push({
      resource: "program", action: "replace", address: `program.${name}`, policy: name,
      contentHash: want.contentHash, enabled, oldDir: replaced!.dir,
      reason: `program changed (${short(replaced!.contentHash)} → ${short(want.contentHash)})`,
    });
    changes.push(...extra.map((p) => programDelete(p, "stale version")));
  } else if (!keep) {
    changes.push({
      resource: "program", action: "create", address: `program.${name}`, policy: name,
      contentHash: want.contentHash, enabled, reason: `new policy, ${plural(want.policy.rules.length, "rule")}`,
    });
  } else {
    changes.push(...others.map((p) => programDelete(p, "stale version")));
  }
  return [keep, changes];
}

function programDelete(program: LiveProgram, reason: string): ProgramChange {
  return { resource: "program", action: "delete", address: `program.${program.policy}`, policy: program.policy, oldDir: program.dir, reason };
}

/** Which desired policy each non-loopback link belongs to; two claiming one link is an error. */
function assignLinks(desired: DesiredPolicy[], live: LiveState): Map<Link, DesiredPolicy | undefined> {
  const owners = new Map<Link, DesiredPolicy | undefined>();
  for (const link of live.links.filter((l) => !l.loopback)) {
    const claimants = desired.filter((want) => selects(want.policy.interfaces, link.name));
    if (claimants.length > 1) {
      throw new InterceptError("plan-conflict", `interface ${link.name} in ${describeNamespace(live.netns)} is selected by more than one policy: ${claimants.map((c) => c.policy.name).join(", ")}`);
    }
    owners.set(link, claimants[0]);
  }
  return owners;
}

function planAttachments(owners: Map<Link, DesiredPolicy | undefined>, live: LiveState): AttachmentChange[] {
  const changes: AttachmentChange[] = [];
  for (const [link, owner] of owners) {
    const attachment = live.attachments.find((a) => a.link.ifindex === link.ifindex);
    const attached = isAttached(attachment);
    const running = attached ? programOnLink(live, attachment!) : undefined;
    const base = { resource: "attachment" as const, address: `attachment.${link.name}`, link: link.name, ifindex: link.ifindex };
    if (!owner) {
      if (attached) changes.push({ ...base, action: "delete", reason: "no policy selects this link" });
      continue;
    }
    const taken = attachment && slotTakenBy(attachment);
    if (taken) {
      throw new InterceptError("plan-conflict", `interface ${link.name}: tc pref ${FILTER_PREF} handle ${FILTER_HANDLE}, where intercept attaches, is held by a filter intercept did not create (${taken.kind} ${taken.programName ?? ""}); remove it or exclude the interface`);
    }
    const target = { policy: owner.policy.name, contentHash: owner.contentHash };
    const wanted = live.programs.find((p) => p.policy === owner.policy.name && p.contentHash === owner.contentHash);
    if (!attached) {
      changes.push({ ...base, ...target, action: "create", reason: `attach ${owner.policy.name}` });
    } else if (!wanted || !runsProgram(attachment!, wanted)) {
      const from = running ? `${running.policy}@${short(running.contentHash)}` : "an unknown program";
      changes.push({ ...base, ...target, action: "update", reason: `switch from ${from} to ${owner.policy.name}@${short(owner.contentHash)}` });
    }
  }
  return changes.sort((a, b) => a.address.localeCompare(b.address));
}

/** Live edits: rules whose enabled flag differs in the program that stays. */
function planRules(want: DesiredPolicy, program: LiveProgram | undefined): RuleChange[] {
  if (!program) return [];
  return want.policy.rules
    .filter((rule) => program.enabled[rule.index] !== rule.enabled)
    .map((rule) => ({
      resource: "rule", action: "update", address: `rule.${want.policy.name}[${rule.index}]`,
      policy: want.policy.name, contentHash: want.contentHash, index: rule.index, enabled: rule.enabled,
      reason: `${rule.protocol} ${rule.originalPort} → ${rule.port}: ${rule.enabled ? "enable" : "disable"} (live edit, no reload)`,
    }));
}

/** Interface selection by glob (* and ?), loopback never included. */
export function selects(selection: InterfaceSelection, name: string): boolean {
  const included = selection.include === null || selection.include.some((glob) => globMatch(glob, name));
  return included && !selection.exclude.some((glob) => globMatch(glob, name));
}

function globMatch(glob: string, name: string): boolean {
  const pattern = glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${pattern}$`).test(name);
}

function short(hash: string): string {
  return hash ? hash.slice(0, 8) : "unknown";
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}
