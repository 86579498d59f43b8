/** A request waiting for the next run, and how to answer its caller. */
interface Waiting<T, R> {
  request: T;
  answer: (result: R) => void;
  fail: (error: unknown) => void;
}

/**
 * Requests of many callers served together, by one process for many: at
 * most @concurrency runs at a time, and the next takes every request made
 * while none could start, in the order they came. A burst of namespaces
 * asking at once costs a few processes, not one each (each one a fork of
 * the agent, ~10 ms of its CPU), and a lone request runs at once. @runAll
 * answers each request of its batch, in order; when it rejects, every
 * request of the batch fails with its error.
 */
export class Together<T, R> {
  private waiting: Waiting<T, R>[] = [];
  private running = 0;

  constructor(
    private readonly runAll: (requests: T[]) => Promise<R[]>,
    private readonly concurrency = 1,
  ) {}

  run(request: T): Promise<R> {
    return new Promise((answer, fail) => {
      this.waiting.push({ request, answer, fail });
      this.next();
    });
  }

  private next(): void {
    if (this.running >= this.concurrency || this.waiting.length === 0) return;
    const batch = this.waiting;
    this.waiting = [];
    this.running += 1;
    void this.serve(batch).finally(() => {
      this.running -= 1;
      this.next();
    });
  }

  /** Runs @batch and answers each of its callers; never rejects (failures go to the callers). */
  private async serve(batch: Waiting<T, R>[]): Promise<void> {
    let results: R[];
    try {
      results = await this.runAll(batch.map((waiting) => waiting.request));
    } catch (error) {
      for (const waiting of batch) waiting.fail(error);
      return;
    }
    batch.forEach((waiting, index) => waiting.answer(results[index]!));
  }
}
