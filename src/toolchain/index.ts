export {
  buildPolicy,
  clangBuilder,
  compileBpf,
  compilerVersion,
  contentHash,
  findOnPath,
  type BuiltPolicy,
} from "./clang.js";
export { prebuiltObjects, programBuilder, writeObjects, type ObjectManifest } from "./prebuilt.js";
export type { ProgramBuilder } from "./types.js";
