/** The rule_counters layout lives with the rest of the BPF ABI in src/model/counters.ts. */
export * from "../model/counters.js";
