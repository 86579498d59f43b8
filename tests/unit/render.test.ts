/**
 * The render boundary: whatever reaches the C templates — a saved plan
 * edited by hand included — must be typed values in range, or nothing is
 * rendered.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { compilePolicies } from "../../src/compile/index.js";
import { RENDER_LIMITS } from "../../src/compile/renderable.js";
import { InterceptError } from "../../src/errors.js";
import type { ValidPolicy } from "../../src/validate/index.js";
import { policySchema } from "../../src/validate/schema.js";
import { testPolicy } from "../support/bpf.js";

/** A valid policy with one field of one rule replaced by @value, as a hand-edited plan could carry it. */
function tampered(field: string, value: unknown): ValidPolicy {
  const policy = testPolicy("tampered", [
    { originalPort: 8000, port: 9000 },
    { originalPort: 8443, port: 9443 },
  ]);
  (policy.rules[1] as unknown as Record<string, unknown>)[field] = value;
  return policy;
}

function assertRefused(policy: unknown, message: RegExp) {
  assert.throws(
    () => compilePolicies([policy as ValidPolicy]),
    (error: unknown) => {
      assert.ok(error instanceof InterceptError, String(error));
      assert.equal(error.code, "render-refused");
      assert.doesNotMatch(error.message, /\n/, "one line");
      assert.match(error.message, message);
      return true;
    },
  );
}

