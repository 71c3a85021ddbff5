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
  /** The timer's or the alarm's pass running now, if any. */
  private running: Promise<unknown> | null = null;
  /** The timer fired while a pass ran: one more runs when it ends. */
  private again = false;

  constructor(
    private readonly clock: AlarmClock,
    private readonly runPass: (trigger: "timer" | "alarm") => Promise<unknown>,
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
      this.fire();
    }, Math.max(0, at - now));
  }

  /**
   * The alarm fired: its pass, after the timer's or alarm's pass running now. These passes never overlap, as
   * alarm passes alone never did (the runtime runs one alarm of an object at a time): two passes
   * ranking at once each walk their own fair order, and a backlog's first dispatches drifted from the
   * clients' weights by up to 30% (test/api/fairness.test.ts).
   */
  async alarm(): Promise<void> {
    this.clock.fired();
    while (this.running) await this.running.catch(() => undefined);
    await this.track(this.runPass("alarm"));
  }

  private fire(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    // A pass that fails here is made again by the alarm behind it (the alarm's own failures the runtime retries).
    void this.track(this.runPass("timer")).catch((err: unknown) => log.error("scheduler_pass_failed", { trigger: "timer", error: String(err) }));
  }

  private async track(pass: Promise<unknown>): Promise<void> {
    this.running = pass;
    try {
      await pass;
    } finally {
      if (this.running === pass) this.running = null;
      if (this.again && !this.running) {
        this.again = false;
        this.ensure(Date.now());
      }
    }
  }
}
