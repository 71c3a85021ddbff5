/**
 * What reports read of a shard's requests (a client's counts and active work, the rows an SLA summary
 * judges): exact from the store's copies in memory for unfinished requests, from SQLite (rows and end
 * records, ./ends.ts) for finished ones. Reads only: the store stays the one writer.
 */
import type { QueueName } from "../../domain/priority";
import type { Tier } from "../../domain/types";
import type { Row } from "./rows";
import type { QueueStore } from "./store";

/** How many of a client's requests created at or after `since` are in each status. */
export function countsFor(store: QueueStore, clientId: string, since: number): Record<string, number> {
  // Unfinished ones from memory (a claim is not written: its row still says queued), those an end record
  // holds from it (their rows still say queued too), the rest from SQLite.
  const rows = store.sql.exec<{ status: string; n: number }>(
    "SELECT status, COUNT(*) AS n FROM requests WHERE client_id = ? AND created_at >= ? AND status NOT IN ('queued', 'dispatching', 'running') GROUP BY status",
    clientId, since,
  ).toArray();
  const counts: Record<string, number> = Object.fromEntries(rows.map((r) => [r.status, r.n]));
  for (const row of store.live.values()) {
    if (row.client_id === clientId && row.created_at >= since) counts[row.status] = (counts[row.status] ?? 0) + 1;
  }
  const ended = store.ends.completedFor(clientId, since);
  if (ended) counts.completed = (counts.completed ?? 0) + ended;
  return counts;
}

/** A client's unfinished requests: queued, and dispatching or running. */
export function activeFor(store: QueueStore, clientId: string): { queued: number; running: number } {
  let queued = 0;
  let running = 0;
  for (const row of store.live.values()) {
    if (row.client_id !== clientId) continue;
    if (row.status === "queued") queued += 1;
    else running += 1;
  }
  return { queued, running };
}

/** Requests decided or still open in a window (see Health.slaSummary), optionally for one client, tier or queue. */
export function slaRows(store: QueueStore, from: number, to: number, filter: { clientId?: string; tier?: Tier; queue?: QueueName }): Row[] {
  // The unfinished ones are exactly the copies in memory (a running one's row does not say it started:
  // its launch record does); the finished ones from SQLite (./ends.ts: rows and end records).
  const open = [...store.live.values()].filter((r) => r.created_at <= to && (filter.clientId === undefined || r.client_id === filter.clientId)
    && (filter.tier === undefined || r.tier === filter.tier) && (filter.queue === undefined || r.queue === filter.queue));
  return [...store.ends.slaRows(from, to, filter), ...open.map((r) => ({ ...r }))];
}
