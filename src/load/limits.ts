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
 * may take, and validating each policy, before it is abandoned as
 * `policy/too-slow`. Starting the worker and loading the YAML parser or the
 * TypeScript compiler are intercept's own code and not counted (they take
 * seconds on a busy machine). A small TS policy then takes about a second
 * (most of it the compiler reading its lib files), a small YAML one
 * milliseconds; a recursive type can keep the type checker busy for minutes.
 * A valid YAML policy near MAX_POLICY_BYTES (some 14,000 rules) takes
 * seconds too, and may be refused: no real policy comes near it.
 */
export const POLICY_DEADLINE_MS = 5_000;

/**
 * The heap (V8's old generation) the policy worker may use before it is
 * stopped and the file it was reading reported as `policy/too-large`.
 * Measured peaks of the worker's heap: a small TS policy 50 MB (the
 * compiler and lib.es2022), a 1 MiB YAML policy of 15,000 rules about 160
 * MB, a 1 MiB TS one about 210 MB: 512 is twice the largest policy's need.
 * A recursive type grows by tens of MB a second, and an expansion no bound
 * caught by gigabytes: they stop here, not at the host's memory.
 */
export const POLICY_HEAP_MB = 512;
