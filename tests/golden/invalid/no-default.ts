import type { Policy } from "intercept";

export const policy: Policy = { interceptors: [] };
