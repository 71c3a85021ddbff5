import type { BudgetSettings } from "../domain/budget";

/** What /metrics reads from D1, in one batch (one round trip). */
export interface MetricsRows {
  /** Spend per pool from the daily rollups: all time, and since `monthStartDay`. */
  spend: Array<{ pool_id: string; total_nano: number; month_nano: number }>;
  /** Every active client's budget settings and spend since `monthStartDay`. */
  clients: Array<{ client_id: string; settings: BudgetSettings; month_nano: number }>;
  /** Unresolved (open or acknowledged) alerts per kind. */
  openAlerts: Array<{ kind: string; n: number }>;
}

export async function metricsRows(db: D1Database, monthStartDay: string): Promise<MetricsRows> {
  const [spend, clients, alerts] = await db.batch([
    db.prepare(
      `SELECT pool_id, SUM(cost_nano) AS total_nano, SUM(CASE WHEN day >= ?1 THEN cost_nano ELSE 0 END) AS month_nano
       FROM usage_daily GROUP BY pool_id`,
    ).bind(monthStartDay),
    db.prepare(
      `SELECT c.id AS client_id, c.monthly_budget_nano AS client_budget, t.monthly_budget_nano AS tier_budget,
              b.client_id IS NOT NULL AS has_override, b.monthly_budget_nano AS override_budget,
              COALESCE((SELECT SUM(u.cost_nano) FROM usage_daily u WHERE u.client_id = c.id AND u.day >= ?1), 0) AS month_nano
       FROM clients c JOIN tiers t ON t.id = c.tier LEFT JOIN client_budgets b ON b.client_id = c.id
       WHERE c.status = 'active' ORDER BY c.id`,
    ).bind(monthStartDay),
    db.prepare("SELECT kind, COUNT(*) AS n FROM alerts WHERE state != 'resolved' GROUP BY kind"),
  ]);
  type ClientRow = { client_id: string; client_budget: number | null; tier_budget: number | null; has_override: number; override_budget: number | null; month_nano: number };
  return {
    spend: spend!.results as MetricsRows["spend"],
    clients: (clients!.results as ClientRow[]).map((r) => ({
      client_id: r.client_id,
      settings: {
        override: r.has_override ? { monthlyBudgetNano: r.override_budget } : null,
        clientBudgetNano: r.client_budget,
        tierBudgetNano: r.tier_budget,
      },
      month_nano: r.month_nano,
    })),
    openAlerts: alerts!.results as MetricsRows["openAlerts"],
  };
}
