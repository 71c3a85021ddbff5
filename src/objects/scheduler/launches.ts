/**
 * Launch records (the shard's `launches` table; decision 007): a launched chunk is one row naming each
 * request's attempt, not an update of each request's row. A request's row gets its attempt (attempts,
 * start, first start, dispatch sequence) when the attempt ends (QueueStore.finishAll, requeue, cancel),
 * and a record goes in the same write as the end of the last of its attempts. After a restart the
 * records say which requests were running: an attempt its row does not count yet.
 */

/** A launched request's attempt: id, dispatch seq, attempts (this one included), started, first started, reservations, lease end. */
export type LaunchEntry = [id: string, seq: number, attempts: number, startedAt: number, firstStartedAt: number | null, reservations: string | null, leaseUntil: number | null];

import type { Row } from "./rows";

export class Launches {
  /** The record (by its first seq) of each running request, and how many of each record's attempts have not ended. */
  private readonly of = new Map<string, number>();
  private readonly left = new Map<number, number>();

  constructor(private readonly sql: SqlStorage) {}

  /** The attempts the records name, read once at a restart (begin), until prune. */
  private found = new Map<string, { launch: number; entry: LaunchEntry }>();

  /** At a restart: read the records; returns the highest dispatch seq they name (0: none). */
  begin(): number {
    this.of.clear();
    this.left.clear();
    this.found = new Map();
    let seq = 0;
    for (const r of this.sql.exec<{ seq: number; rows: string }>("SELECT seq, rows FROM launches")) {
      for (const entry of JSON.parse(r.rows) as LaunchEntry[]) {
        this.found.set(entry[0], { launch: r.seq, entry });
        seq = Math.max(seq, entry[1]);
      }
    }
    return seq;
  }

  /**
   * At a restart, for each unfinished row read: an attempt a record names that its row does not count yet
   * is the one that was running (a row that counts it ended it), and the row in memory says so.
   */
  resume(row: Row): void {
    const l = this.found.get(row.id);
    if (!l || l.entry[2] <= row.attempts) return;
    const [, seq, attempts, startedAt, firstStartedAt, reservations, leaseUntil] = l.entry;
    Object.assign(row, { status: "running", dispatch_seq: seq, attempts, started_at: startedAt, first_started_at: firstStartedAt, reservations, lease_until: leaseUntil });
    this.of.set(row.id, l.launch);
    this.left.set(l.launch, (this.left.get(l.launch) ?? 0) + 1);
  }

  /** After a restart's resume calls: records none of whose attempts runs go. */
  prune(): void {
    this.found = new Map();
    this.sql.exec("DELETE FROM launches WHERE seq NOT IN (SELECT value FROM json_each(?))", JSON.stringify([...this.left.keys()]));
  }

  /** Write a chunk's record (`launch`: its first seq). */
  record(launch: number, entries: LaunchEntry[]): void {
    for (const e of entries) this.of.set(e[0], launch);
    this.left.set(launch, entries.length);
    this.sql.exec("INSERT INTO launches (seq, rows) VALUES (?, ?)", launch, JSON.stringify(entries));
  }

  /** These requests' attempts ended (their rows now count them): a record none of whose attempts runs goes, in the same write. */
  ended(ids: Iterable<string>): void {
    let done: number[] | null = null;
    for (const id of ids) {
      const launch = this.of.get(id);
      if (launch === undefined) continue;
      this.of.delete(id);
      const left = (this.left.get(launch) ?? 1) - 1;
      if (left > 0) this.left.set(launch, left);
      else {
        this.left.delete(launch);
        (done ??= []).push(launch);
      }
    }
    if (done) this.sql.exec("DELETE FROM launches WHERE seq IN (SELECT value FROM json_each(?))", JSON.stringify(done));
  }
}
