import { buildPolicy } from "../build/index.js";
import type { ObjectSource } from "../reconcile/index.js";

/** Objects built with clang, cached by content hash: an unchanged policy never runs clang. */
export const buildObject: ObjectSource = async (desired) => (await buildPolicy(desired.compiled)).objectPath;
