/**
 * End records (the shard's `ends`, `end_ids` and `end_logs` tables; decision 007): a settlement batch of
 * requests completed the usual way is one row naming each request's end (`ends`), a narrow index of
 * which row holds which request (`end_ids`), and one row of their request-log entries until D1 has them
 * (`end_logs`, delivered by Outbox). Their `requests` rows are not rewritten: a row that `end_ids` names
 * is read with its end (`overlay`), and it goes with its record when retention purges it.
 *
 * Why: rewriting a finished request's row was the largest part of a drain's settlement (~25 us a row
 * under workerd: a random page each, a wide row, its `finished_at` index; docs/benchmarks.md), and its
 * outbox entry another insert per request. An end record is an append, and `end_ids` a narrow insert.
 * Writing the rows later, many at once, was tried: it cost as much per row as writing them at the end.
 */
import { REQUEST_LOG_COLUMNS } from "../../storage/request-log";
import type { Row } from "./rows";

/** A completed request's end: id, result, actual cost, its detail, attempts, started, first started, dispatch seq. */
export type EndEntry = [
  id: string, result: string | null, actual: number | null, actualDetail: string | null, attempts: number | null,
  startedAt: number | null, firstStartedAt: number | null, dispatchSeq: number | null,
];

/** Requests whose row `end_ids` names, with its record (`end_seq`): FULL_ROW's join. */
export const END_JOIN = "LEFT JOIN end_ids e ON e.id = r.id";

/** A request row as read with END_JOIN: `end_seq` set when its end is in an end record. */
export type RowWithEnd = Row & { end_seq?: number | null };

export class Ends {
  private seq = 0;

  constructor(private readonly sql: SqlStorage) {}

  /**
   * When the object starts: the last record's seq, and the highest dispatch seq the records finished from
   * `since` on name (0: none). Those before it name none above the load floor's (./load-floor.ts).
   */
  load(since: number): number {
    this.seq = this.sql.exec<{ seq: number | null }>("SELECT MAX(seq) AS seq FROM ends").one().seq ?? 0;
    return this.sql.exec<{ n: number | null }>("SELECT MAX(last_dispatch) AS n FROM ends WHERE finished_at >= ?", since).one().n ?? 0;
  }

  /**
   * Record completed requests' ends, finished at `now` (`entries`), and their request-log entries (from
   * `rows`, their copies saying how they ended): three inserts, one of them a row per request in `end_ids`.
   */
  record(entries: EndEntry[], rows: Row[], now: number): void {
    if (entries.length === 0) return;
    this.seq += 1;
    const last = entries.reduce((m, e) => Math.max(m, e[7] ?? 0), 0);
    this.sql.exec("INSERT INTO ends (seq, finished_at, last_dispatch, size, rows) VALUES (?, ?, ?, ?, ?)", this.seq, now, last, entries.length, JSON.stringify(entries));
    this.sql.exec("INSERT INTO end_ids (id, seq) SELECT value, ? FROM json_each(?) WHERE true", this.seq, JSON.stringify(entries.map((e) => e[0])));
    this.sql.exec("INSERT INTO end_logs (seq, log) VALUES (?, ?)", this.seq, JSON.stringify(rows.map((r) => REQUEST_LOG_COLUMNS.map((c) => r[c]))));
  }

  /** Rows read with END_JOIN, with their ends (and without END_JOIN's column): each record they need parsed once. */
  overlay(rows: RowWithEnd[]): Row[] {
    const seqs = [...new Set(rows.filter((r) => r.end_seq != null).map((r) => r.end_seq!))];
    if (seqs.length === 0) return rows.map(withoutEnd);
    const found = new Map<string, { entry: EndEntry; finishedAt: number }>();
    for (const rec of this.sql.exec<{ finished_at: number; rows: string }>("SELECT finished_at, rows FROM ends WHERE seq IN (SELECT value FROM json_each(?))", JSON.stringify(seqs))) {
      for (const entry of JSON.parse(rec.rows) as EndEntry[]) found.set(entry[0], { entry, finishedAt: rec.finished_at });
    }
    return rows.map((row) => {
      const end = row.end_seq != null ? found.get(row.id) : undefined;
      if (!end) return withoutEnd(row);
      const [, result, actual, actualDetail, attempts, startedAt, firstStartedAt, dispatchSeq] = end.entry;
      Object.assign(row, {
        status: "completed", result, actual_nano: actual, actual_detail: actualDetail, attempts: attempts ?? row.attempts, started_at: startedAt,
        first_started_at: firstStartedAt, dispatch_seq: dispatchSeq, error: null, finished_at: end.finishedAt, updated_at: end.finishedAt, lease_until: null,
      });
      return withoutEnd(row);
    });
  }

