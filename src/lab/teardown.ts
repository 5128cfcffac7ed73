/**
 * Teardown that keeps going: every step runs even when an earlier one
 * failed, so a broken test still removes everything it made; the failures
 * are reported together at the end.
 */
export class Teardown {
  private readonly errors: unknown[] = [];

  async step(fn: () => Promise<unknown>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      this.errors.push(err);
    }
  }

  finish(what: string): void {
    if (this.errors.length) throw new AggregateError(this.errors, `${what} had errors`);
  }
}
