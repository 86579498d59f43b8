/**
 * The layout of the prefix tries (`prefixes_v4`, `prefixes_v6`) lives with
 * the rest of the BPF ABI in src/model/bpf-abi.ts; re-exported here, where
 * templates/bpf/lib/prefixes.h points.
 */
