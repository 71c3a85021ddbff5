import { keyedTable } from "../sqlite";

/** The pool object's tables (created idempotently) and the upgrades of objects made before them. */
export function createTables(sql: SqlStorage): void {
  sql.exec(`
    CREATE TABLE IF NOT EXISTS bucket (
      id INTEGER PRIMARY KEY CHECK (id = 1),
      level REAL NOT NULL,
      updated_at INTEGER NOT NULL,
      config TEXT NOT NULL,
      outbox_seq INTEGER NOT NULL DEFAULT 0
    );
    -- Usage events waiting for D1, in the order they happened: appended at the end of the table
    -- (seq is the rowid) and delivered and deleted from its start, so no index is written.
    -- A consume writes only its event: the bucket as it left it rides on the event's row (level,
    -- updated_at), and the bucket row is brought up to date when the outbox is delivered.
    CREATE TABLE IF NOT EXISTS usage_outbox (
      seq INTEGER PRIMARY KEY,
      payload TEXT NOT NULL,
      level REAL,
      updated_at INTEGER
    );
    CREATE TABLE IF NOT EXISTS idempotency (
      key TEXT PRIMARY KEY,
      fingerprint TEXT NOT NULL,
      response TEXT NOT NULL,
      created_at INTEGER NOT NULL
    );
    -- This storage's outbox epoch: clients' objects count deliveries per (pool, epoch) by seq, so
    -- storage that started over (a new epoch) cannot have its seqs taken for ones already counted.
    CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
  `);
  // Keyed tables (../sqlite.ts): a reservation per request is written and settled per chunk, the
  // denials counter once per call.
  keyedTable(sql, {
    name: "reservations",
    create: `CREATE TABLE IF NOT EXISTS reservations (
      id TEXT PRIMARY KEY,
      client_id TEXT NOT NULL,
      request_id TEXT,
      via TEXT NOT NULL,
      amount INTEGER NOT NULL,
      status TEXT NOT NULL,
      created_at INTEGER NOT NULL,
      expires_at INTEGER NOT NULL,
      settled_at INTEGER,
      consumed INTEGER,
      cost_nano INTEGER,
      event_id TEXT
    ) WITHOUT ROWID`,
    indexes: ["CREATE INDEX IF NOT EXISTS reservations_held ON reservations (status, expires_at)"],
  });
  keyedTable(sql, { name: "counters", create: "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID" });
}

/** Bring tables of objects made before the current layout up to it. */
export function migrate(sql: SqlStorage): void {
  migrateOutbox(sql);
  migrateSnapshots(sql);
  migrateReleaseAnswers(sql);
}

function hasColumn(sql: SqlStorage, table: string, column: string): boolean {
  return sql.exec("SELECT 1 FROM pragma_table_info(?) WHERE name = ?", table, column).toArray().length > 0;
}

/** Objects made before usage_outbox kept their outbox keyed by event id: move what waits there, in order. */
function migrateOutbox(sql: SqlStorage): void {
  if (sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outbox'").toArray().length === 0) return;
  sql.exec("INSERT INTO usage_outbox (payload) SELECT payload FROM outbox ORDER BY created_at, event_id");
  sql.exec("DROP TABLE outbox");
}

/**
 * Objects made before the outbox carried the bucket's level: add the columns (null: no level) and
 * the bucket row's mark of the last outbox row it supersedes.
 */
function migrateSnapshots(sql: SqlStorage): void {
  if (!hasColumn(sql, "usage_outbox", "level")) {
    sql.exec("ALTER TABLE usage_outbox ADD COLUMN level REAL");
    sql.exec("ALTER TABLE usage_outbox ADD COLUMN updated_at INTEGER");
  }
  if (!hasColumn(sql, "bucket", "outbox_seq")) sql.exec("ALTER TABLE bucket ADD COLUMN outbox_seq INTEGER NOT NULL DEFAULT 0");
}

/** Objects made before a release kept what it answered (its cost and usage event), so that a repeat of it is answered the same. */
function migrateReleaseAnswers(sql: SqlStorage): void {
  if (hasColumn(sql, "reservations", "cost_nano")) return;
  sql.exec("ALTER TABLE reservations ADD COLUMN cost_nano INTEGER");
  sql.exec("ALTER TABLE reservations ADD COLUMN event_id TEXT");
}