  /** How many of a client's requests created at or after `since` have their end in a record (all completed). */
  completedFor(clientId: string, since: number): number {
    return this.sql.exec<{ n: number }>(
      "SELECT COUNT(*) AS n FROM requests r JOIN end_ids e ON e.id = r.id WHERE r.client_id = ? AND r.created_at >= ?", clientId, since,
    ).one().n;
  }

  /**
   * Requests finished in a window (QueueStore.slaRows adds the unfinished ones, from memory): those written
   * into their rows by `finished_at`, those an end record holds from the window's records (each entry
   * looked up by id: a join of the rows against the entries scanned the entries once per row). A row an
   * end record holds has no `finished_at`: a read of every such row would grow with retention.
   */
  slaRows(from: number, to: number, filter: { clientId?: string; tier?: string; queue?: string }): Row[] {
    const match = "r.created_at <= ?2 AND (?3 IS NULL OR r.client_id = ?3) AND (?4 IS NULL OR r.tier = ?4) AND (?5 IS NULL OR r.queue = ?5)";
    return this.sql.exec<Row>(
      `SELECT r.id, r.client_id, r.tier, r.queue, r.status, r.created_at, r.ready_at, r.first_started_at, r.finished_at
       FROM requests r WHERE r.finished_at >= ?1 AND ${match}
       UNION ALL
       SELECT r.id, r.client_id, r.tier, r.queue, 'completed', r.created_at, r.ready_at, x.value ->> 6, en.finished_at
       FROM ends en, json_each(en.rows) AS x JOIN requests r ON r.id = x.value ->> 0 WHERE en.finished_at >= ?1 AND ${match}`,
      from, to, filter.clientId ?? null, filter.tier ?? null, filter.queue ?? null,
    ).toArray();
  }

  /**
   * The oldest request-log entries not delivered (whole records, about `limit` rows), as one JSON array,
   * and the records they came from; null when none waits.
   */
  undelivered(limit: number): { log: string; seqs: number[] } | null {
    const logs: string[] = [];
    const seqs: number[] = [];
    let count = 0;
    for (const r of this.sql.exec<{ seq: number; log: string; n: number }>("SELECT seq, log, json_array_length(log) AS n FROM end_logs ORDER BY seq")) {
      if (count > 0 && count + r.n > limit) break;
      logs.push(r.log.slice(1, -1));
      seqs.push(r.seq);
      count += r.n;
    }
    return seqs.length ? { log: `[${logs.join(",")}]`, seqs } : null;
  }

  /** These records' request-log entries reached D1. */
  delivered(seqs: number[]): void {
    this.sql.exec("DELETE FROM end_logs WHERE seq IN (SELECT value FROM json_each(?))", JSON.stringify(seqs));
  }

  /**
   * Forget the oldest records finished before `cutoff` whose request-log entries reached D1, with their
   * requests, up to about `limit` requests (whole records); returns how many requests went.
   */
  purge(cutoff: number, limit: number): number {
    const seqs: number[] = [];
    let count = 0;
    for (const r of this.sql.exec<{ seq: number; n: number }>(
      "SELECT seq, size AS n FROM ends WHERE finished_at < ? AND seq NOT IN (SELECT seq FROM end_logs) ORDER BY seq", cutoff,
    )) {
      if (count > 0 && count + r.n > limit) break;
      seqs.push(r.seq);
      count += r.n;
    }
    if (seqs.length === 0) return 0;
    // The records' ids from the records themselves (end_ids is keyed by id alone).
    const list = JSON.stringify(seqs);
    const ids = JSON.stringify(this.sql.exec<{ id: string }>(
      "SELECT x.value ->> 0 AS id FROM ends, json_each(ends.rows) AS x WHERE ends.seq IN (SELECT value FROM json_each(?))", list,
    ).toArray().map((r) => r.id));
    for (const table of ["request_bodies", "requests", "end_ids"]) this.sql.exec(`DELETE FROM ${table} WHERE id IN (SELECT value FROM json_each(?))`, ids);
    this.sql.exec("DELETE FROM ends WHERE seq IN (SELECT value FROM json_each(?))", list);
    return count;
  }
}

/** A row as stored, without END_JOIN's column. */
export function withoutEnd(row: RowWithEnd): Row {
  delete row.end_seq;
  return row;
}
