/**
 * `admin_sessions` and `login_attempts` in D1: the dashboard's sessions, which logging out revokes,
 * and failed logins counted per source address. Both tables grow only with logins, and each login
 * deletes at most PRUNE_LIMIT of their stale rows, so they stay bounded without a cron job.
 */

/** Stale rows deleted per login (sessions) or login attempt (attempt windows). */
export const PRUNE_LIMIT = 100;

/** Record a new session, and delete up to `limit` expired ones (revoked or not), in one batch. */
export async function insertSession(db: D1Database, id: string, now: number, expiresAt: number, limit = PRUNE_LIMIT): Promise<void> {
  await db.batch([
    pruneSessionsStatement(db, now, limit),
    db.prepare("INSERT INTO admin_sessions (id, created_at, expires_at, revoked_at) VALUES (?1, ?2, ?3, NULL)").bind(id, now, expiresAt),
  ]);
}

/** Whether the session exists, is not revoked and has not expired. */
export async function isSessionActive(db: D1Database, id: string, now: number): Promise<boolean> {
  const row = await db.prepare("SELECT 1 AS ok FROM admin_sessions WHERE id = ?1 AND revoked_at IS NULL AND expires_at > ?2").bind(id, now).first();
  return row !== null;
}

/** Revoke a session (kept until it would have expired, then pruned); a second revoke changes nothing. */
export async function revokeSession(db: D1Database, id: string, now: number): Promise<void> {
  await db.prepare("UPDATE admin_sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL").bind(id, now).run();
}

/** Delete up to `limit` sessions that have expired; answers how many went. */
export async function pruneSessions(db: D1Database, now: number, limit = PRUNE_LIMIT): Promise<number> {
  return (await pruneSessionsStatement(db, now, limit).run()).meta.changes;
}

function pruneSessionsStatement(db: D1Database, now: number, limit: number): D1PreparedStatement {
  return db.prepare("DELETE FROM admin_sessions WHERE id IN (SELECT id FROM admin_sessions WHERE expires_at <= ?1 LIMIT ?2)").bind(now, limit);
}

/** A source's attempts in its current window, this one included, and when that window started. */
export interface AttemptWindow {
  attempts: number;
  windowStart: number;
}

/**
 * Count one login attempt for `source` in one atomic upsert (exact however many isolates race): a new
 * window starts at `now` when the source has none or its window has ended. Windows ended for other
 * sources are deleted, at most `limit`, in the same batch.
 */
export async function countLoginAttempt(db: D1Database, source: string, now: number, windowMs: number, limit = PRUNE_LIMIT): Promise<AttemptWindow> {
  const [, counted] = await db.batch<{ attempts: number; window_start: number }>([
    db.prepare("DELETE FROM login_attempts WHERE source IN (SELECT source FROM login_attempts WHERE window_start <= ?1 AND source != ?2 LIMIT ?3)")
      .bind(now - windowMs, source, limit),
    db.prepare(
      `INSERT INTO login_attempts (source, window_start, attempts) VALUES (?1, ?2, 1)
       ON CONFLICT (source) DO UPDATE SET
         attempts = CASE WHEN window_start <= ?2 - ?3 THEN 1 ELSE attempts + 1 END,
         window_start = CASE WHEN window_start <= ?2 - ?3 THEN ?2 ELSE window_start END
       RETURNING attempts, window_start`,
    ).bind(source, now, windowMs),
  ]);
  const row = counted!.results[0]!;
  return { attempts: row.attempts, windowStart: row.window_start };
}

/** Forget a source's attempts (after it logged in). */
export async function clearLoginAttempts(db: D1Database, source: string): Promise<void> {
  await db.prepare("DELETE FROM login_attempts WHERE source = ?1").bind(source).run();
}
