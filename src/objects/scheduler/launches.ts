/**
 * Launch records (the shard's `launches` table; decision 007): a launched chunk is one row naming each
 * request's attempt, not an update of each request's row. A request's row gets its attempt (attempts,
 * start, first start, dispatch sequence) when the attempt ends (QueueStore.finishAll, requeue, cancel),
 * and a record goes in the same write as the end of the last of its attempts. After a restart the
 * records say which requests were running: an attempt its row does not count yet.
 */

/** A launched request's attempt: id, dispatch seq, attempts (this one included), started, first started, reservations, lease end. */
export type LaunchEntry = [id: string, seq: number, attempts: number, startedAt: number, firstStartedAt: number | null, reservations: string | null, leaseUntil: number | null];

export class Launches {
  /** The record (by its first seq) of each running request, and how many of each record's attempts have not ended. */
  private readonly of = new Map<string, number>();
  private readonly left = new Map<number, number>();

  constructor(private readonly sql: SqlStorage) {}

  /** Every attempt the records name, by request id, and the highest dispatch seq among them (0: none). */
  read(): { entries: Map<string, { launch: number; entry: LaunchEntry }>; seq: number } {
    this.of.clear();
    this.left.clear();
    const entries = new Map<string, { launch: number; entry: LaunchEntry }>();
    let seq = 0;
    for (const r of this.sql.exec<{ seq: number; rows: string }>("SELECT seq, rows FROM launches")) {
      for (const entry of JSON.parse(r.rows) as LaunchEntry[]) {
        entries.set(entry[0], { launch: r.seq, entry });
        seq = Math.max(seq, entry[1]);
      }
    }
    return { entries, seq };
  }

  /** After a restart: this request's attempt of record `launch` is running. */
  adopt(id: string, launch: number): void {
    this.of.set(id, launch);
    this.left.set(launch, (this.left.get(launch) ?? 0) + 1);
  }

  /** After a restart's adopt calls: records none of whose attempts runs go. */
  prune(): void {
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
