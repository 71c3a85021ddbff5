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

/**
 * Longest error text kept per request, in characters (Unicode code points, as SQLite's `substr` counts
 * them: the outbox cuts in SQL, insertRequestLog in JS alike, never inside a surrogate pair): enough to
 * read the cause, bounded so a batch stays small.
 */
export const MAX_ERROR_CHARS = 500;

/** A request-log row as insertRequestLogJson takes it: a JSON array in REQUEST_LOG_COLUMNS' order. */
export const REQUEST_LOG_COLUMNS = ["id", "client_id", "template", "queue", "status", "estimate_nano", "actual_nano", "attempts", "created_at", "finished_at", "error"] as const;

/**
 * Write finished requests in one statement over a JSON array. Keyed by request id: a batch delivered
 * twice (the outbox is cleared only after D1 answered) leaves the same rows.
 */
export async function insertRequestLog(db: D1Database, rows: FinishedRequest[]): Promise<void> {
  if (rows.length === 0) return;
  await insertRequestLogJson(db, JSON.stringify(rows.map((r) => REQUEST_LOG_COLUMNS.map((c) => (c === "error" && r.error !== null ? Array.from(r.error).slice(0, MAX_ERROR_CHARS).join("") : r[c])))));
}

/**
 * insertRequestLog over a JSON array of rows already built (each an array in REQUEST_LOG_COLUMNS' order,
 * the error cut to MAX_ERROR_CHARS): the scheduler's outbox builds it in its own SQLite, so a delivery
 * makes no object per request.
 */
export async function insertRequestLogJson(db: D1Database, json: string): Promise<void> {
  await db
    .prepare(
      `INSERT INTO request_log (${REQUEST_LOG_COLUMNS.join(", ")})
       SELECT ${REQUEST_LOG_COLUMNS.map((_, i) => `j.value ->> ${i}`).join(", ")}
       FROM json_each(?1) j WHERE true
       ON CONFLICT (id) DO UPDATE SET
         status = excluded.status, actual_nano = excluded.actual_nano, attempts = excluded.attempts,
         finished_at = excluded.finished_at, error = excluded.error`,
    )
    .bind(json)
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
