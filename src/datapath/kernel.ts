import { existsSync, mkdirSync } from "node:fs";
import { constants } from "node:os";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { InterceptError } from "../errors.js";
import {
  deleteMapEntries,
  deleteMapEntry,
  hashMapCommands,
  loadCommand,
  mapKeys,
  runCommands,
  runCommandsTogether,
  updateCommand,
  updateMap,
  updateMaps,
  type MapUpdate,
} from "../kernel/bpftool.js";
import {
  attachedTree,
  attachToCgroup,
  cgroupDirectory,
  cgroupRoot,
  detachFromCgroup,
  statCgroup,
} from "../kernel/cgroups.js";
import {
  createPinnedHashMap,
  type HashMapShape,
  lookupPerCpu,
  pinnedArray,
  pinnedMapKeys,
  pinnedProgramId,
  updateElement,
  withPinned,
} from "../kernel/bpf-syscall.js";
import { failure } from "../kernel/netlink.js";
import { type NetworkNamespace } from "../model/namespace.js";
import { listLinks, surveyLinks, type LinkSurvey } from "../kernel/survey.js";
import { namespaceKey } from "../kernel/namespace.js";
import { listListeners } from "../kernel/sockets.js";
import { requireKernelPrivileges } from "../kernel/privileges.js";
import { ensureBpffs, listEntries, NODE_PINS, PinLayout, removeIfEmpty, removePins } from "../kernel/pins.js";
import {
  addClsact,
  attachSteps,
  deleteClsact,
  deleteFilter,
  inOurSlot,
  isOurs,
  listLinkStates,
  replaceFilters,
  type FilterTarget,
  type TcLinkState,
  type TcStep,
} from "../kernel/tc.js";
import {
  arrayKey,
  cString,
  exemptCgroupOf,
  exemptCgroupValue,
  FLOW_EVENT_MAPS,
  MAPS,
  OUTBOUND_RECORD_MAPS,
  policyMetaValue,
  prefixBytes,
  prefixMap,
  QDISC_REGISTRY,
  qdiscRecord,
  ruleEnabled,
  ruleStateValue,
  type MapName,
  type PrefixEntry,
} from "../model/bpf-abi.js";
import { readNodePrograms } from "../kernel/node-table.js";
import { COUNTER_SLOTS, counterKey } from "../model/counters.js";
import { LOADER_SLOT } from "../model/namespace-slot.js";
import { hexByte, readHostU32, readHostU64 } from "../model/host-order.js";
import { isProgramName } from "../model/composition.js";
import { isVersionName } from "../model/version.js";
import {
  performEach,
  type CgroupIdentity,
  type CgroupRef,
  type Counter,
  type DatapathOptions,
  type Datapath,
  type DatapathOperation,
  type EmptyPin,
  type LinkRef,
  type ObservedCgroup,
  type ObservedLink,
  type ObservedProgram,
  type ObservedState,
  type ObserveInterest,
  type ProgramLoad,
  type RuleCounters,
  type RunResult,
} from "./types.js";
import { CGROUP_HOOKS, HOOKS, type CgroupHook, type Hook } from "../model/hooks.js";
import { type LoadShares, shareLoads } from "./shared-versions.js";
import { releaseNamespaceSlots, releaseSlot, slotOf } from "../kernel/slot-claims.js";
import { type VersionRef } from "../model/version.js";

/** Entries of the owned-qdisc registry: far more links than a namespace has. */
export const QDISC_REGISTRY_ENTRIES = 4096;

/** The real datapath: bpftool, tc and ip, for one network namespace. */
export class KernelDatapath implements Datapath {
  private constructor(
    readonly netns: NetworkNamespace,
    readonly namespaceKey: string,
    private readonly pins: PinLayout,
    /** The cgroup2 mount (null: none); cgroups are not per network namespace. */
    private readonly cgroupRoot: string | null,
    /** Whether versions other namespaces hold are shared rather than loaded (DatapathOptions). */
    private readonly loadOnce = true,
  ) {}

  /**
   * Checks privileges (@command names what needs them), that the namespace
   * exists, and that bpffs is mounted; nothing is changed in the kernel.
   */
  static async open(netns: NetworkNamespace, command: string, options: DatapathOptions = {}): Promise<KernelDatapath> {
    await requireKernelPrivileges(command);
    const key = await namespaceKey(netns);
    await ensureBpffs();
    return new KernelDatapath(netns, key, new PinLayout(key), await cgroupRoot(), options.loadOnce ?? true);
  }

