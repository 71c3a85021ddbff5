import type { AlertSeverity } from "../domain/alerts";
import type { BudgetSettings } from "../domain/budget";
import type { Alert } from "./alerts";

/** What the dashboard reads from D1 beyond the other modules' queries: all read-only. */

export type SeverityCounts = Record<AlertSeverity, number>;

/** Open (not acknowledged, not resolved) alerts per severity: the header's counts. */
export async function openAlertCounts(db: D1Database): Promise<SeverityCounts> {
  const { results } = await db
    .prepare("SELECT severity, COUNT(*) AS n FROM alerts WHERE state = 'open' GROUP BY severity")
    .all<{ severity: AlertSeverity; n: number }>();
  const counts: SeverityCounts = { critical: 0, warning: 0, info: 0 };
  for (const r of results) counts[r.severity] = r.n;
  return counts;
}

/** Open alerts, most severe first, then newest first. */
export async function openAlertsBySeverity(db: D1Database, limit: number): Promise<Alert[]> {
  const { results } = await db
    .prepare(
      `SELECT * FROM alerts WHERE state = 'open'
       ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, raised_at DESC, id DESC
       LIMIT ?1`,
    )
    .bind(limit)
    .all<Omit<Alert, "details"> & { details: string }>();
  return results.map((r) => ({ ...r, details: JSON.parse(r.details) as Record<string, unknown> }));
}

/** Every active client's budget settings and its spend since `monthStartDay` (daily rollups, read by client and day). */
export async function clientMonthSpend(db: D1Database, monthStartDay: string): Promise<Array<{ client_id: string; settings: BudgetSettings; spent_nano: number }>> {
  const { results } = await db
    .prepare(
      `SELECT c.id AS client_id, c.monthly_budget_nano AS client_budget, t.monthly_budget_nano AS tier_budget,
              b.client_id IS NOT NULL AS has_override, b.monthly_budget_nano AS override_budget,
              COALESCE((SELECT SUM(u.cost_nano) FROM usage_daily u WHERE u.client_id = c.id AND u.day >= ?1), 0) AS spent_nano
       FROM clients c JOIN tiers t ON t.id = c.tier LEFT JOIN client_budgets b ON b.client_id = c.id
       WHERE c.status = 'active'`,
    )
    .bind(monthStartDay)
    .all<{ client_id: string; client_budget: number | null; tier_budget: number | null; has_override: number; override_budget: number | null; spent_nano: number }>();
  return results.map((r) => ({
    client_id: r.client_id,
    settings: { override: r.has_override ? { monthlyBudgetNano: r.override_budget } : null, clientBudgetNano: r.client_budget, tierBudgetNano: r.tier_budget },
    spent_nano: r.spent_nano,
  }));
}

/** Pool level samples in [from, to], by pool and time (read by the index on `at`). */
export async function poolSamplesBetween(db: D1Database, from: number, to: number): Promise<Array<{ pool_id: string; at: number; level: number; capacity: number }>> {
  const { results } = await db
    .prepare("SELECT pool_id, at, level, capacity FROM pool_samples WHERE at >= ?1 AND at <= ?2 ORDER BY pool_id, at")
    .bind(from, to)
    .all<{ pool_id: string; at: number; level: number; capacity: number }>();
  return results;
}

/**
 * Spend from the usage ledger in [from, to), summed per step of `stepMs` from `from` (read by the index
 * on `at`). Only steps with spending have a row. The casts keep the step an integer division.
 */
export async function spendSteps(db: D1Database, from: number, to: number, stepMs: number): Promise<Array<{ step: number; cost_nano: number }>> {
  const { results } = await db
    .prepare(
      `SELECT (at - CAST(?1 AS INTEGER)) / CAST(?3 AS INTEGER) AS step, SUM(cost_nano) AS cost_nano
       FROM usage_events WHERE at >= ?1 AND at < ?2 GROUP BY step ORDER BY step`,
    )
    .bind(from, to, stepMs)
    .all<{ step: number; cost_nano: number }>();
  return results;
}