describe("the renderer refuses values the C must not carry", () => {
  test("a string port carrying C text", () => {
    assertRefused(
      tampered("port", "9000\n#warning pwned"),
      /^refusing to render policy "tampered": interceptors\[1\]\.port is "9000\\n#warning pwned", not an integer 1–65535$/,
    );
  });

  for (const port of [70000, 0, -1, 8000.5, Number.NaN, null, true, [9000], { port: 9000 }]) {
    test(`port ${JSON.stringify(port) ?? String(port)}`, () => {
      assertRefused(tampered("port", port), /interceptors\[1\]\.port is .*, not an integer 1–65535$/);
    });
  }

  test("port ranges out of range, backwards, or not ranges at all", () => {
    assertRefused(
      tampered("originalPorts", [{ first: 8000, last: 65536 }]),
      /interceptors\[1\]\.originalPorts\[0\] is an object, not a range \{ first, last \} of ports 1–65535, first ≤ last$/,
    );
    assertRefused(
      tampered("originalPorts", [{ first: 9100, last: 9000 }]),
      /interceptors\[1\]\.originalPorts\[0\] is an object, not a range/,
    );
    assertRefused(
      tampered("exceptPorts", [{ first: "22 */ #warning", last: 22 }]),
      /interceptors\[1\]\.exceptPorts\[0\] is an object, not a range/,
    );
    assertRefused(
      tampered("originalPorts", "*"),
      /interceptors\[1\]\.originalPorts is "\*", not a list of port ranges$/,
    );
    assertRefused(
      tampered("exceptPorts", undefined),
      /interceptors\[1\]\.exceptPorts is missing, not a list of port ranges$/,
    );
  });

  test("CIDRs that are not networks in canonical form: comments print them", () => {
    const cidr = (address: unknown, prefixLength: unknown, family: unknown = "ipv4") => [
      { family, address, prefixLength },
    ];
    for (const [field, value] of [
      ["sources", cidr("10.1.2.3", 8)], // host bits set
      ["sources", cidr("10.0.0.0", 33)], // prefix too long
      ["exceptSources", cidr("FD00::", 8, "ipv6")], // not canonical text
      ["destinations", cidr("10.0.0.0", 8, "ipv6")], // wrong family
      ["destinations", cidr("10.0.0.0 */ #warning x", 8)], // C text in a comment
      ["sources", ["10.0.0.0/8"]], // text, not a network
    ] as const) {
      assertRefused(
        tampered(field, value),
        new RegExp(
          `interceptors\\[1\\]\\.${field}\\[0\\] is .*, not a network \\{ family, address, prefixLength \\} in canonical form$`,
        ),
      );
    }
    assertRefused(tampered("destinations", null), /interceptors\[1\]\.destinations is null, not a list of CIDRs$/);
  });

  test("an unknown protocol or family", () => {
    assertRefused(tampered("protocol", "sctp"), /interceptors\[1\]\.protocol is "sctp", not one of tcp, udp$/);
    assertRefused(tampered("protocol", "IPPROTO_TCP) || (1"), /interceptors\[1\]\.protocol is /);
    assertRefused(tampered("family", "ipv5"), /interceptors\[1\]\.family is "ipv5", not one of ipv4, ipv6, any$/);
    assertRefused(tampered("family", undefined), /interceptors\[1\]\.family is missing/);
  });

  test("a rule whose index is not its position", () => {
    assertRefused(tampered("index", 7), /interceptors\[1\]\.index is 7, not 1$/);
  });

  test("a name that is not a C identifier, quoted short", () => {
    const policy = { ...testPolicy("ok", []), name: `x */ #include "/etc/shadow" /* ${"y".repeat(100)}` };
    assertRefused(
      policy,
      /^refusing to render policy: name is "x \*\/ #include \\"\/etc\/shadow\\" \/\* y+…", not a name matching /,
    );
  });

  test("too many rules, and no policy at all", () => {
    const many = testPolicy("many", [{ originalPort: 1, port: 2 }]);
    many.rules = Array.from({ length: RENDER_LIMITS.maxRules + 1 }, (_, index) => ({ ...many.rules[0]!, index }));
    assertRefused(many, /the rule count is 65536, not at most 65535$/);
    assertRefused(null, /the policy is null, not an object$/);
    assertRefused({ name: "norules" }, /rules is missing, not a list$/);
  });

  test("a valid policy renders", () => {
    const [compiled] = compilePolicies([tampered("port", 9443)]);
    assert.match(compiled!.source, /__bpf_constant_htons\(9443\)/);
    const cidrs = tampered("sources", [{ family: "ipv6", address: "fd00::", prefixLength: 8 }]);
    cidrs.rules[1]!.family = "ipv6";
    assert.match(compilePolicies([cidrs])[0]!.source, /\/\* fd00::\/8 \*\//);
  });
});

test("the render limits agree with the schema", () => {
  assert.equal(RENDER_LIMITS.name.source, policySchema.properties.name.pattern);
  assert.deepEqual(
    { minimum: policySchema.$defs.port.minimum, maximum: policySchema.$defs.port.maximum },
    RENDER_LIMITS.port,
  );
  assert.equal(policySchema.properties.interceptors.maxItems, RENDER_LIMITS.maxRules);
  assert.deepEqual(policySchema.$defs.interceptor.properties.protocol.enum, RENDER_LIMITS.protocol);
  assert.deepEqual(policySchema.$defs.interceptor.properties.family.enum, RENDER_LIMITS.family);
});

describe("programs and hooks", () => {
  const steer = { originalPort: 8000, port: 9000 };
  const rewrite = { originalPort: 53, port: 5353, protocol: "udp" as const };
  for (const [name, rules, hooks] of [
    ["steer_only", [steer], ["ingress"]],
    ["rewrite_only", [rewrite], ["ingress", "egress"]],
    ["both", [steer, rewrite], ["ingress", "egress"]],
    ["empty", [], ["ingress"]],
  ] as const) {
    test(`${name}: hooks ${hooks.join(", ")}, and the C compiles intercept_egress exactly then`, () => {
      const [compiled] = compilePolicies([testPolicy(name, rules)]);
      assert.deepEqual(compiled!.hooks, hooks);
      const rewrites = /^#define POLICY_REWRITES (\d)/m.exec(compiled!.source)?.[1];
      assert.equal(rewrites, (hooks as readonly string[]).includes("egress") ? "1" : "0");
    });
  }

  test("a steer rule on udp, or one without onProxyDown, is refused at the boundary", () => {
    const udpSteer = testPolicy("udp_steer", [
      { originalPort: 53, port: 5353, protocol: "udp", strategy: "steer", onProxyDown: "drop" },
    ]);
    assertRefused(udpSteer, /interceptors\[0\]\.strategy is "steer", not "rewrite" for a udp rule$/);
    assertRefused(
      tampered("onProxyDown", "explode"),
      /interceptors\[1\]\.onProxyDown is "explode", not one of drop, pass$/,
    );
    assertRefused(
      tampered("strategy", "teleport"),
      /interceptors\[1\]\.strategy is "teleport", not one of steer, rewrite$/,
    );
    const rewriteWithProxyDown = testPolicy("rw", [
      { originalPort: 53, port: 5353, protocol: "udp", onProxyDown: "pass" },
    ]);
    assertRefused(rewriteWithProxyDown, /interceptors\[0\]\.onProxyDown is "pass", not absent on a rewrite rule$/);
  });
});
