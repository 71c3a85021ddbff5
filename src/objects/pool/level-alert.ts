import { poolAlerts, POOL_LOW_PERCENT, type AlertDecision } from "../../domain/alerts";
import { log } from "../../log";
import { applyAlerts } from "../../storage/alert-apply";
import type { PoolStore } from "./store";

/**
 * The pool_low alert: raised when this pool is below its low-water percent (default 10%) of capacity,
 * resolved when it is not (or the pool is disabled), from the alarm that follows spending (never on the
 * hot path). D1 is written only when the state changes; the cron pass re-checks every pool.
 */
export class LevelAlert {
  /** Whether the alert was last reported raised (true) or cleared (false); null: not yet. */
  private reported: boolean | null = null;

  constructor(
    private readonly env: Env,
    private readonly store: PoolStore,
  ) {}

  /** Forget what was reported (a newly installed pool reports afresh). */
  reset(): void {
    this.reported = null;
  }

  async report(): Promise<void> {
    const { config } = this.store;
    if (!config) return;
    this.store.refillTo(Date.now(), config);
    const level = this.store.bucket.level;
    const threshold = config.lowWaterPercent ?? POOL_LOW_PERCENT;
    // A disabled (or deleted) pool takes no spending, so how full it is concerns no one.
    const disabled = config.status === "disabled";
    const low = !disabled && level * 100 < config.capacity * threshold;
    if (low === this.reported) return;
    const decision: AlertDecision = disabled
      ? { raise: [], clear: [{ kind: "pool_low", subject: config.id }] }
      : poolAlerts([{ id: config.id, level: Math.floor(level + 1e-9), capacity: config.capacity, lowWaterPercent: threshold }]);
    try {
      await applyAlerts(this.env, decision, Date.now());
      this.reported = low;
    } catch (err) {
      log.warn("pool_alert_failed", { pool: config.id, error: String(err) });
    }
  }
}
