/**
 * The BPF ABI is described twice — by the templates' C, and by
 * src/model/bpf-abi.ts, which userspace writes and reads by — and the two
 * must say the same. The templates are compiled with clang (as `build`
 * does), and the objects' BTF (bpftool btf dump) and symbol table
 * (llvm-objdump -t) are checked against the mirror: every map's name,
 * type, key and value layout (sizes, field offsets, byte orders), and
 * every program's name and SEC().
 */
import "../support/temporary-cache.js";
import assert from "node:assert/strict";
import { test } from "node:test";
import { buildPolicy } from "../../src/toolchain/index.js";
import { compilePolicies } from "../../src/compile/index.js";
import { run, runJson } from "../../src/kernel/exec.js";
import { loadPolicies } from "../../src/load/index.js";
import {
  CGROUP_PROGRAMS,
  FLOW_ENUMS,
  FLOW_EVENT,
  FLOW_EVENTS,
  FLOW_REASONS,
  FLOW_VERDICTS,
  MAP_TYPES,
  MAPS,
  PROGRAM_PRIVATE_MAPS,
  TC_PROGRAM_PREFIX,
  TC_PROGRAMS,
  type ByteOrder,
  type TypeLayout,
} from "../../src/model/bpf-abi.js";
import { COUNTER_SLOTS, namespaceCapacity } from "../../src/model/counters.js";
import { validatePolicies } from "../../src/validate/index.js";

interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: { name: string; type_id: number; bits_offset: number }[];
  vars?: { type_id: number }[];
}

/** A compiled object's BTF, by type id. */
class Btf {
  private constructor(private readonly types: Map<number, BtfType>) {}

  static async of(object: string): Promise<Btf> {
    const dump = await runJson<{ types: BtfType[] }>("bpftool", ["-j", "btf", "dump", "file", object]);
    return new Btf(new Map(dump.types.map((type) => [type.id, type])));
  }

  type(id: number): BtfType {
    return this.types.get(id)!;
  }

  /** The variables of a data section (".maps"). */
  variables(section: string): BtfType[] {
    const datasec = [...this.types.values()].find((type) => type.kind === "DATASEC" && type.name === section);
    return (datasec?.vars ?? []).map((v) => this.type(v.type_id));
  }

  /** Past typedefs and qualifiers to the type that has a size. */
  resolved(id: number): BtfType {
    const type = this.type(id);
    return ["TYPEDEF", "CONST", "VOLATILE"].includes(type.kind) ? this.resolved(type.type_id!) : type;
  }

  sizeOf(id: number): number {
    const type = this.resolved(id);
    return type.kind === "ARRAY" ? type.nr_elems! * this.sizeOf(type.type_id!) : type.size!;
  }

  /** How C names the type: its typedef or struct name. */
  nameOf(id: number): string {
    const type = this.type(id);
    return type.kind === "STRUCT" ? `struct ${type.name}` : type.name;
  }

  /** Network order if the C says __be (at any depth), raw bytes for a char array, else host order. */
  orderOf(id: number): ByteOrder {
    const type = this.type(id);
    if (type.kind === "TYPEDEF") return type.name.startsWith("__be") ? "network" : this.orderOf(type.type_id!);
    if (type.kind === "ARRAY")
      return this.resolved(type.type_id!).name === "char" ? "bytes" : this.orderOf(type.type_id!);
    if (type.kind === "STRUCT") {
      const orders = new Set(type.members!.map((member) => this.orderOf(member.type_id)));
      return orders.size === 1 ? [...orders][0]! : "host";
    }
    return "host";
  }

  /** A key or value type as the mirror describes one. */
  layout(id: number): TypeLayout {
    const type = this.resolved(id);
    const fields =
      type.kind !== "STRUCT"
        ? {}
        : Object.fromEntries(
            type.members!.map((member) => [
              member.name,
              {
                offset: member.bits_offset / 8,
                size: this.sizeOf(member.type_id),
                order: this.orderOf(member.type_id),
              },
            ]),
          );
    return { type: this.nameOf(id), size: this.sizeOf(id), fields };
  }

