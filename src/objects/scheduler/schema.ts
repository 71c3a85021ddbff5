import { keyedTable } from "../sqlite";

/**
 * The scheduler object's own SQLite tables, created idempotently, with the columns added since the
 * first version: `requests` (every request it holds, written only by QueueStore; what each request is,
 * its params, plan and estimate, in `request_bodies`), `state` (running
 * flag, dispatch counters), `finished_outbox` (finished requests still to deliver to D1; Outbox) and
 * `settle_owed` (settlements that failed, until one goes through; OwedSettlements). `state` and
 * `finished_outbox` are keyed tables (../sqlite.ts); `finished_outbox.optimizer`: whether a finished
 * request has optimizer records to deliver (1 for entries written before the column).
 */
export function createTables(sql: SqlStorage): void {
  sql.exec(`
    CREATE TABLE IF NOT EXISTS requests (
      id TEXT PRIMARY KEY,
      client_id TEXT NOT NULL,
      tier TEXT NOT NULL,
      max_concurrent INTEGER NOT NULL,
      template TEXT NOT NULL,
      queue TEXT NOT NULL,
      status TEXT NOT NULL,
      priority REAL NOT NULL DEFAULT 0,
      attempts INTEGER NOT NULL DEFAULT 0,
      max_attempts INTEGER NOT NULL,
      idempotency_key TEXT,
      estimate_nano INTEGER NOT NULL,
      actual_nano INTEGER,
      result TEXT,
      error TEXT,
      created_at INTEGER NOT NULL,
      updated_at INTEGER NOT NULL,
      not_before INTEGER NOT NULL,
      lease_until INTEGER,
      started_at INTEGER,
      finished_at INTEGER,
      dispatch_seq INTEGER,
      reservations TEXT,
      actual_detail TEXT
    );
    CREATE UNIQUE INDEX IF NOT EXISTS requests_idempotency ON requests (client_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
    CREATE INDEX IF NOT EXISTS requests_client_created ON requests (client_id, created_at);
    DROP INDEX IF EXISTS requests_status;
  `);
  keyedTable(sql, { name: "state", create: "CREATE TABLE IF NOT EXISTS state (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID" });
  keyedTable(sql, {
    name: "finished_outbox",
    create: "CREATE TABLE IF NOT EXISTS finished_outbox (id TEXT PRIMARY KEY, optimizer INTEGER NOT NULL DEFAULT 1) WITHOUT ROWID",
  });
  const columns = new Set(sql.exec<{ name: string }>("SELECT name FROM pragma_table_info('requests')").toArray().map((c) => c.name));
  // What a request is (its params, plan and estimate), written once at its insert (a plan again when its
  // run changed it), apart from the row whose status changes: SQLite rewrites a whole row at each
  // update, so a status change rewrote the caller's params (kilobytes for a prompt) twice per dispatch.
  sql.exec("CREATE TABLE IF NOT EXISTS request_bodies (id TEXT PRIMARY KEY, params TEXT NOT NULL, plan TEXT, estimate_detail TEXT)");
  if (columns.has("params")) {
    // An object from before the split: its requests' bodies move over, and their columns go.
    const from = (column: string) => (columns.has(column) ? column : "NULL");
    sql.exec(`INSERT OR IGNORE INTO request_bodies (id, params, plan, estimate_detail) SELECT id, params, ${from("plan")}, ${from("estimate_detail")} FROM requests`);
    for (const column of ["params", "plan", "estimate_detail"]) {
      if (columns.has(column)) sql.exec(`ALTER TABLE requests DROP COLUMN ${column}`);
      columns.delete(column);
    }
  }
  if (!columns.has("actual_detail")) sql.exec("ALTER TABLE requests ADD COLUMN actual_detail TEXT");
  // For service levels: when the request could first run, and when it was first dispatched.
  for (const column of ["ready_at", "first_started_at"]) {
    if (!columns.has(column)) sql.exec(`ALTER TABLE requests ADD COLUMN ${column} INTEGER`);
  }
  // The hash of the spec an idempotency key was first used with; NULL for requests made before it.
  if (!columns.has("spec_hash")) sql.exec("ALTER TABLE requests ADD COLUMN spec_hash TEXT");
  // The trace id of the enqueue or execute that made the request: on its scheduler log lines and its jobs.
  if (!columns.has("trace_id")) sql.exec("ALTER TABLE requests ADD COLUMN trace_id TEXT");
  // 1: admitted against this shard's money lease and not converted yet (./money-leases.ts); NULL otherwise.
  if (!columns.has("money_lease")) sql.exec("ALTER TABLE requests ADD COLUMN money_lease INTEGER");
  sql.exec("CREATE INDEX IF NOT EXISTS requests_money_lease ON requests (id) WHERE money_lease IS NOT NULL");
  sql.exec("CREATE INDEX IF NOT EXISTS requests_finished ON requests (finished_at)");
  // Settlements owed: ended worker calls whose settlement failed, until one goes through (./owed.ts).
  sql.exec("CREATE TABLE IF NOT EXISTS settle_owed (id TEXT PRIMARY KEY, attempt INTEGER NOT NULL, outcome TEXT NOT NULL, failures INTEGER NOT NULL, next_at INTEGER NOT NULL)");
  // Launch records: one row per launched chunk, its requests' attempts (QueueStore.start); a request's
  // own row is written when its attempt ends. `seq`: the chunk's first dispatch sequence number.
  sql.exec("CREATE TABLE IF NOT EXISTS launches (seq INTEGER PRIMARY KEY, rows TEXT NOT NULL)");
  // End records: one row per settlement batch of requests completed the usual way, their ends (the
  // small columns first: a scan of them reads no overflow page), which record holds each request, and
  // the batch's request-log entries until delivered (./ends.ts). Their `requests` rows are not rewritten.
  sql.exec("CREATE TABLE IF NOT EXISTS ends (seq INTEGER PRIMARY KEY, finished_at INTEGER NOT NULL, last_dispatch INTEGER NOT NULL, size INTEGER NOT NULL, rows TEXT NOT NULL)");
  sql.exec("CREATE TABLE IF NOT EXISTS end_ids (id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID");
  sql.exec("CREATE TABLE IF NOT EXISTS end_logs (seq INTEGER PRIMARY KEY, log TEXT NOT NULL)");
  // The SLA check's window and a restart's read of the records go by when a record was written.
  sql.exec("CREATE INDEX IF NOT EXISTS ends_finished ON ends (finished_at)");
  // Clients whose objects may hold money lent to this shard (./money-leases.ts): a restart returns it.
  sql.exec("CREATE TABLE IF NOT EXISTS money_holders (client_id TEXT PRIMARY KEY) WITHOUT ROWID");
}
