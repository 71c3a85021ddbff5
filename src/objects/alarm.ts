import { log } from "../log";

/**
 * An object's one alarm, as the object last set it.
 *
 * `ensure(at)` makes sure the alarm fires no later than `at` without a storage call when one already
 * does. A `setAlarm` that fails (the object is being reset or evicted; storage refused the write) is
 * logged, and the clock forgets what it set, so the next `ensure` sets it again: it never becomes an
 * unhandled rejection, and a lost alarm is never taken for a set one.
 */
export class AlarmClock {
  private at: number | null = null;

  constructor(
    private readonly storage: DurableObjectStorage,
    private readonly owner: string,
  ) {}

  /** Read the alarm the runtime holds (in the constructor's blockConcurrencyWhile). */
  async load(): Promise<void> {
    this.at = await this.storage.getAlarm();
  }

  /** The alarm fired: none is set until the next `ensure`. */
  fired(): void {
    this.at = null;
  }

  /** Make sure an alarm fires no later than `at`. */
  ensure(at: number): void {
    // An alarm already due no later than `at` will do, unless it is overdue (a failed alarm waits in
    // the runtime's retry backoff): then set it again.
    if (this.at !== null && this.at <= at && this.at >= Date.now() - 1000) return;
    this.set(at);
  }

  /** Set the alarm to `at`, earlier or later than the one set. */
  set(at: number): void {
    this.at = at;
    let setting: Promise<void>;
    try {
      setting = this.storage.setAlarm(at);
    } catch (err) {
      this.failed(at, err);
      return;
    }
    setting.catch((err: unknown) => this.failed(at, err));
  }

  private failed(at: number, err: unknown): void {
    if (this.at === at) this.at = null;
    log.warn("alarm_set_failed", { object: this.owner, at, error: String(err) });
  }
}