  /**
   * The node's own pin folder (`agent --cni`): programs loaded once, in the
   * agent's namespace, for the CNI plugin to attach in pods' namespaces.
   * Only its versions are used (observeVersions, load, unload, setRule).
   */
  static async node(command: string): Promise<KernelDatapath> {
    await requireKernelPrivileges(command);
    await ensureBpffs();
    return new KernelDatapath({}, NODE_PINS, PinLayout.node(), null, false);
  }

  /** Every version pinned in this datapath's folder, as observe() reads them (without links or cgroups). */
  observeVersions(): Promise<ObservedProgram[]> {
    return this.observePrograms();
  }

  /** Where @ref's program for @hook is pinned. */
  programPin(ref: VersionRef, hook: Hook): string {
    return this.pins.program(ref, hook);
  }

  /** Whether anything of intercept's is pinned for the namespace (its pin directory exists). */
  holdsPins(): boolean {
    return existsSync(this.pins.namespaceDir);
  }

  async observe(interest: ObserveInterest = {}): Promise<ObservedState> {
    const survey = await surveyLinks(this.netns);
    const { links } = survey;
    const [tcStates, programs, ownedQdiscs, emptyDirectories, listeners, nodePrograms] = await Promise.all([
      this.linkStates(survey),
      this.observePrograms(),
      this.ownedQdiscs(),
      this.emptyDirectories(),
      interest.listeners ? listListeners(this.netns) : undefined,
      readNodePrograms(),
    ]);
    const emptyPins: EmptyPin[] = [
      ...(existsSync(this.pins.qdiscs) && ownedQdiscs.length === 0 ? [{ kind: "registry" as const }] : []),
      ...emptyDirectories,
    ];
    const cgroups = await this.observeCgroups(programs, interest.cgroups ?? []);
    const observed: ObservedLink[] = [];
    for (const link of links) {
      const state = tcStates.get(link.name);
      if (!state) continue; // vanished between `ip link` and `tc`: nothing of ours to plan for on it
      const entry: ObservedLink = { ...link, clsact: state.clsact, filters: {}, foreign: [] };
      for (const hook of HOOKS) {
        for (const filter of state.filters[hook]) {
          if (isOurs(filter) && filter.programId) entry.filters[hook] = filter.programId;
          else
            entry.foreign.push({
              hook,
              pref: filter.pref,
              handle: filter.handle,
              kind: filter.kind,
              programName: filter.programName,
              inOurSlot: inOurSlot(filter),
            });
        }
      }
      observed.push(entry);
    }
    return {
      netns: this.netns,
      namespaceKey: this.namespaceKey,
      links: observed,
      programs,
      ownedQdiscs,
      emptyPins,
      cgroupRoot: this.cgroupRoot,
      cgroups,
      ...(listeners && { listeners }),
      ...(nodePrograms.size > 0 && { nodePrograms }),
    };
  }

  /**
   * What tc shows of the surveyed links: only the links with a filter qdisc
   * are asked (none, in a namespace nobody attached anything to yet), since
   * a link without clsact or ingress holds no filter on either hook.
   */
  private async linkStates({ links, filterHolders }: LinkSurvey): Promise<Map<string, TcLinkState>> {
    const states = await listLinkStates(
      this.netns,
      links.filter((link) => filterHolders.has(link.name)).map((link) => link.name),
    );
    for (const link of links)
      if (!filterHolders.has(link.name)) states.set(link.name, { clsact: false, filters: { ingress: [], egress: [] } });
    return states;
  }

