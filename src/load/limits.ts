/**
 * Bounds on what a policy file may make intercept do. A real policy is a few
 * kilobytes nesting under 10 levels; each bound is far above that and far
 * below what would exhaust memory, time or the stack, so a hostile or broken
 * file ends in one located error instead of a crash or a hang.
 */

/** Policies are small; anything larger is a mistake, not a policy. */
export const MAX_POLICY_BYTES = 1024 * 1024;

/** Collections (YAML) or brackets and values (TypeScript) nested inside each other. */
export const MAX_NESTING_DEPTH = 32;

/** YAML aliases (`*name`) in one file: each is resolved by a walk of the document. */
export const MAX_YAML_ALIASES = 100;

/**
 * Values (objects, lists, scalars) a policy may expand to through YAML
 * aliases or TypeScript const references. A 1 MiB policy written out in full
 * has about 130,000; an alias bomb has billions.
 */
export const MAX_POLICY_VALUES = 200_000;

/**
 * How long reading one policy file (evaluating it, type-checking a TS one)
 * may take, and validating them all, before it is abandoned as
 * `policy/too-slow`. A TS policy takes about a second cold (most of it
 * starting the TypeScript compiler), a YAML one milliseconds; a recursive
 * type can keep the type checker busy for minutes.
 */
export const POLICY_DEADLINE_MS = 5_000;

/**
 * The heap (V8's old generation) the policy worker may use before it is
 * stopped and the file it was reading reported as `policy/too-large`. The
 * TypeScript compiler checking a policy against its API and lib.es2022
 * needs well under 100 MB; a file at every other bound (1 MiB, 200,000
 * values) a few hundred. A recursive type grows by tens of MB a second.
 */
export const POLICY_HEAP_MB = 512;
