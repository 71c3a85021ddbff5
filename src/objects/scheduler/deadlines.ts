/**
 * One worker call's stop: cancelled (a cancel, a lease that ended) or past its deadline. `stopped`
 * rejects with the reason. An AbortSignal is made only for a call over HTTP, which fetch needs.
 */
export class CallHandle {
  readonly stopped: Promise<never>;
  private reason: unknown = undefined;
  private stop!: (reason: unknown) => void;
  private controller: AbortController | null = null;
  /** When the call started (young calls pace the pass: WorkerCalls.young). */
  readonly at = Date.now();

  constructor() {
    this.stopped = new Promise<never>((_, reject) => {
      this.stop = reject;
    });
    // A call may end before anyone races this; a later stop must not be an unhandled rejection.
    this.stopped.catch(() => undefined);
  }

  get aborted(): boolean {
    return this.reason !== undefined;
  }

  abort(reason: unknown = new Error("aborted")): void {
    if (this.reason !== undefined) return;
    this.reason = reason;
    this.stop(reason);
    this.controller?.abort(reason);
  }

  signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.reason !== undefined) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }
}

/**
 * Deadlines on one timer, armed for the earliest. Calls share a template's timeout, so a new deadline
 * is rarely the earliest and arms nothing; a call that ends removes its entry.
 */
export class Deadlines {
  private entries = new Set<{ at: number; fire: () => void }>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private timerAt = Infinity;

  add(at: number, fire: () => void): { at: number; fire: () => void } {
    const entry = { at, fire };
    this.entries.add(entry);
    if (at < this.timerAt) this.arm(at);
    return entry;
  }

  remove(entry: { at: number; fire: () => void }): void {
    this.entries.delete(entry);
    if (this.entries.size === 0 && this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
      this.timerAt = Infinity;
    }
  }

  private arm(at: number): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => this.sweep(), Math.max(0, at - Date.now()));
  }

  private sweep(): void {
    this.timer = null;
    this.timerAt = Infinity;
    const now = Date.now();
    let next = Infinity;
    for (const entry of [...this.entries]) {
      if (entry.at <= now) {
        this.entries.delete(entry);
        entry.fire();
      } else {
        next = Math.min(next, entry.at);
      }
    }
    if (next < Infinity) this.arm(next);
  }
}
