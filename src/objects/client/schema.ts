import { COUNTED_EVENT_KEEP_MS } from "../../domain/retention";

/** The client object's tables (created idempotently), and the upgrade of objects made before quotas. */
export function createTables(sql: SqlStorage): void {
  sql.exec(`
    CREATE TABLE IF NOT EXISTS jobs (
      job_id TEXT PRIMARY KEY, kind TEXT NOT NULL, acquired_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
      cpu_millicores INTEGER NOT NULL DEFAULT 0, memory_mb INTEGER NOT NULL DEFAULT 0, pools TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE IF NOT EXISTS pool_day (day TEXT NOT NULL, pool TEXT NOT NULL, units INTEGER NOT NULL, PRIMARY KEY (day, pool));
    CREATE TABLE IF NOT EXISTS bursts (id TEXT PRIMARY KEY, requested_at INTEGER NOT NULL, session TEXT NOT NULL, synced INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE IF NOT EXISTS spend (month TEXT PRIMARY KEY, spent_nano INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS in_flight (request_id TEXT PRIMARY KEY, estimate_nano INTEGER NOT NULL, admitted_at INTEGER NOT NULL);
    -- Event ids sort by their time (src/domain/ids.ts): the cleanup deletes a range of the primary key.
    CREATE TABLE IF NOT EXISTS counted (event_id TEXT PRIMARY KEY, cost_nano INTEGER NOT NULL, at INTEGER NOT NULL);
    -- Pool outboxes' deliveries: the highest outbox seq counted from each (one row per pool outbox).
    CREATE TABLE IF NOT EXISTS delivered (source TEXT PRIMARY KEY, seq INTEGER NOT NULL, updated_at INTEGER NOT NULL);
  `);
}

/**
 * Upgrades of objects made by earlier versions, each once. Objects created before quotas kept request
 * slots in "slots": carried over. Counted event ids were kept 40 days and swept by a scan of `at`; the
 * cleanup now deletes ranges of time-ordered ids (./ledger.ts), which would never reach ids made before
 * event ids were time-ordered (random UUIDs): one sweep by time drops every id past the new keep,
 * those included (none younger can exist: ids have been time-ordered since well before).
 */
export function migrate(sql: SqlStorage, now: number): void {
  if (sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'slots'").toArray().length) {
    sql.exec("INSERT OR IGNORE INTO jobs (job_id, kind, acquired_at, expires_at) SELECT request_id, 'request', acquired_at, expires_at FROM slots");
    sql.exec("DROP TABLE slots");
  }
  sql.exec("CREATE TABLE IF NOT EXISTS upgrades (name TEXT PRIMARY KEY, at INTEGER NOT NULL)");
  if (sql.exec("SELECT 1 FROM upgrades WHERE name = 'counted_by_id_range'").toArray().length === 0) {
    sql.exec("DELETE FROM counted WHERE at < ?", now - COUNTED_EVENT_KEEP_MS);
    sql.exec("INSERT INTO upgrades (name, at) VALUES ('counted_by_id_range', ?)", now);
  }
}
