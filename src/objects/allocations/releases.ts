import { appendTo } from "../../domain/groups";
import { log } from "../../log";
import { live, type AllocationRows } from "./rows";

/** A release that could not reach a client's object is retried by alarm after this long. */
export const RELEASE_RETRY_MS = 10_000;

/** What the releases need of the object that hosts them. */
export interface ReleaseHost {
  /** The client's object, where its holds are freed. */
  clientStub(clientId: string): { releaseJobs(jobIds: string[]): Promise<number> };
  /** Be woken no later than `at` (a retry of releases that could not reach their client). */
  ensureAlarm(at: number): void;
}

/**
 * How allocations end: released (with their subtree), failed, expired by TTL. Each end frees the
 * client's hold in its client's object; a release that cannot reach it stays releasing (still counted)
 * and the alarm tries again, so no hold leaks and no capacity is freed before its hold is.
 */
export class Releases {
  constructor(
    private readonly sql: SqlStorage,
    private readonly rows: AllocationRows,
    private readonly host: ReleaseHost,
  ) {}

  /** A pending allocation the client's quota refused: failed, holding nothing; its subtree (if any came meanwhile) is released. */
  async fail(id: string, reason: string): Promise<void> {
    const done = this.sql.exec(
      "UPDATE allocations SET state = 'failed', reason = ?1, released_at = ?2, updated_at = ?2 WHERE id = ?3 AND state = 'pending'",
      reason, Date.now(), id,
    ).rowsWritten;
    if (!done) return;
    const children = this.rows.liveDescendants([id]);
    this.begin(children, "parent failed");
    await this.finish(children);
  }

  /** Expire every live allocation whose TTL has elapsed, exactly once each; release their subtrees. Returns how many expired. */
  async expireDue(now: number): Promise<number> {
    const due = this.sql.exec<{ id: string; client_id: string }>(
      `SELECT id, client_id FROM allocations WHERE ${live} AND expires_at <= ?`, now,
    ).toArray();
    if (!due.length) return 0;
    this.sql.exec(
      `UPDATE allocations SET state = 'expired', reason = 'ttl elapsed', released_at = ?1, updated_at = ?1
       WHERE id IN (SELECT value FROM json_each(?2)) AND ${live}`,
      now, JSON.stringify(due.map((r) => r.id)),
    );
    const children = this.rows.liveDescendants(due.map((r) => r.id));
    this.begin(children, "parent expired");
    log.info("allocations_expired", { count: due.length, subtree: children.length });
    await Promise.all([...groupByClient(due)].map(([clientId, ids]) => this.giveBackHolds(clientId, ids)));
    await this.finish(children);
    return due.length;
  }

  /** Releases left in releasing since `before` or earlier (a client's object could not be reached): try again. */
  async retry(before: number): Promise<void> {
    const stuck = this.sql.exec<{ id: string }>("SELECT id FROM allocations WHERE state = 'releasing' AND updated_at <= ?", before).toArray();
    if (stuck.length) await this.finish(stuck.map((r) => r.id));
  }

  /** Pending or active → releasing, with the reason (synchronous: from here they are no longer live). */
  begin(ids: string[], reason: string): void {
    if (!ids.length) return;
    this.sql.exec(
      `UPDATE allocations SET state = 'releasing', reason = ?1, updated_at = ?2 WHERE id IN (SELECT value FROM json_each(?3)) AND ${live}`,
      reason, Date.now(), JSON.stringify(ids),
    );
  }

  /**
   * Free the clients' holds of these releasing allocations, then mark them released. Those whose
   * client could not be reached stay releasing (still counted) and the alarm tries again.
   */
  async finish(ids: string[]): Promise<void> {
    if (!ids.length) return;
    const rows = this.sql.exec<{ id: string; client_id: string }>(
      "SELECT id, client_id FROM allocations WHERE id IN (SELECT value FROM json_each(?)) AND state = 'releasing'", JSON.stringify(ids),
    ).toArray();
    const freed = await Promise.all([...groupByClient(rows)].map(async ([clientId, clientIds]) => ((await this.giveBackHolds(clientId, clientIds)) ? clientIds : [])));
    this.sql.exec(
      "UPDATE allocations SET state = 'released', released_at = ?1, updated_at = ?1 WHERE id IN (SELECT value FROM json_each(?2)) AND state = 'releasing'",
      Date.now(), JSON.stringify(freed.flat()),
    );
    if (freed.flat().length < rows.length) this.host.ensureAlarm(Date.now() + RELEASE_RETRY_MS);
  }

  /** Free these allocations' holds in their client's object; false when it could not be reached. */
  async giveBackHolds(clientId: string, ids: string[]): Promise<boolean> {
    try {
      await this.host.clientStub(clientId).releaseJobs(ids);
      return true;
    } catch (err) {
      log.warn("allocation_hold_release_failed", { client_id: clientId, count: ids.length, error: String(err) });
      return false;
    }
  }
}

/** Allocation ids by client. */
function groupByClient(rows: Array<{ id: string; client_id: string }>): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  for (const r of rows) appendTo(groups, r.client_id, r.id);
  return groups;
}