  /** A map definition (the anonymous struct of `__uint(type, …)`, `__type(key, …)`, …), member by member. */
  mapDefinition(variable: BtfType): { type: number; key: TypeLayout; value: TypeLayout } {
    const members = this.members(variable);
    return {
      type: this.type(members.get("type")!.type_id!).nr_elems!, // __uint(type, N): int (*type)[N]
      key: this.layout(members.get("key")!.type_id!),
      value: this.layout(members.get("value")!.type_id!),
    };
  }

  /** A ring buffer's definition: its type and size in bytes (it has no key or value). */
  ringDefinition(variable: BtfType): { type: number; bytes: number } {
    const members = this.members(variable);
    const number = (name: string) => this.type(members.get(name)!.type_id!).nr_elems!;
    return { type: number("type"), bytes: number("max_entries") };
  }

  /** A map's max_entries: `__uint(max_entries, N)` is `int (*max_entries)[N]`. */
  maxEntries(variable: BtfType): number {
    return this.type(this.members(variable).get("max_entries")!.type_id!).nr_elems!;
  }

  private members(variable: BtfType): Map<string, BtfType> {
    return new Map(this.type(variable.type_id!).members!.map((member) => [member.name, this.type(member.type_id)]));
  }
}

/**
 * The policies whose objects between them hold every map and program:
 * steer, rewrite, outbound, both prefix tries; and an object with cgroup
 * programs only (the last).
 */
async function objects(): Promise<string[]> {
  const files = ["steer_outbound.yaml", "mixed.yaml", "cidrs.yaml", "cidrs_ipv6.yaml", "outbound_plain.yaml"].map(
    (name) => `tests/golden/compile/${name}`,
  );
  return Promise.all(
    files.map(async (file) => {
      const { policies, diagnostics } = validatePolicies((await loadPolicies([file])).policies);
      assert.deepEqual(diagnostics, []);
      const [compiled] = compilePolicies(policies, undefined, 0); // every address list in a trie
      return (await buildPolicy(compiled!)).objectPath;
    }),
  );
}

const built = objects();

test("every map the objects define is the mirror's, with its type, key and value layout", async () => {
  const seen = new Set<string>();
  for (const object of await built) {
    const btf = await Btf.of(object);
    for (const variable of btf.variables(".maps")) {
      seen.add(variable.name);
      if (PROGRAM_PRIVATE_MAPS.includes(variable.name)) continue;
      if (variable.name === FLOW_EVENTS.name) {
        assert.deepEqual(btf.ringDefinition(variable), { type: MAP_TYPES.ringbuf, bytes: FLOW_EVENTS.bytes });
        continue;
      }
      const mirror = (MAPS as Record<string, (typeof MAPS)[keyof typeof MAPS]>)[variable.name];
      assert.ok(mirror, `map ${variable.name} is not in src/model/bpf-abi.ts`);
      assert.equal(mirror.name, variable.name);
      assert.deepEqual(
        btf.mapDefinition(variable),
        { type: MAP_TYPES[mirror.type], key: mirror.key, value: mirror.value },
        variable.name,
      );
    }
  }
  assert.deepEqual(
    [...seen].sort(),
    [...Object.keys(MAPS), FLOW_EVENTS.name, ...PROGRAM_PRIVATE_MAPS].sort(),
    "the objects between them define every map of the mirror",
  );
});

test("the objects size namespace slots as src/model/namespace-slot.ts does", async () => {
  const objects = await built;
  for (const [index, object] of objects.entries()) {
    const btf = await Btf.of(object);
    const maps = new Map(btf.variables(".maps").map((variable) => [variable.name, variable]));
    const rules = btf.maxEntries(maps.get(MAPS.rule_state.name)!);
    const counters = btf.maxEntries(maps.get(MAPS.rule_counters.name)!);
    const claims = maps.get(MAPS.namespace_slots.name);
    if (index === objects.length - 1) {
      // Cgroup programs only: never shared, so one slot's counters and no claims.
      assert.equal(claims, undefined, object);
      assert.equal(counters, rules * COUNTER_SLOTS.length, object);
      continue;
    }
    assert.ok(claims, `${object} has tc programs and a ${MAPS.namespace_slots.name} map`);
    assert.equal(btf.maxEntries(claims), namespaceCapacity(rules), object);
    assert.equal(counters, namespaceCapacity(rules) * rules * COUNTER_SLOTS.length, object);
  }
});

