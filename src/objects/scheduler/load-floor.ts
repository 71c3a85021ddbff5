/**
 * The load floor: what a shard's restart reads. Every request created before the floor had ended when
 * the floor was saved, so a restart reads only the rows created from it on, through the
 * `requests_client_created` index, one range per client: its cost follows the live window (the oldest
 * unfinished request), not the retention (35 days of finished rows by default). The last dispatch
 * number given when the floor was saved is saved with it (`seq`): the rows and records that ended
 * before it need no scan for theirs.
 *
 * The floor is the oldest live request's creation time (or now, with none live) less MARGIN_MS, saved
 * at most every SAVE_EVERY_MS from the copies in memory (QueueStore.live holds every unfinished
 * request, written or not). A request only ever ends once (nothing returns a finished request to its
 * queue), so a floor saved stays true: the rows below it stay ended.
 */
import type { Ends, RowWithEnd } from "./ends";
import type { Row } from "./rows";

/** At most this often: one walk of the copies in memory and one small write. */
const SAVE_EVERY_MS = 30_000;
/**
 * Below the oldest live creation time: a request's `created_at` is the shard's clock, and a restarted
 * object may run on another machine's clock, a little behind.
 */
export const MARGIN_MS = 10_000;
/** The `state` key the floor is saved under (QueueStore.writeState). */
export const FLOOR_KEY = "load_floor";

/**
 * The shard's distinct client ids, walked through `requests_client_created` (one index probe per client,
 * not a scan), as the table `c`: `r.client_id IN (SELECT id FROM c)` makes one range per client.
 */
const CLIENT_IDS = `WITH RECURSIVE c(id) AS (
  SELECT MIN(client_id) FROM requests
  UNION ALL SELECT (SELECT MIN(client_id) FROM requests WHERE client_id > c.id) FROM c WHERE c.id IS NOT NULL)`;
/**
 * The rows created at or after `?` (bound first), with CLIENT_IDS before the query: their rowids from
 * the index (one range per client), then the rows in rowid order (client by client, each row was a
 * random page: ~3x slower at 10,000 live rows, measured with SQLite 3.40).
 */
const CREATED_SINCE = "r.rowid IN (SELECT rowid FROM requests WHERE client_id IN (SELECT id FROM c) AND created_at >= ?)";

export interface Floor {
  /** Rows created before this had ended when it was saved (0: no floor saved, read every row). */
  createdAt: number;
  /** The last dispatch number given when it was saved. */
  seq: number;
}

/** The floor as saved (`state` FLOOR_KEY's value): none yet reads every row. */
export function floorFrom(saved: string | undefined): Floor {
  if (saved === undefined) return { createdAt: 0, seq: 0 };
  const floor = JSON.parse(saved) as Floor;
  return { createdAt: floor.createdAt, seq: floor.seq };
}

export class LoadFloor {
  private savedAt = 0;

  constructor(private readonly sql: SqlStorage) {}

  /**
   * The last dispatch number given before the object started, after its live rows were read (`live`):
   * the floor's, or a higher one that a live row (back in its queue after an attempt), a row written at
   * its end or an end record finished from the floor on holds. (The attempts launched and not ended
   * hold their own: Launches.begin.) Each was given after the floor was saved, so it ended after it.
   */
  lastSeq(floor: Floor, ends: Ends, live: Iterable<Row>): number {
    let seq = Math.max(floor.seq, ends.load(floor.createdAt));
    const written = this.sql.exec<{ n: number | null }>("SELECT MAX(dispatch_seq) AS n FROM requests WHERE finished_at >= ?", floor.createdAt).one().n;
    seq = Math.max(seq, written ?? 0);
    for (const row of live) seq = Math.max(seq, row.dispatch_seq ?? 0);
    return seq;
  }

  /**
   * The rows a restart loads (`select`: the store's row query, with END_JOIN): created from the floor on,
   * unfinished, and held by no end record (a row an end record names has ended, whatever it says: its
   * row is not rewritten, ./ends.ts). In the order they were written, as a read of the whole table had them.
   */
  liveRows(floor: Floor, select: string): Iterable<RowWithEnd> {
    return this.sql.exec<RowWithEnd>(
      `${CLIENT_IDS} ${select} WHERE ${CREATED_SINCE} AND r.status IN ('queued', 'dispatching', 'running') AND e.seq IS NULL ORDER BY r.rowid`, floor.createdAt,
    );
  }

  /** The floor to save for the live copies and the last dispatch number, as text; null when one was within SAVE_EVERY_MS. */
  next(live: Iterable<Row>, seq: number, now: number): string | null {
    if (now - this.savedAt < SAVE_EVERY_MS) return null;
    this.savedAt = now;
    let oldest = now;
    for (const row of live) if (row.created_at < oldest) oldest = row.created_at;
    const floor: Floor = { createdAt: oldest - MARGIN_MS, seq };
    return JSON.stringify(floor);
  }
}
