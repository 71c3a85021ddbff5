/**
 * When a shard's next pass runs. A pass asked for at a time runs then from a timer in memory; the
 * durable alarm is only the backstop, kept no later than WAKE_BACKSTOP_MS after it, for an object that
 * is evicted or restarted before its timer fires (and for the runtime's retries of a pass that throws).
 *
 * Why not the alarm alone: under `wrangler dev` every alarm set or fired is a commit of its own (the
 * object's metadata and the runtime's alarm store), and a draining shard asked for a pass two or three
 * times a cycle (a settlement's freed capacity, the paced pass's next, the outbox's due): about a seventh
 * of a drain's commits (docs/benchmarks.md). Now the alarm is written about once a second while a shard
 * is busy, and not at all for a wake an alarm already set covers.
 *
 * The passes it runs (timer or alarm) never overlap, as the runtime never overlaps alarm handlers:
 * one that is asked for while another runs waits for it, and every wake asked for meanwhile is served by
 * that one waiting pass (it reads the state when it starts).
 */
import { log } from "../../log";

/** The durable alarm is kept at most this long after the pass asked for (one write a second at most while busy). */
export const WAKE_BACKSTOP_MS = 1000;
/**
 * A pass the timer brings starts at least this long after the last one ended. Under `wrangler dev` every
 * object shares one thread, and passes run back to back kept an execute's calls queued behind the
 * backlog's (executes during a drain: p95 210-271 ms with no gap, 137-194 with 5 ms, 141-169 with 10;
 * docs/benchmarks.md); the alarm's own latency used to space them so.
 */
export const PASS_GAP_MS = 10;

export interface WakerHost {
  /** One pass; `trigger` is "alarm" (the durable alarm fired) or "wake" (the timer). */
  pass(trigger: "alarm" | "wake"): Promise<unknown>;
  /** Whether this object's storage still answers (false once it was reset: a wake's failure is then not logged). */
  alive(): boolean;
}

export class Waker {
  /** The durable alarm as last set or read (null: none, or it fired). */
  alarmAt: number | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private timerAt: number | null = null;
  /** The pass running or last run, and whether another is already waiting behind it. */
  private tail: Promise<unknown> = Promise.resolve();
  private waiting: Promise<unknown> | null = null;
  /** When the last pass ended. */
  private lastEnd = 0;

  constructor(private readonly storage: DurableObjectStorage, private readonly host: WakerHost) {}

  /** When the next pass runs in memory (null: none asked for). */
  get nextAt(): number | null {
    return this.timerAt;
  }

  /** A pass at `at` at the latest (now, when `at` is past). */
  wakeAt(at: number): void {
    const now = Date.now();
    if (this.timerAt === null || at < this.timerAt) {
      if (this.timer !== null) clearTimeout(this.timer);
      this.timerAt = at;
      this.timer = setTimeout(() => this.fire(), Math.max(0, at - now));
    }
    // An alarm due no later than the backstop will do, unless it is overdue (a failed alarm waits in the
    // runtime's retry backoff): then set it again.
    const backstop = at + WAKE_BACKSTOP_MS;
    if (this.alarmAt !== null && this.alarmAt <= backstop && this.alarmAt >= now - WAKE_BACKSTOP_MS) return;
    this.alarmAt = backstop;
    void this.storage.setAlarm(backstop);
  }

  /** The durable alarm fired: its pass, after any running one. A pass that throws fails the alarm, which the runtime retries. */
  async alarm(): Promise<void> {
    this.alarmAt = null;
    await this.serial("alarm");
  }

  private fire(): void {
    this.timer = null;
    this.timerAt = null;
    this.serial("wake").catch((err: unknown) => {
      // The backstop alarm runs it again. An object reset meanwhile (tests) says nothing: its storage is gone.
      if (this.host.alive()) log.error("wake_pass_failed", { error: String(err), retry_in_ms: WAKE_BACKSTOP_MS });
    });
  }

  /** Run a pass after the one running, if any; a pass already waiting serves this call too. */
  private serial(trigger: "alarm" | "wake"): Promise<unknown> {
    if (this.waiting) return this.waiting;
    const next = this.tail.then(noop, noop).then(async () => {
      const gap = this.lastEnd + PASS_GAP_MS - Date.now();
      if (trigger === "wake" && gap > 0) await new Promise((resolve) => setTimeout(resolve, gap));
      this.waiting = null;
      try {
        return await this.host.pass(trigger);
      } finally {
        this.lastEnd = Date.now();
      }
    });
    this.waiting = next;
    this.tail = next;
    return next;
  }
}

function noop(): void {}
