/**
 * The form of a cgroup path in a policy: relative to the cgroup2 mount,
 * like "system.slice/app.service". Validation reports a bad one as a located
 * error; the kernel datapath refuses one again before joining it to the
 * mount (a saved plan is a file anyone could edit), so nothing can point it
 * outside the cgroup2 hierarchy or at its root.
 */

/** A cgroup directory name is a file name: at most 255 bytes. */
const MAX_SEGMENT = 255;
const MAX_PATH = 1024;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/** Why @path is not a cgroup path intercept accepts, in words; undefined when it is one. */
export function cgroupPathProblem(path: string): string | undefined {
  if (path === "" || path === "/")
    return "is the root cgroup: intercept never attaches to the root, name the cgroup of the applications";
  if (path.startsWith("/")) return "starts with /: cgroup paths are relative to the cgroup2 mount";
  if (path.endsWith("/")) return "ends with /";
  if (path.length > MAX_PATH) return `is longer than ${MAX_PATH} characters`;
  if (CONTROL.test(path)) return "holds a control character";
  for (const segment of path.split("/")) {
    if (segment === "") return "has an empty segment (//)";
    if (segment === "." || segment === "..") return `has a "${segment}" segment: name the cgroup's own path`;
    if (Buffer.byteLength(segment) > MAX_SEGMENT) return `has a segment longer than ${MAX_SEGMENT} bytes`;
  }
  return undefined;
}

/** Whether cgroup @inner is @outer or lies below it. */
export function cgroupWithin(inner: string, outer: string): boolean {
  return inner === outer || inner.startsWith(`${outer}/`);
}
