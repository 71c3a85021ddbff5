import type { BudgetView } from "../domain/budget";
import { DAY_MS, dayStart } from "../domain/calendar";
import type { QuotaShortfall } from "../domain/quota";
import { AppError } from "../errors";

/**
 * The 402 for a direct spend (consume, reserve): the same explanation enqueue gives (the budget, spent,
 * in flight, remaining, when it resets), naming the pool and units where enqueue names the template.
 */
export function spendBudgetRefusal(clientId: string, nano: number, what: { pool: string; units: number }, budget: BudgetView): AppError {
  return new AppError(
    "budget_exceeded",
    `client ${clientId} has ${budget.remaining_nano ?? 0} nano-dollars left of its ${budget.month} budget; this spend needs ${nano}`,
    { client_id: clientId, pool: what.pool, units: what.units, estimate_nano: nano, ...budget, alternative: null },
  );
}

/** The 429 for work or a reservation the client's quota cannot hold: the limit, its use, the shortfall (enqueue's too). */
export function spendQuotaRefusal(clientId: string, shortfall: QuotaShortfall): AppError {
  const what = shortfall.limit === "pool_daily" ? `its daily cap of ${shortfall.limit_value} units of ${shortfall.pool}` : `its ${shortfall.limit} quota of ${shortfall.limit_value}`;
  const now = Date.now();
  const retryMs = shortfall.limit === "pool_daily" ? dayStart(now) + DAY_MS - now : null;
  return new AppError(
    "quota_exceeded",
    `client ${clientId} would exceed ${what} by ${shortfall.shortfall}`,
    { client_id: clientId, ...shortfall, ...(retryMs !== null ? { retry_after_ms: retryMs } : {}) },
    retryMs !== null ? Math.ceil(retryMs / 1000) : undefined,
  );
}
