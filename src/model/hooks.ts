/** Where intercept's programs run: the two tc hooks of a link, and the cgroup attach points. */

/** The two tc hooks of a link. */
export type Hook = "ingress" | "egress";
export const HOOKS: readonly Hook[] = ["ingress", "egress"];

/**
 * The cgroup attach points of a policy's outbound programs (bpftool's
 * cgroup_inet4_connect, cgroup_inet6_connect, cgroup_sock_ops,
 * cgroup_getsockopt), in the order they are attached: the programs that
 * tie and answer records first, the ones that start capturing last.
 * Detached in reverse.
 */
export type CgroupHook = "sock_ops" | "getsockopt" | "connect4" | "connect6";
export const CGROUP_HOOKS: readonly CgroupHook[] = ["sock_ops", "getsockopt", "connect4", "connect6"];
