import type { BudgetSettings } from "../domain/budget";
import type { Tier } from "../domain/types";

/** The client behind an API key, as authentication needs it. */
export interface KeyOwner {
  keyId: string;
  clientId: string;
  tier: Tier;
  clientStatus: "active" | "suspended";
  scopes: string[];
}

export async function findKeyOwner(db: D1Database, keyHash: string): Promise<KeyOwner | null> {
  const row = await db
    .prepare(
      `SELECT k.id AS key_id, k.scopes, c.id AS client_id, c.tier, c.status
       FROM api_keys k JOIN clients c ON c.id = k.client_id
       WHERE k.key_hash = ?1 AND k.revoked_at IS NULL`,
    )
    .bind(keyHash)
    .first<{ key_id: string; scopes: string; client_id: string; tier: Tier; status: KeyOwner["clientStatus"] }>();
  if (!row) return null;
  return { keyId: row.key_id, clientId: row.client_id, tier: row.tier, clientStatus: row.status, scopes: JSON.parse(row.scopes) as string[] };
}

export async function findClientTier(db: D1Database, clientId: string): Promise<{ tier: Tier; status: string } | null> {
  return db.prepare("SELECT tier, status FROM clients WHERE id = ?1").bind(clientId).first<{ tier: Tier; status: string }>();
}

export async function countRows(db: D1Database): Promise<Record<string, number>> {
  const row = await db
    .prepare(
      `SELECT (SELECT COUNT(*) FROM clients) AS clients, (SELECT COUNT(*) FROM pools) AS pools,
              (SELECT COUNT(*) FROM templates) AS templates,
              (SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL) AS api_keys,
              (SELECT COUNT(*) FROM usage_events) AS usage_events`,
    )
    .first<Record<string, number>>();
  return row ?? {};
}

export interface TierRow {
  id: Tier;
  priority_points: number;
  max_concurrent: number;
  monthly_budget_nano: number | null;
}

export async function listTiers(db: D1Database): Promise<TierRow[]> {
  const { results } = await db.prepare("SELECT id, priority_points, max_concurrent, monthly_budget_nano FROM tiers").all<TierRow>();
  return results;
}

/** What decides a client's budget (see resolveBudget); null for an unknown client. */
export async function findBudgetSettings(db: D1Database, clientId: string): Promise<BudgetSettings | null> {
  const row = await db
    .prepare(
      `SELECT c.monthly_budget_nano AS client_budget, t.monthly_budget_nano AS tier_budget,
              b.client_id IS NOT NULL AS has_override, b.monthly_budget_nano AS override_budget
       FROM clients c JOIN tiers t ON t.id = c.tier LEFT JOIN client_budgets b ON b.client_id = c.id
       WHERE c.id = ?1`,
    )
    .bind(clientId)
    .first<{ client_budget: number | null; tier_budget: number | null; has_override: number; override_budget: number | null }>();
  if (!row) return null;
  return {
    override: row.has_override ? { monthlyBudgetNano: row.override_budget } : null,
    clientBudgetNano: row.client_budget,
    tierBudgetNano: row.tier_budget,
  };
}

/** Set (a number), lift (null) or remove (undefined: back to the client's or tier's) an operator's budget. */
export async function setClientBudget(db: D1Database, clientId: string, monthlyBudgetNano: number | null | undefined, now = Date.now()): Promise<void> {
  if (monthlyBudgetNano === undefined) {
    await db.prepare("DELETE FROM client_budgets WHERE client_id = ?1").bind(clientId).run();
    return;
  }
  await db
    .prepare(
      `INSERT INTO client_budgets (client_id, monthly_budget_nano, updated_at) VALUES (?1, ?2, ?3)
       ON CONFLICT (client_id) DO UPDATE SET monthly_budget_nano = excluded.monthly_budget_nano, updated_at = excluded.updated_at`,
    )
    .bind(clientId, monthlyBudgetNano, now)
    .run();
}
