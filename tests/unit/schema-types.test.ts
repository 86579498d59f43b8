/**
 * The JSON Schema is the single source of truth for a policy's shape; the
 * TypeScript types in src/api.ts must say exactly the same. This reads both
 * and compares field names, optionality and literal unions.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Project } from "ts-morph";
import { policySchema } from "../../src/validate/schema.js";

type Shape = Record<string, { optional: boolean; type: string }>;

function typeShape(interfaceName: string): Shape {
  const project = new Project({ skipAddingFilesFromTsConfig: true });
  const source = project.addSourceFileAtPath("src/api.ts");
  const shape: Shape = {};
  for (const property of source.getInterfaceOrThrow(interfaceName).getProperties()) {
    const type = property.getTypeNode()!.getText().replace(/^readonly /, "");
    shape[property.getName()] = { optional: property.hasQuestionToken(), type };
  }
  return shape;
}

function schemaShape(schema: { properties: Record<string, SchemaNode>; required?: string[] }): Shape {
  const shape: Shape = {};
  for (const [name, node] of Object.entries(schema.properties)) {
    shape[name] = { optional: !(schema.required ?? []).includes(name), type: schemaType(node) };
  }
  return shape;
}

interface SchemaNode { type?: string; enum?: string[]; $ref?: string; items?: SchemaNode }

/** The TypeScript name of each shared definition. */
const DEFINITION_TYPES: Record<string, string> = {
  "#/$defs/port": "Port",
  "#/$defs/interceptor": "Interceptor",
  "#/$defs/outbound": "Outbound",
  "#/$defs/outboundExemption": "OutboundExemption",
  "#/$defs/outboundRule": "OutboundRule",
  "#/$defs/cgroupPath": "CgroupPath",
};

/** The TypeScript spelling of a schema node, as src/api.ts writes it. */
function schemaType(node: SchemaNode): string {
  if (node.enum) return node.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (node.$ref) return DEFINITION_TYPES[node.$ref] ?? `unknown ${node.$ref}`;
  if (node.type === "array") return `${schemaType(node.items!)}[]`;
  if (node.type === "object") return "InterfaceSelector";
  if (node.type === "integer") return "number";
  return node.type!;
}

test("Policy matches the schema's root", () => {
  assert.deepEqual(typeShape("Policy"), schemaShape(policySchema));
});

test("Interceptor matches the schema's interceptor", () => {
  assert.deepEqual(typeShape("Interceptor"), schemaShape(policySchema.$defs.interceptor));
});

test("InterfaceSelector matches the schema's interfaces", () => {
  assert.deepEqual(typeShape("InterfaceSelector"), schemaShape(policySchema.properties.interfaces));
});

test("Outbound, its exemption and its rules match the schema's", () => {
  assert.deepEqual(typeShape("Outbound"), schemaShape(policySchema.$defs.outbound));
  assert.deepEqual(typeShape("OutboundExemption"), schemaShape(policySchema.$defs.outboundExemption));
  assert.deepEqual(typeShape("OutboundRule"), schemaShape(policySchema.$defs.outboundRule));
  assert.deepEqual(policySchema.$defs.cgroupPath.type, "string");
});

test("interceptors are required exactly when there is no outbound section", () => {
  assert.deepEqual(policySchema.if, { properties: { outbound: true }, required: ["outbound"] });
  assert.deepEqual(policySchema.else, { properties: { interceptors: true }, required: ["interceptors"] });
});

test("the rule strategy fields are in both, with their values", () => {
  const types = typeShape("Interceptor");
  const schema = schemaShape(policySchema.$defs.interceptor);
  for (const shape of [types, schema]) {
    assert.deepEqual(shape.strategy, { optional: true, type: '"steer" | "rewrite"' });
    assert.deepEqual(shape.onProxyDown, { optional: true, type: '"drop" | "pass"' });
  }
});

test("Port matches the schema's port", () => {
  assert.deepEqual(policySchema.$defs.port, { type: "integer", minimum: 1, maximum: 65535 });
});