test("every program the objects hold is the mirror's, in the mirror's section", async () => {
  const programs = new Map<string, string>();
  for (const object of await built) {
    // llvm-objdump -t: "<value> <flags> F <section>\t<size> <name>" for each function symbol.
    for (const line of (await run("llvm-objdump", ["-t", object])).split("\n")) {
      const symbol = /^[0-9a-f]+ g\s+F (\S+)\t[0-9a-f]+ (\w+)$/.exec(line);
      if (symbol) programs.set(symbol[2]!, symbol[1]!);
    }
  }
  const mirror = [...Object.values(TC_PROGRAMS), ...Object.values(CGROUP_PROGRAMS)];
  assert.deepEqual(
    Object.fromEntries([...programs].sort()),
    Object.fromEntries(mirror.map((p) => [p.name, p.section]).sort()),
  );
  for (const program of Object.values(TC_PROGRAMS)) assert.ok(program.name.startsWith(TC_PROGRAM_PREFIX), program.name);
  for (const program of Object.values(CGROUP_PROGRAMS))
    assert.ok(!program.name.startsWith(TC_PROGRAM_PREFIX), program.name);
});

/*
 * The event record travels through a ring buffer, so no map's BTF names
 * it: its layout and enums are read from the objects' DWARF instead.
 */

interface DwarfEntry {
  tag: string;
  attributes: Map<string, string>;
}

/** The entries llvm-dwarfdump prints for @name and its children, in order. */
async function dwarf(object: string, name: string): Promise<DwarfEntry[]> {
  const out = await run("llvm-dwarfdump", ["-n", name, "-c", object]);
  const entries: DwarfEntry[] = [];
  for (const line of out.split("\n")) {
    const tag = /^0x[0-9a-f]+:\s+(DW_TAG_\w+)/.exec(line);
    if (tag) entries.push({ tag: tag[1]!, attributes: new Map() });
    const attribute = /^\s+(DW_AT_\w+)\s+\((.*)\)$/.exec(line);
    if (attribute && entries.length > 0) entries.at(-1)!.attributes.set(attribute[1]!, attribute[2]!);
  }
  return entries;
}

/** How a member's C type orders its bytes, as the mirror says it. */
function dwarfOrder(type: string): ByteOrder {
  if (type.includes('"__be') || type.includes('"flow_address"')) return "network";
  return type.includes('"char[') ? "bytes" : "host";
}

test("struct flow_event is the mirror's FLOW_EVENT, field by field", async () => {
  for (const object of await built) {
    const [struct, ...members] = await dwarf(object, "flow_event");
    assert.equal(struct?.tag, "DW_TAG_structure_type");
    const size = Number(struct.attributes.get("DW_AT_byte_size"));
    const offsets = members.map((member) => Number(member.attributes.get("DW_AT_data_member_location")));
    const fields = Object.fromEntries(
      members.map((member, i) => [
        member.attributes.get("DW_AT_name")!.replaceAll('"', ""),
        {
          offset: offsets[i]!,
          size: (offsets[i + 1] ?? size) - offsets[i]!,
          order: dwarfOrder(member.attributes.get("DW_AT_type")!),
        },
      ]),
    );
    assert.deepEqual({ type: "struct flow_event", size, fields }, FLOW_EVENT, object);
  }
});

test("the verdicts and reasons are the C enums, value by value", async () => {
  const [object] = await built;
  for (const [name, mirror] of Object.entries(FLOW_ENUMS)) {
    const [, ...enumerators] = await dwarf(object!, name);
    const values = Object.fromEntries(
      enumerators.map((e) => [
        e.attributes.get("DW_AT_name")!.replaceAll('"', ""),
        Number(e.attributes.get("DW_AT_const_value")),
      ]),
    );
    assert.deepEqual(values, mirror, name);
  }
  assert.deepEqual(Object.keys(FLOW_VERDICTS).map(Number), Object.values(FLOW_ENUMS.flow_verdict));
  assert.deepEqual(Object.keys(FLOW_REASONS).map(Number), Object.values(FLOW_ENUMS.flow_reason));
});
