/**
 * The globs policies and the agent use for interface and namespace names:
 * `*` (any run of characters, none included) and `?` (one character);
 * everything else stands for itself.
 */

/** Whether @glob matches all of @name. */
export function globMatch(glob: string, name: string): boolean {
  // A plain name (most interface selectors) matches itself only: no expression to build.
  if (!glob.includes("*") && !glob.includes("?")) return glob === name;
  let expression = globExpressions.get(glob);
  if (!expression) {
    const pattern = glob
      .replace(/[.+^${}()|[\]\\]/g, "\\$&")
      .replace(/\*/g, ".*")
      .replace(/\?/g, ".");
    expression = new RegExp(`^${pattern}$`);
    // Globs come from policies and the agent's flags: a few, matched against every link, on every plan.
    if (globExpressions.size >= GLOB_EXPRESSIONS_LIMIT) globExpressions.clear();
    globExpressions.set(glob, expression);
  }
  return expression.test(name);
}

/** Each glob's expression, made once (without the g or y flag, test keeps no state between calls). */
const globExpressions = new Map<string, RegExp>();
const GLOB_EXPRESSIONS_LIMIT = 1024;

/**
 * Whether some name matches both @a and @b: a walk over pairs of positions
 * in the two globs (at most (|a|+1)·(|b|+1) of them), where a `*` may match
 * nothing more and both sides may consume one character they agree on.
 */
export function globsOverlap(a: string, b: string): boolean {
  const seen = new Set<number>();
  const pending: [number, number][] = [[0, 0]];
  const visit = (i: number, j: number) => {
    const key = i * (b.length + 1) + j;
    if (!seen.has(key)) {
      seen.add(key);
      pending.push([i, j]);
    }
  };
  while (pending.length > 0) {
    const [i, j] = pending.pop()!;
    if (i === a.length && j === b.length) return true;
    if (a[i] === "*") visit(i + 1, j);
    if (b[j] === "*") visit(i, j + 1);
    if (i < a.length && j < b.length && agree(a[i]!, b[j]!)) visit(a[i] === "*" ? i : i + 1, b[j] === "*" ? j : j + 1);
  }
  return false;
}

/** Whether one character can stand where both glob characters are. */
function agree(x: string, y: string): boolean {
  return x === y || x === "*" || y === "*" || x === "?" || y === "?";
}
