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
