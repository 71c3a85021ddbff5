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
