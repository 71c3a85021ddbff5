/**
 * Callers waiting for a request's attempt to end (an execute: SchedulerObject.execute): woken when the
 * request finishes, or when a failed attempt sends it back to its queue; each wait also ends by its own
 * timer. Memory only: a waiting caller is an open call into this object's life.
 */
export class EndWaiters {
  private readonly waiting = new Map<string, Array<() => void>>();

  /** Resolve with nothing after `ms`, or as soon as the request's attempt ends (wake). */
  waitFor(id: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      const list = this.waiting.get(id);
      if (list) list.push(done);
      else this.waiting.set(id, [done]);
    });
  }

  /** Whether a caller waits for this request. */
  has(id: string): boolean {
    return this.waiting.has(id);
  }

  /** The request's attempt ended: its waiters answer now. */
  wake(id: string): void {
    const list = this.waiting.get(id);
    if (!list) return;
    this.waiting.delete(id);
    for (const done of list) done();
  }
}