  /**
   * The cgroups running a program of ours, and those in @asked that exist,
   * with everything attached to them: one walk of the hierarchy (`bpftool
   * cgroup tree`). Skipped when nothing is asked and no pinned version has
   * cgroup programs: then nothing of ours can be attached anywhere (we
   * detach before we unpin), and a policy without outbound pays nothing.
   */
  private async observeCgroups(programs: ObservedProgram[], asked: readonly string[]): Promise<ObservedCgroup[]> {
    const root = this.cgroupRoot;
    const ourIds = new Set(programs.flatMap((program) => Object.values(program.cgroupProgramIds)));
    if (root === null || (ourIds.size === 0 && asked.length === 0)) return [];
    const existing = (
      await Promise.all(asked.map(async (relative) => ((await statCgroup(root, relative)) ? relative : undefined)))
    ).filter((relative) => relative !== undefined);
    const attached = await attachedTree(root);
    for (const [relative, list] of attached)
      if (!list.some((entry) => ourIds.has(entry.programId)) && !existing.includes(relative)) attached.delete(relative);
    for (const relative of existing) if (!attached.has(relative)) attached.set(relative, []);
    const cgroups: ObservedCgroup[] = [];
    for (const [relative, list] of [...attached].sort(([a], [b]) => a.localeCompare(b))) {
      const identity = await statCgroup(root, relative);
      if (identity) cgroups.push({ path: relative, ...identity, attached: list }); // gone since the walk: nothing to plan on it
    }
    return cgroups;
  }

  /**
   * Pin directories of ours with nothing in them: a policy's with no
   * version (an unload killed before its rmdir), the namespace's with no
   * entry at all (a tidy killed before its last rmdir).
   */
  private async emptyDirectories(): Promise<EmptyPin[]> {
    if (!existsSync(this.pins.namespaceDir)) return [];
    const entries = await listEntries(this.pins.namespaceDir, "all");
    if (entries.length === 0) return [{ kind: "namespace" }];
    const empty: EmptyPin[] = [];
    for (const policy of (await listEntries(this.pins.namespaceDir, "directories")).filter(isProgramName)) {
      if ((await listEntries(this.pins.policy(policy), "all")).length === 0) empty.push({ kind: "policy", policy });
    }
    return empty;
  }

  /** The ifindexes in the qdisc registry (bpf(2) in this process); none without one. */
  private async ownedQdiscs(): Promise<number[]> {
    if (!existsSync(this.pins.qdiscs)) return [];
    const keys = pinnedMapKeys(this.pins.qdiscs, QDISC_REGISTRY.key.size);
    if (keys === undefined) return mapKeys(this.pins.qdiscs); // could not be opened: bpftool tries again, and says why
    return keys.map((key) => readHostU32(key, 0)).sort((a, b) => a - b);
  }

  /**
   * Every pinned version, read in this process by bpf(2): each program's
   * id, and the content hash, rule switches and exempt cgroups from their
   * maps (a bpftool process cost the agent ~13 ms of CPU a reconcile). A
   * version that cannot be read whole (a load cut short lacks a map) is
   * reported as incomplete rather than hiding the others.
   */
  private async observePrograms(): Promise<ObservedProgram[]> {
    const versions: VersionRef[] = [];
    for (const policy of (await listEntries(this.pins.namespaceDir, "directories")).filter(isProgramName)) {
      for (const version of (await listEntries(this.pins.policy(policy), "directories")).filter(isVersionName))
        versions.push({ policy, version });
    }
    return versions.map((ref) => readVersion(this.pins, ref));
  }

  /** @program's counters in this namespace's slot of it (0 unless it shares the version). */
  async readCounters(program: VersionRef, rules: number): Promise<RuleCounters[]> {
    return readVersionCounters(this.pins, program, rules, slotOf(this.pins, program));
  }

  /** Loads @load here, or pins it from a namespace that holds it already (./shared-versions.ts). */
  async loadProgram(load: ProgramLoad): Promise<void> {
    const shares = await this.share([load]);
    try {
      for (const own of shares.toLoad) await loadVersion(this.pins, own);
    } finally {
      shares.release();
    }
  }

  /** @loads, those another namespace holds already pinned here (unless loadOnce is off): what is left to load. */
  private share(loads: ProgramLoad[]): Promise<LoadShares> {
    return this.loadOnce ? shareLoads(this.pins, loads) : Promise.resolve({ shared: [], toLoad: loads, release() {} });
  }

  async unloadProgram(ref: VersionRef): Promise<void> {
    releaseSlot(this.pins, ref);
    await unloadVersion(this.pins, ref);
  }

  async addQdisc(link: LinkRef): Promise<void> {
    // Recorded before it is made: a crash in between leaves a record of a qdisc that
    // does not exist (forgotten by tidy), never a qdisc nobody knows is ours.
    await this.recordQdiscs([link]);
    try {
      await addClsact(this.netns, link.name);
    } catch (error) {
      await deleteMapEntry(this.pins.qdiscs, qdiscKey(link.ifindex));
      throw error;
    }
  }

