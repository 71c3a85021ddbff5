/**
 * When the shard's next pass runs: soon (within SOON_MS) on a timer in the object's memory, backed by
 * the durable alarm; later on the alarm alone.
 *
 * A busy shard asks for a pass right after the last one tens of times a second (more ready work, a
 * settlement freed room). Each `setAlarm` to a new time is a write to the runtime's alarm store: a
 * commit, and under `wrangler dev` an `fsync` on the runtime's only thread. In a drain of 30,000 the
 * alarm store took 108 of 577 `fsync`s (the most of any file, docs/benchmarks.md). A timer costs no
 * write. The alarm still guarantees the pass: it is kept set no later than BACKSTOP_MS ahead, written
 * only when none is set that early, so a shard that loses its memory (evicted, restarted, its timer
 * gone) passes again within BACKSTOP_MS, as the cron would a minute later.
 */
import { log } from "../../log";
import type { AlarmClock } from "../alarm";
import { BUSY_FLUSH_MS } from "./outbox";

/** A pass wanted within this many ms runs on a timer: the next pass of a busy stretch, and its outbox's next delivery (BUSY_FLUSH_MS). */
export const SOON_MS = BUSY_FLUSH_MS;
/** The durable alarm behind a timer is set no later than this far ahead. */
export const BACKSTOP_MS = 1000;
/** A timer this late has not fired (its object's context went): the next ask sets another. */
const OVERDUE_MS = 1000;

export class PassWaker {
  /** The timer's time, or null when none is set. */
  private timerAt: number | null = null;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly clock: AlarmClock,
    private readonly runPass: () => Promise<unknown>,
  ) {}

  /** Make sure a pass runs no later than `at`. */
  ensure(at: number): void {
    const now = Date.now();
    if (at - now > SOON_MS) {
      this.clock.ensure(at);
      return;
    }
    this.clock.ensure(now + BACKSTOP_MS);
    // A timer set for no later than `at` will do, unless it is overdue (it did not fire: set it again).
    if (this.timerAt !== null && this.timerAt <= at && this.timerAt >= now - OVERDUE_MS) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timerAt = null;
      this.timer = undefined;
      // A pass that fails here is made again by the alarm behind it (the alarm's own failures the runtime retries).
      this.runPass().catch((err: unknown) => log.error("scheduler_pass_failed", { trigger: "timer", error: String(err) }));
    }, Math.max(0, at - now));
  }
}
