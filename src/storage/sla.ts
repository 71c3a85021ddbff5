import type { SlaTarget } from "../domain/sla";

/** Operators' SLA targets (tiers and queues without a row take the defaults). */
export async function listSlaTargets(db: D1Database): Promise<SlaTarget[]> {
  const { results } = await db.prepare("SELECT tier, queue, max_wait_ms, max_exec_ms, target_percent FROM sla_targets").all<SlaTarget>();
  return results;
}

export async function putSlaTarget(db: D1Database, t: SlaTarget, now = Date.now()): Promise<void> {
  await db
    .prepare(
      `INSERT INTO sla_targets (tier, queue, max_wait_ms, max_exec_ms, target_percent, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
       ON CONFLICT (tier, queue) DO UPDATE SET max_wait_ms = excluded.max_wait_ms, max_exec_ms = excluded.max_exec_ms,
         target_percent = excluded.target_percent, updated_at = excluded.updated_at`,
    )
    .bind(t.tier, t.queue, t.max_wait_ms, t.max_exec_ms, t.target_percent, now)
    .run();
}

/** Back to the defaults. */
export async function deleteSlaTarget(db: D1Database, tier: string, queue: string): Promise<void> {
  await db.prepare("DELETE FROM sla_targets WHERE tier = ?1 AND queue = ?2").bind(tier, queue).run();
}
