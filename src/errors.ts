import type { Diagnostic } from "./diagnostics.js";

/**
 * Every error intercept reports on purpose carries a stable code: scripts,
 * the agent and the tests branch on it, never on a message or a class name.
 * The message is one line a user can act on; the CLI prints it after
 * `intercept: ` and exits 1 (a bad command line too, as Terraform does:
 * exit 2 means only "changes present" under `plan --detailed-exitcode`).
 */
export type ErrorCode =
  /** The command line itself is wrong: unknown command or flag, a flag value out of range. */
  | "usage"
  /** apply or destroy had no terminal to ask for approval on, and no --yes. */
  | "approval-required"
  /** Policy files are invalid; the located problems are in `diagnostics`. */
  | "policy-invalid"
  /** `apply` was given no policy at all: removing everything is `destroy`'s job, or `--allow-empty`'s. */
  | "no-policies"
  /** The policies are valid one by one, but cannot be planned together on this kernel. */
  | "plan-conflict"
  | "netns-not-found"
  /** A tool intercept runs (clang, bpftool, tc, ip, nsenter) is not installed. */
  | "tool-missing"
  /** A tool intercept ran failed; the message carries its first line of stderr. */
  | "command-failed"
  | "bpffs-unavailable"
  | "saved-plan-invalid"
  /** A policy reached the C templates with a value they must not print (a second wall behind validation). */
  | "render-refused"
  /** A saved plan no longer describes the kernel (or this machine's build): plan again. */
  | "saved-plan-stale"
  /** A step of an apply failed; everything done before it was undone (or the message says not). */
  | "apply-failed"
  | "apply-interrupted"
  /** A file or folder intercept must read or write is not accessible. */
  | "file-access"
  /** A pin name that intercept would not make (a tampered saved plan, a foreign directory). */
  | "pin-path-refused"
  /** The agent's --metrics address cannot be listened on (in use, not local, not permitted). */
  | "metrics-listen"
  /** Another intercept process holds the namespace's lock (a second agent is refused at once). */
  | "lock-held"
  /** --lock-timeout passed while another intercept process held the namespace's lock. */
  | "lock-timeout"
  /** The user lacks a privilege the command needs (root, or the capabilities it names). */
  | "privilege"
  /** A prebuilt object or its manifest does not match the policy it claims (changed C, tampered bytes). */
  | "prebuilt-mismatch"
  /** A policy's outbound section names a cgroup that does not exist (or was made again since the plan). */
  | "cgroup-not-found"
  /** A policy has an outbound section and no cgroup2 hierarchy is mounted. */
  | "cgroup2-unavailable"
  /** A cgroup path that is not one intercept accepts (a tampered saved plan): never joined to the mount. */
  | "cgroup-path-refused"
  /** `watch`: no program of ours in the namespace has a ring buffer of flow records, or its reader stopped. */
  | "flows-unavailable"
  /** The CNI plugin could not be installed or removed (no network configuration to join, an unreadable one). */
  | "cni-install"
  /** `explain` would have to change live state to answer: a tuple in TIME_WAIT. */
  | "explain-refused";

export class InterceptError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super(message, options);
    this.name = "InterceptError";
  }

  /** What the CLI exits with when this error ends a command. */
  get exitCode(): 1 {
    return 1;
  }
}

/** A bad command line: printed with a pointer to --help, exit 1. */
export class UsageError extends InterceptError {
  constructor(message: string) {
    super("usage", message);
  }
}

/** Invalid policies: every located problem of every file, reported at once. */
export class PolicyError extends InterceptError {
  constructor(readonly diagnostics: Diagnostic[]) {
    super("policy-invalid", `${diagnostics.length} error${diagnostics.length === 1 ? "" : "s"} in the policies`);
  }
}

/** An external tool that failed; its first line of stderr says why. */
export class CommandError extends InterceptError {
  constructor(
    readonly command: string,
    readonly stderr: string,
  ) {
    super("command-failed", `${command}: ${stderr.split("\n").find((line) => line.trim()) ?? "failed"}`);
  }
}

/** An error's message for a one-line report, whatever was thrown. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Makes a switch exhaustive: adding a variant is a compile error at every switch that misses it. */
export function unreachable(value: never): never {
  throw new Error(`unhandled case: ${JSON.stringify(value)}`);
}