  /** Records that intercept owns the clsact qdiscs of @links (the registry is made with the first): one bpftool process. */
  private async recordQdiscs(links: LinkRef[]): Promise<void> {
    await runCommands(await this.recordCommands(links));
  }

  /**
   * recordQdiscs by bpf(2) in this process, for a run with nothing to load
   * (a process for the records alone cost the agent ~13 ms of CPU a namespace).
   * The CNI plugin may make the registry meanwhile: then its is used.
   */
  private recordInProcess(links: LinkRef[]): void {
    if (links.length === 0) return;
    if (!existsSync(this.pins.qdiscs)) {
      mkdirSync(this.pins.namespaceDir, { recursive: true });
      const made = createPinnedHashMap(this.pins.qdiscs, this.registryShape());
      if (made < 0 && made !== -constants.errno.EEXIST) throw failure(`bpf(BPF_MAP_CREATE) ${this.pins.qdiscs}`, -made);
    }
    const done = withPinned(this.pins.qdiscs, (fd) => {
      for (const { key, value } of links.map((link) => qdiscRecord(link.ifindex))) {
        const written = updateElement(fd, Buffer.from(key), Buffer.from(value));
        if (written < 0) return written;
      }
      return 0;
    });
    if (done === undefined || done < 0)
      throw failure(
        `bpf(BPF_MAP_UPDATE_ELEM) ${this.pins.qdiscs}`,
        done === undefined ? constants.errno.ENOENT : -done,
      );
  }

  private registryShape(): HashMapShape {
    return {
      name: QDISC_REGISTRY.name,
      keySize: QDISC_REGISTRY.key.size,
      valueSize: QDISC_REGISTRY.value.size,
      entries: QDISC_REGISTRY_ENTRIES,
    };
  }

  /** The bpftool commands of recordQdiscs; none for no links. */
  private async recordCommands(links: LinkRef[]): Promise<string[][]> {
    if (links.length === 0) return [];
    const create = !existsSync(this.pins.qdiscs);
    if (create) await mkdir(this.pins.namespaceDir, { recursive: true });
    const records = links
      .map((link) => qdiscRecord(link.ifindex))
      .map(({ key, value }) => ({ key: key.map(hexByte), value: value.map(hexByte) }));
    return hashMapCommands(this.pins.qdiscs, records, create ? this.registryShape() : undefined);
  }

  /**
   * Forgets the records of @links' qdiscs, which were not made after all.
   * Called while a run is already failing with its own error, which is the
   * one to report. A record that cannot be forgotten is let be: it claims
   * only an empty clsact on that link (plan never removes one holding
   * filters not ours), it is written again when the link gets our qdisc,
   * and tidy forgets it once the link is gone.
   */
  private async unrecordQdiscs(links: LinkRef[]): Promise<void> {
    for (const link of links) {
      try {
        await deleteMapEntry(this.pins.qdiscs, qdiscKey(link.ifindex));
      } catch {
        // let be, as said above
      }
    }
  }

  /**
   * A run of operations, as perform() would do them one at a time. What an
   * apply begins with — loading versions, then giving links their qdiscs
   * and filters — takes one process whatever the number of links: the
   * versions are loaded and filled and every new qdisc is recorded in the
   * registry (one bpftool batch), then the qdiscs and filters are made in
   * order by rtnetlink from this process. Each qdisc is still recorded
   * before it is made; records of those the run did not make are forgotten
   * again, as addQdisc forgets its own. The operations after that beginning
   * go one at a time.
   */
  async performAll(operations: DatapathOperation[], interrupt?: AbortSignal): Promise<RunResult> {
    const loads = leadingLoads(operations);
    const attaches = leadingAttaches(operations.slice(loads.length));
    const together = loads.length + attaches.length;
    if (together < 2) return performEach(this, operations, interrupt);
    if (interrupt?.aborted) return { done: 0, error: interrupt.reason };
    const begun = await this.loadAndAttach(loads, attaches, interrupt);
    if (begun.done < together) return begun;
    const rest = await performEach(this, operations.slice(together), interrupt);
    return { ...rest, done: together + rest.done };
  }

