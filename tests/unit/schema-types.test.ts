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
    const type = property
      .getTypeNode()!
      .getText()
      .replace(/^readonly /, "");
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

interface SchemaNode {
  type?: string | string[];
  enum?: string[];
  $ref?: string;
  items?: SchemaNode;
  pattern?: string;
  minimum?: number;
  maximum?: number;
}

/** The type alias of src/api.ts each shared definition is written as. */
/** The TypeScript name of each shared definition. */
const DEFINITION_TYPES: Record<string, string> = {
  "#/$defs/port": "Port",
  "#/$defs/portItem": "PortItem",
  "#/$defs/portSelector": "PortSelector",
  "#/$defs/cidr": "Cidr",
  "#/$defs/interceptor": "Interceptor",
  "#/$defs/outbound": "Outbound",
  "#/$defs/outboundExemption": "OutboundExemption",
  "#/$defs/outboundRule": "OutboundRule",
  "#/$defs/cgroupPath": "CgroupPath",
};

/** The TypeScript spelling of a schema node, as src/api.ts writes it. */
function schemaType(node: SchemaNode): string {
  if (node.enum) return node.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (node.$ref === "#/$defs/portList") return "PortItem[]";
  if (node.$ref === "#/$defs/cidrList") return "Cidr[]";
  if (node.$ref) return DEFINITION_TYPES[node.$ref] ?? `unknown ${node.$ref}`;
  if (node.type === "array") return `${schemaType(node.items!)}[]`;
  if (node.type === "object") return "InterfaceSelector";
  if (node.type === "integer") return "number";
  return String(node.type);
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

/** The TypeScript spelling of a definition's own node, for the aliases of src/api.ts. */
function aliasType(node: SchemaNode): string {
  const types = Array.isArray(node.type) ? node.type : [node.type!];
  return types
    .map((type) => {
      if (type === "integer") {
        assert.deepEqual([node.minimum, node.maximum], [1, 65535], "integers here are ports");
        return "Port";
      }
      if (type === "array") return `readonly ${schemaType(node.items!)}[]`;
      if (node.pattern === "^\\*$") return '"*"';
      if (node.pattern === "^[0-9]{1,5}-[0-9]{1,5}$") return "PortRange";
      return type!;
    })
    .join(" | ");
}

function typeAlias(name: string): string {
  const project = new Project({ skipAddingFilesFromTsConfig: true });
  return project.addSourceFileAtPath("src/api.ts").getTypeAliasOrThrow(name).getTypeNode()!.getText();
}

test("the selector types match the schema's definitions", () => {
  assert.equal(typeAlias("PortItem"), aliasType(policySchema.$defs.portItem));
  assert.equal(typeAlias("PortSelector"), aliasType(policySchema.$defs.portSelector));
  assert.equal(typeAlias("Cidr"), aliasType(policySchema.$defs.cidr));
  assert.equal(
    typeAlias("PortRange"),
    "`${number}-${number}`",
    "a range is two numbers and a dash, as the schema's pattern",
  );
  assert.equal(policySchema.$defs.portList.items.$ref, "#/$defs/portItem");
  assert.equal(policySchema.$defs.cidrList.items.$ref, "#/$defs/cidr");
});

test("exactly one of originalPort and originalPorts is required: the schema requires neither, validation one", () => {
  assert.deepEqual(policySchema.$defs.interceptor.required, ["port"]);
  const types = typeShape("Interceptor");
  assert.equal(types.originalPort!.optional && types.originalPorts!.optional, true);
});
