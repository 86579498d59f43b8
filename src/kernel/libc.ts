import { createRequire } from "node:module";
import type { IKoffiLib } from "koffi";
import { InterceptError } from "../errors.js";

let bound: { koffi: typeof import("koffi"); lib: IKoffiLib } | undefined;

/**
 * libc, opened once through koffi (a C FFI whose npm package carries its
 * prebuilt binaries: nothing is compiled at install), for the calls Node
 * has no binding for: @what names them in the error when it cannot be.
 */
export function bindLibc(what: string): { koffi: typeof import("koffi"); lib: IKoffiLib } {
  if (bound) return bound;
  try {
    // koffi is CommonJS with a native addon: required, not imported, so commands that never need it never load it.
    const koffi = createRequire(import.meta.url)("koffi") as typeof import("koffi");
    bound = { koffi, lib: koffi.load("libc.so.6") };
  } catch (error) {
    throw new InterceptError("tool-missing", `cannot bind ${what} from libc: ${(error as Error).message}`);
  }
  return bound;
}