  private async loadAndAttach(
    loads: VersionLoad[],
    attaches: LinkAttach[],
    interrupt: AbortSignal | undefined,
  ): Promise<RunResult> {
    const qdiscs = attaches.flatMap((operation) => (operation.op === "addQdisc" ? [operation.link] : []));
    const shares = await this.share(loads.map(({ load }) => load));
    try {
      const commands: string[][] = [];
      // The batch's first version makes the event maps when no pinned version has them: the
      // later loads of the batch run after its pins exist, and share them (sharedMaps).
      // Likewise the first outbound version makes the record maps every other one shares.
      const own = shares.toLoad;
      const firstOutbound = own.find((load) => (load.cgroupHooks ?? []).length > 0)?.ref;
      for (const load of own)
        commands.push(...(await emptyVersionCommands(this.pins, load, own[0]!.ref, firstOutbound)));
      // The records ride in the loads' bpftool batch, shared with the other namespaces loading
      // meanwhile (a fleet's burst): one process for many. Every version shared: no process at all.
      if (commands.length > 0) await runCommandsTogether([...commands, ...(await this.recordCommands(qdiscs))]);
      else this.recordInProcess(qdiscs);
      shares.release();
    } catch {
      shares.release(); // before the loads are made again one at a time, which take their turns anew
      // bpftool does not say which command failed (nor, shared, whose): undo what any of them may have done, then
      // one at a time says which fails and how, exactly as it would have alone. An undo that
      // fails here fails again there (loadVersion clears the version's directory first).
      await Promise.allSettled(loads.map(({ load }) => this.unloadProgram(load.ref)));
      await this.unrecordQdiscs(qdiscs);
      return performEach(this, [...loads, ...attaches], interrupt);
    }
    if (interrupt?.aborted) {
      await this.unrecordQdiscs(qdiscs);
      return { done: loads.length, error: interrupt.reason };
    }
    const made = await this.makeLinks(attaches);
    return { ...made, done: loads.length + made.done };
  }

  /**
   * Makes @operations' qdiscs (already recorded) and filters in order, in
   * this process (attachSteps), stopping at the first that fails; the
   * records of the qdiscs it did not make are forgotten again.
   */
  private async makeLinks(operations: LinkAttach[]): Promise<RunResult> {
    if (operations.length === 0) return { done: 0 };
    const made = attachSteps(
      this.netns,
      operations.map(
        (operation): TcStep =>
          operation.op === "addQdisc"
            ? { op: "clsact", link: operation.link.name }
            : { op: "filters", link: operation.link.name, filters: this.filterTargets(operation) },
      ),
    );
    if (made.error === undefined) return { done: operations.length };
    await this.unrecordQdiscs(
      operations.slice(made.done).flatMap((operation) => (operation.op === "addQdisc" ? [operation.link] : [])),
    );
    return { done: made.done, error: made.error };
  }

  /** @operation's filters: the version's pinned programs, each carrying this namespace's slot in it. */
  private filterTargets(operation: Extract<DatapathOperation, { op: "attachFilters" }>): FilterTarget[] {
    const namespaceSlot = slotOf(this.pins, operation.program);
    return operation.hooks.map((hook) => ({
      hook,
      programPin: this.pins.program(operation.program, hook),
      namespaceSlot,
    }));
  }

  async removeQdisc(link: LinkRef): Promise<void> {
    await deleteClsact(this.netns, link.name);
    await deleteMapEntry(this.pins.qdiscs, qdiscKey(link.ifindex));
  }

  async forgetQdiscs(ifindexes: number[]): Promise<void> {
    const recorded = new Set(await this.ownedQdiscs());
    const forget = ifindexes.filter((ifindex) => recorded.has(ifindex));
    if (forget.length > 0) await deleteMapEntries(this.pins.qdiscs, forget.map(qdiscKey));
  }

  async attachFilters(link: LinkRef, program: VersionRef, hooks: Hook[]): Promise<void> {
    await replaceFilters(this.netns, link.name, this.filterTargets({ op: "attachFilters", link, program, hooks }));
  }

  async detachFilter(link: LinkRef, hook: Hook): Promise<void> {
    await deleteFilter(this.netns, link.name, hook);
  }

  async setRule(program: VersionRef, index: number, enabled: boolean): Promise<void> {
    await writeRule(this.pins, program, index, enabled);
  }

  async forgetNamespace(): Promise<void> {
    await releaseNamespaceSlots(this.pins);
    await removePins(this.pins.namespaceDir);
    await removeIfEmpty(path.dirname(this.pins.namespaceDir));
  }

