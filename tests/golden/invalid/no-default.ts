import type { Policy } from "intercept-bpf";

export const policy: Policy = { interceptors: [] };
