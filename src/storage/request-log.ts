/** `request_log` in D1: finished requests, as the scheduler object delivers them from its outbox. */
export interface FinishedRequest {
  id: string;
  client_id: string;
  template: string;
  queue: string;
  status: "completed" | "failed" | "cancelled" | "expired";
  estimate_nano: number;
  actual_nano: number | null;
  attempts: number;
  created_at: number;
  finished_at: number;
  error: string | null;
}

/** Longest error text kept per request: enough to read the cause, bounded so a batch stays small. */
export const MAX_ERROR_CHARS = 500;

/**
 * Write finished requests in one statement over a JSON array. Keyed by request id: a batch delivered
 * twice (the outbox is cleared only after D1 answered) leaves the same rows.
 */
export async function insertRequestLog(db: D1Database, rows: FinishedRequest[]): Promise<void> {
  if (rows.length === 0) return;
  await db
    .prepare(
      `INSERT INTO request_log (id, client_id, template, queue, status, estimate_nano, actual_nano, attempts, created_at, finished_at, error)
       SELECT j.value ->> '$.id', j.value ->> '$.client_id', j.value ->> '$.template', j.value ->> '$.queue', j.value ->> '$.status',
              j.value ->> '$.estimate_nano', j.value ->> '$.actual_nano', j.value ->> '$.attempts', j.value ->> '$.created_at',
              j.value ->> '$.finished_at', j.value ->> '$.error'
       FROM json_each(?1) j WHERE true
       ON CONFLICT (id) DO UPDATE SET
         status = excluded.status, actual_nano = excluded.actual_nano, attempts = excluded.attempts,
         finished_at = excluded.finished_at, error = excluded.error`,
    )
    .bind(JSON.stringify(rows.map((r) => ({ ...r, error: r.error === null ? null : r.error.slice(0, MAX_ERROR_CHARS) }))))
    .run();
}

/** The latest failed requests, newest first. */
export async function recentFailures(db: D1Database, limit: number): Promise<FinishedRequest[]> {
  const { results } = await db
    .prepare("SELECT * FROM request_log WHERE status = 'failed' ORDER BY finished_at DESC, id DESC LIMIT ?1")
    .bind(limit)
    .all<FinishedRequest>();
  return results;
}