  async exists(): Promise<boolean> {
    try {
      return (await namespaceKey(this.netns)) === this.namespaceKey; // a namespace of the same name made since is another one
    } catch (error) {
      if (error instanceof InterceptError && error.code === "netns-not-found") return false;
      throw error;
    }
  }

  async attachCgroupProgram(cgroup: CgroupRef, hook: CgroupHook, program: VersionRef): Promise<void> {
    await attachToCgroup(await this.sameCgroup(cgroup), hook, this.pins.cgroupProgram(program, hook));
  }

  async detachCgroupProgram(cgroup: CgroupRef, hook: CgroupHook, program: VersionRef): Promise<void> {
    await detachFromCgroup(await this.sameCgroup(cgroup), hook, this.pins.cgroupProgram(program, hook));
  }

  async setExemptCgroups(program: VersionRef, cgroups: CgroupIdentity[]): Promise<void> {
    await updateMaps(exemptUpdates(this.pins, program, cgroups));
  }

  /** @cgroup's directory, if it is still the cgroup the plan was made for (not removed, not made again). */
  private async sameCgroup(cgroup: CgroupRef): Promise<string> {
    if (this.cgroupRoot === null)
      throw new InterceptError("cgroup2-unavailable", "no cgroup2 hierarchy is mounted (none in /proc/mounts)");
    const now = await statCgroup(this.cgroupRoot, cgroup.path);
    if (now?.id !== cgroup.id) {
      throw new InterceptError(
        "cgroup-not-found",
        `cgroup ${cgroup.path} ${now ? "was made again" : "was removed"} since the plan was made: run \`intercept plan\` again`,
      );
    }
    return cgroupDirectory(this.cgroupRoot, cgroup.path);
  }

  async tidy(): Promise<void> {
    await this.tidyRegistry();
    for (const policy of await listEntries(this.pins.namespaceDir, "directories"))
      await removeIfEmpty(path.join(this.pins.namespaceDir, policy));
    await removeIfEmpty(this.pins.namespaceDir);
    await removeIfEmpty(path.dirname(this.pins.namespaceDir));
  }

  /** Forgets the records of links that are gone, and the registry once it holds none; without a registry the links are not asked. */
  private async tidyRegistry(): Promise<void> {
    if (!existsSync(this.pins.qdiscs)) return;
    const [links, owned] = await Promise.all([listLinks(this.netns), this.ownedQdiscs()]);
    const present = new Set(links.map((link) => link.ifindex));
    const gone = owned.filter((ifindex) => !present.has(ifindex));
    if (gone.length > 0)
      await deleteMapEntries(
        this.pins.qdiscs,
        gone.map((ifindex) => qdiscKey(ifindex)),
      );
    if (gone.length === owned.length) await removePins(this.pins.qdiscs);
  }
}

/*
 * One version's pins, for any pin layout: the datapath's, or a packet
 * test's own directory (tests load programs without attaching them).
 */

/**
 * Loads and pins a version, fills its rule switches (and exempt cgroups),
 * and records its content hash last. A version with outbound programs uses
 * the original-destination maps of another version in the namespace when
 * there is one, so records outlive the version that wrote them.
 */
export async function loadVersion(pins: PinLayout, load: ProgramLoad): Promise<void> {
  try {
    await runCommands(await emptyVersionCommands(pins, load));
  } catch (error) {
    await unloadVersion(pins, load.ref);
    throw error;
  }
}

/**
 * Empties the version's directory (a version left half-loaded by a crash),
 * and gives the bpftool commands that load it there and fill it: rule
 * switches, address lists, exempt cgroups, and policy_meta last, since a
 * version whose content hash is recorded is complete.
 */
async function emptyVersionCommands(
  pins: PinLayout,
  load: ProgramLoad,
  batchFirst?: VersionRef,
  batchFirstOutbound?: VersionRef,
): Promise<string[][]> {
  const dir = pins.version(load.ref);
  await removePins(dir);
  await mkdir(dir, { recursive: true }); // bpftool creates only the last level
  const outbound = (load.cgroupHooks ?? []).length > 0;
  return [
    loadCommand(load.objectPath, dir, await sharedMaps(pins, load.ref, outbound, batchFirst, batchFirstOutbound)),
    ...[
      ...load.enabled.map((enabled, index) => ruleUpdate(pins, load.ref, index, enabled)),
      ...load.prefixes.map((entry) => prefixUpdate(pins, load.ref, entry)),
      ...(outbound ? exemptUpdates(pins, load.ref, load.exemptCgroups ?? []) : []),
      mapUpdate(pins.map(load.ref, MAPS.policy_meta.name), arrayKey(0), policyMetaValue(load.contentHash)),
    ].map(updateCommand),
  ];
}

