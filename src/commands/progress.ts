/** A step that takes longer than this is announced on a terminal: shorter ones would only flicker. */
export const PROGRESS_DELAY_MS = 1000;

export interface ProgressStream {
  isTTY?: boolean;
  write(text: string): unknown;
}

/**
 * A step in progress, said on @stream (stderr) only when it is a terminal
 * and only once the step has taken a second: a cold clang build says
 * "building web with clang…" and then how long it took; a pipe, a log file
 * or CI sees nothing. Plain lines, no cursor tricks: a terminal's scrollback
 * keeps them.
 */
export function startProgress(label: string, stream: ProgressStream = process.stderr): { done(): void } {
  if (!stream.isTTY) return { done() {} };
  const started = Date.now();
  let shown = false;
  const timer = setTimeout(() => {
    shown = true;
    stream.write(`${label}…\n`);
  }, PROGRESS_DELAY_MS);
  timer.unref();
  return {
    done() {
      clearTimeout(timer);
      if (shown) stream.write(`${label}: done in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    },
  };
}

/** @work, announced by startProgress while it runs. */
export async function withProgress<T>(label: string, work: () => Promise<T>, stream?: ProgressStream): Promise<T> {
  const progress = startProgress(label, stream);
  try {
    return await work();
  } finally {
    progress.done();
  }
}
