/**
 * The objects' SQLite layout, shared.
 *
 * A table keyed by text that rows come and go from on the hot path (a chunk's slots, reservations and
 * money in flight, a request's outbox entry, a counted event) is `WITHOUT ROWID`. A rowid table with a
 * TEXT PRIMARY KEY is two b-trees: the rows by rowid, and the key's automatic index. So each insert
 * wrote two rows, by the runtime's own count (`rowsWritten`: 20 for 10 inserts, 10 for the same into a
 * `WITHOUT ROWID` table, which is one b-tree ordered by its key), and rows written are what Durable
 * Object storage bills: a dispatched request writes five rows fewer (its slot, money in flight,
 * reservation, outbox entry and counted event). The queue benchmark's drain did not measurably change
 * (interleaved runs, docs/benchmarks.md). Rows stay small in these tables, as `WITHOUT ROWID` wants;
 * `requests` (large rows, updated in place) stays a rowid table.
 */

/** The `CREATE TABLE IF NOT EXISTS` of a `WITHOUT ROWID` table, and the indexes to make on it. */
export interface KeyedTable {
  name: string;
  /** The whole CREATE TABLE IF NOT EXISTS statement, ending in WITHOUT ROWID. */
  create: string;
  indexes?: string[];
}

/** Create a keyed table (and its indexes) if missing; one made as a rowid table by an earlier version is rebuilt. */
export function keyedTable(sql: SqlStorage, table: KeyedTable): void {
  rebuildWithoutRowid(sql, table);
  sql.exec(table.create);
  for (const index of table.indexes ?? []) sql.exec(index);
}

/** A table's CREATE statement as stored, if the table exists. */
export function storedTable(sql: SqlStorage, name: string): string | undefined {
  return sql.exec<{ sql: string }>("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", name).toArray()[0]?.sql;
}

/** Whether the table exists as a rowid table (made before keyed tables, or never one). */
export function isRowidTable(sql: SqlStorage, name: string): boolean {
  const stored = storedTable(sql, name);
  return stored !== undefined && !/WITHOUT\s+ROWID/i.test(stored);
}

/**
 * An object made by an earlier version has the table as a rowid table: rebuild it as `WITHOUT ROWID`
 * with the same rows, once. The old table is renamed `<name>_rowid`, the new one made, the rows copied
 * (columns of the new layout the old one lacks take their defaults), the old one dropped: a start that
 * finds `<name>_rowid` (an earlier rebuild stopped part-way) finishes that copy, keeping rows already
 * copied. Returns whether it rebuilt.
 */
export function rebuildWithoutRowid(sql: SqlStorage, table: KeyedTable): boolean {
  const old = `${table.name}_rowid`;
  if (storedTable(sql, old) === undefined) {
    if (!isRowidTable(sql, table.name)) return false;
    sql.exec(`ALTER TABLE ${table.name} RENAME TO ${old}`);
  }
  sql.exec(table.create);
  const columns = (name: string) => sql.exec<{ name: string }>("SELECT name FROM pragma_table_info(?)", name).toArray().map((c) => c.name);
  const kept = new Set(columns(old));
  const shared = columns(table.name).filter((c) => kept.has(c)).join(", ");
  sql.exec(`INSERT OR IGNORE INTO ${table.name} (${shared}) SELECT ${shared} FROM ${old}`);
  // Its indexes go with it; the caller makes them again on the new table.
  sql.exec(`DROP TABLE ${old}`);
  return true;
}
