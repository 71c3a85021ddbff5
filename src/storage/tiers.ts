import type { Tier } from "../domain/types";

/** A tier as D1 keeps it (reference data from migrations/0002; operators PATCH it). */
export interface TierRow {
  id: Tier;
  /** Priority points (0-40) every request of the tier starts with. */
  priority_points: number;
  max_concurrent: number;
  /** NULL: no tier default ("custom": the client's own budget applies). */
  monthly_budget_nano: number | null;
  /** Fair-share weight in dispatch. */
  weight: number;
}

export type TierChanges = Partial<Omit<TierRow, "id">>;

const COLUMNS = "id, priority_points, max_concurrent, monthly_budget_nano, weight";
const CHANGEABLE = ["priority_points", "max_concurrent", "monthly_budget_nano", "weight"] as const;

export async function listTiers(db: D1Database): Promise<TierRow[]> {
  const { results } = await db.prepare(`SELECT ${COLUMNS} FROM tiers ORDER BY priority_points DESC, id`).all<TierRow>();
  return results;
}

/** Change some of a tier's fields; the row afterwards, or null for a tier that is not in D1. */
export async function updateTier(db: D1Database, id: Tier, changes: TierChanges): Promise<TierRow | null> {
  const fields = CHANGEABLE.filter((k) => changes[k] !== undefined);
  const set = fields.map((k, i) => `${k} = ?${i + 2}`).join(", ");
  return db
    .prepare(`UPDATE tiers SET ${set} WHERE id = ?1 RETURNING ${COLUMNS}`)
    .bind(id, ...fields.map((k) => changes[k]))
    .first<TierRow>();
}
