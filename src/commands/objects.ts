import { clangBuilder, prebuiltObjects, type ProgramBuilder } from "../build/index.js";

/** `--objects DIR`: programs from objects built in CI; otherwise clang here. */
export async function programBuilder(objects: string | undefined): Promise<ProgramBuilder> {
  return objects === undefined ? clangBuilder : prebuiltObjects(objects);
}