/**
 * The maps @loading shares with the other versions of the namespace, by
 * name: the event maps (one ring buffer per namespace) of a pinned version
 * that has them, else of @batchFirst, the first load of the same batch,
 * pinned by the time this one runs; and for outbound programs the record
 * maps, of a pinned version or else of @batchFirstOutbound, so that a
 * proxy's getsockopt finds the records of every capturing version. None
 * when @loading is the first: it makes its own.
 */
async function sharedMaps(
  pins: PinLayout,
  loading: VersionRef,
  outbound: boolean,
  batchFirst?: VersionRef,
  batchFirstOutbound?: VersionRef,
): Promise<Record<string, string>> {
  const pinned = (ref: VersionRef | undefined, names: readonly MapName[]) =>
    ref ? Object.fromEntries(names.map((name) => [name, pins.map(ref, name)])) : {};
  const first = batchFirst && !sameVersion(batchFirst, loading) ? batchFirst : undefined;
  const firstOutbound =
    batchFirstOutbound && !sameVersion(batchFirstOutbound, loading) ? batchFirstOutbound : undefined;
  return {
    ...pinned((await pinnedVersionWith(pins, loading, FLOW_EVENT_MAPS)) ?? first, FLOW_EVENT_MAPS),
    ...(outbound
      ? pinned((await pinnedVersionWith(pins, loading, OUTBOUND_RECORD_MAPS)) ?? firstOutbound, OUTBOUND_RECORD_MAPS)
      : {}),
  };
}

function sameVersion(a: VersionRef, b: VersionRef): boolean {
  return a.policy === b.policy && a.version === b.version;
}

/** Some other pinned version of the namespace that has every map of @names; undefined when none has. */
async function pinnedVersionWith(
  pins: PinLayout,
  loading: VersionRef,
  names: readonly MapName[],
): Promise<VersionRef | undefined> {
  for (const policy of (await listEntries(pins.namespaceDir, "directories")).filter(isProgramName)) {
    for (const version of (await listEntries(pins.policy(policy), "directories")).filter(isVersionName)) {
      const ref = { policy, version };
      if (sameVersion(ref, loading)) continue;
      if (names.every((name) => existsSync(pins.map(ref, name)))) return ref;
    }
  }
  return undefined;
}

/** exempt_cgroups, slot by slot: a 64-bit id and a 32-bit level (struct exempt_cgroup, host order). */
function exemptUpdates(pins: PinLayout, ref: VersionRef, cgroups: CgroupIdentity[]): MapUpdate[] {
  const pin = pins.map(ref, MAPS.exempt_cgroups.name);
  return cgroups.map(({ id, level }, slot) => mapUpdate(pin, arrayKey(slot), exemptCgroupValue(id, level)));
}

export async function unloadVersion(pins: PinLayout, ref: VersionRef): Promise<void> {
  await removePins(pins.version(ref));
  await removeIfEmpty(pins.policy(ref.policy));
}

/**
 * Each rule's counters in namespace slot @namespaceSlot (the loader's by
 * default), counter by counter, summed over CPUs (rule_counters is
 * per-CPU). @rules is the program's number of rule slots (its RULE_COUNT):
 * a namespace slot's block of counters is that long. Only that block is
 * read, entry by entry (lookupPerCpu): the map holds every namespace
 * slot's, NAMESPACE_SLOTS times more than a dump should print.
 */
export async function readVersionCounters(
  pins: PinLayout,
  ref: VersionRef,
  rules: number,
  namespaceSlot = LOADER_SLOT,
): Promise<RuleCounters[]> {
  const keys = Array.from({ length: rules }, (_, rule) =>
    COUNTER_SLOTS.map((counter) => counterKey(rule, counter, { namespaceSlot, rules })),
  );
  const { value } = MAPS.rule_counters;
  const perCpu = lookupPerCpu(pins.map(ref, MAPS.rule_counters.name), keys.flat(), value.size);
  const total = (cpus: Buffer[]): Counter =>
    cpus.reduce(
      (sum, bytes) => ({
        packets: sum.packets + readHostU64(bytes, value.fields.packets.offset),
        bytes: sum.bytes + readHostU64(bytes, value.fields.bytes.offset),
      }),
      { packets: 0, bytes: 0 },
    );
  return keys.map(
    (_, rule) =>
      Object.fromEntries(
        COUNTER_SLOTS.map((counter, index) => [counter, total(perCpu[rule * COUNTER_SLOTS.length + index]!)]),
      ) as RuleCounters,
  );
}

