/**
 * Retention of a shard's finished requests: the rows written at their end (failed, cancelled, coalesced,
 * optimizer-touched; `finished_at` indexed) and the end records with the requests they hold (./ends.ts),
 * each with its body, once its request-log entry has reached D1 (reports read D1).
 */
import { log } from "../../log";
import type { Ends } from "./ends";

/**
 * Forget about `limit` requests finished before `cutoff` whose request-log entry has reached D1. The
 * retention run calls it each cron minute with the "requests" setting. Returns how many went.
 */
export function purgeFinished(sql: SqlStorage, ends: Ends, cutoff: number, limit: number): number {
  // Counted by RETURNING: rowsWritten would include index writes.
  const ids = sql.exec<{ id: string }>(
    `DELETE FROM requests WHERE id IN (
       SELECT id FROM requests WHERE finished_at < ? AND id NOT IN (SELECT id FROM finished_outbox) ORDER BY finished_at LIMIT ?) RETURNING id`,
    cutoff, limit,
  ).toArray().map((r) => r.id);
  if (ids.length) sql.exec("DELETE FROM request_bodies WHERE id IN (SELECT value FROM json_each(?))", JSON.stringify(ids));
  // And those an end record holds, with their records.
  const purged = ids.length + (ids.length < limit ? ends.purge(cutoff, limit - ids.length) : 0);
  if (purged) log.info("requests_purged", { count: purged });
  return purged;
}
