import { isRowidTable, keyedTable, storedTable } from "../sqlite";

/** Counted event ids as objects made before keyed tables kept them, until the cleanup has emptied them (./ledger.ts). */
export const COUNTED_BEFORE = "counted_before";

/**
 * The client object's tables (created idempotently), and the upgrades of objects made before. The tables
 * rows come and go from per request (`jobs`, `in_flight`, `counted`) and those upserted per settlement
 * are keyed tables (../sqlite.ts).
 */
export function createTables(sql: SqlStorage): void {
  // The client id this object was first reached by (ClientObject.clientId: an alarm that wakes it cold gives no name).
  sql.exec("CREATE TABLE IF NOT EXISTS identity (name TEXT NOT NULL)");
  sql.exec("CREATE TABLE IF NOT EXISTS bursts (id TEXT PRIMARY KEY, requested_at INTEGER NOT NULL, session TEXT NOT NULL, synced INTEGER NOT NULL DEFAULT 0)");
  keyedTable(sql, {
    name: "jobs",
    create: `CREATE TABLE IF NOT EXISTS jobs (
      job_id TEXT PRIMARY KEY, kind TEXT NOT NULL, acquired_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
      cpu_millicores INTEGER NOT NULL DEFAULT 0, memory_mb INTEGER NOT NULL DEFAULT 0, pools TEXT NOT NULL DEFAULT '{}',
      slots INTEGER NOT NULL DEFAULT 1
    ) WITHOUT ROWID`,
  });
  // A job's slots: 1, or a block lent to a scheduler shard (./jobs.ts, lend). Objects made before had 1 per job.
  if (!sql.exec<{ name: string }>("SELECT name FROM pragma_table_info('jobs')").toArray().some((c) => c.name === "slots")) {
    sql.exec("ALTER TABLE jobs ADD COLUMN slots INTEGER NOT NULL DEFAULT 1");
  }
  keyedTable(sql, { name: "pool_day", create: "CREATE TABLE IF NOT EXISTS pool_day (day TEXT NOT NULL, pool TEXT NOT NULL, units INTEGER NOT NULL, PRIMARY KEY (day, pool)) WITHOUT ROWID" });
  keyedTable(sql, { name: "spend", create: "CREATE TABLE IF NOT EXISTS spend (month TEXT PRIMARY KEY, spent_nano INTEGER NOT NULL) WITHOUT ROWID" });
  keyedTable(sql, { name: "in_flight", create: "CREATE TABLE IF NOT EXISTS in_flight (request_id TEXT PRIMARY KEY, estimate_nano INTEGER NOT NULL, admitted_at INTEGER NOT NULL) WITHOUT ROWID" });
  // Event ids sort by their time (src/domain/ids.ts): the cleanup deletes a range of the key
  // (./ledger.ts). An object made before kept them 40 days in a rowid table, some made before ids were
  // time-ordered (random UUIDs, which no range reaches): that table is set aside as `counted_before`,
  // renamed rather than copied (it may hold tens of millions of rows); the ledger still finds repeats in
  // it, and its cleanup empties it by event time a batch a minute, then drops it.
  if (isRowidTable(sql, "counted") && storedTable(sql, COUNTED_BEFORE) === undefined) {
    sql.exec(`ALTER TABLE counted RENAME TO ${COUNTED_BEFORE}`);
  }
  sql.exec("CREATE TABLE IF NOT EXISTS counted (event_id TEXT PRIMARY KEY, cost_nano INTEGER NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID");
  // Pool outboxes' deliveries: the highest outbox seq counted from each (one row per pool outbox).
  keyedTable(sql, { name: "delivered", create: "CREATE TABLE IF NOT EXISTS delivered (source TEXT PRIMARY KEY, seq INTEGER NOT NULL, updated_at INTEGER NOT NULL) WITHOUT ROWID" });
}

/** Objects created before quotas kept request slots in "slots": carry them over once. */
export function migrate(sql: SqlStorage): void {
  if (sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'slots'").toArray().length) {
    sql.exec("INSERT OR IGNORE INTO jobs (job_id, kind, acquired_at, expires_at) SELECT request_id, 'request', acquired_at, expires_at FROM slots");
    sql.exec("DROP TABLE slots");
  }
}