export async function writeRule(pins: PinLayout, ref: VersionRef, index: number, enabled: boolean): Promise<void> {
  const { pin, key, value } = ruleUpdate(pins, ref, index, enabled);
  await updateMap(pin, key, value);
}

function ruleUpdate(pins: PinLayout, ref: VersionRef, index: number, enabled: boolean): MapUpdate {
  return mapUpdate(pins.map(ref, MAPS.rule_state.name), arrayKey(index), ruleStateValue(enabled));
}

function prefixUpdate(pins: PinLayout, ref: VersionRef, entry: PrefixEntry): MapUpdate {
  const { key, value } = prefixBytes(entry);
  return mapUpdate(pins.map(ref, prefixMap(entry)), key, value);
}

type LinkAttach = Extract<DatapathOperation, { op: "addQdisc" | "attachFilters" }>;
type VersionLoad = Extract<DatapathOperation, { op: "loadProgram" }>;

/**
 * The loads @operations begin with, of versions without cgroup programs:
 * one with them shares the record maps of a version already pinned, which
 * a load in the same batch is not yet.
 */
function leadingLoads(operations: DatapathOperation[]): VersionLoad[] {
  const end = operations.findIndex(
    (operation) => operation.op !== "loadProgram" || (operation.load.cgroupHooks ?? []).length > 0,
  );
  return operations.slice(0, end === -1 ? operations.length : end) as VersionLoad[];
}

/** The qdiscs and filters @operations begin with. */
function leadingAttaches(operations: DatapathOperation[]): LinkAttach[] {
  const end = operations.findIndex((operation) => operation.op !== "addQdisc" && operation.op !== "attachFilters");
  return operations.slice(0, end === -1 ? operations.length : end) as LinkAttach[];
}

/** @ref's pins, read (observePrograms); incomplete when a program or map cannot be read. */
function readVersion(pins: PinLayout, ref: VersionRef): ObservedProgram {
  const incomplete = { ref, contentHash: null, programIds: {}, enabled: [], cgroupProgramIds: {}, exemptCgroups: [] };
  const programIds: Partial<Record<Hook, number>> = {};
  for (const hook of HOOKS.filter((hook) => existsSync(pins.program(ref, hook)))) {
    programIds[hook] = pinnedProgramId(pins.program(ref, hook));
    if (programIds[hook] === undefined) return incomplete;
  }
  const cgroupProgramIds: Partial<Record<CgroupHook, number>> = {};
  for (const hook of CGROUP_HOOKS.filter((hook) => existsSync(pins.cgroupProgram(ref, hook)))) {
    cgroupProgramIds[hook] = pinnedProgramId(pins.cgroupProgram(ref, hook));
    if (cgroupProgramIds[hook] === undefined) return incomplete;
  }
  const meta = pinnedArray(pins.map(ref, MAPS.policy_meta.name));
  const state = pinnedArray(pins.map(ref, MAPS.rule_state.name));
  const outbound = Object.keys(cgroupProgramIds).length > 0;
  const exempt = outbound ? pinnedArray(pins.map(ref, MAPS.exempt_cgroups.name)) : [];
  if (meta?.[0] === undefined || state === undefined || exempt === undefined) return incomplete;
  const contentHash = cString(meta[0]);
  return {
    ref,
    contentHash: contentHash === "" ? null : contentHash,
    programIds,
    enabled: state.map(ruleEnabled),
    cgroupProgramIds,
    exemptCgroups: exempt.map(exemptCgroupOf).filter((cgroup) => cgroup.id !== 0),
  };
}

/** An update of the map pinned at @pin, its key and value as bpftool takes bytes. */
function mapUpdate(pin: string, key: number[], value: number[]): MapUpdate {
  return { pin, key: key.map(hexByte), value: value.map(hexByte) };
}

/** The qdisc registry's key of a link, as bpftool takes it. */
function qdiscKey(ifindex: number): string[] {
  return qdiscRecord(ifindex).key.map(hexByte);
}
