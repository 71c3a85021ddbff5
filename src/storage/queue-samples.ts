import type { QueueName } from "../domain/priority";

/** `queue_samples` in D1 (migration 0005): each queue's depth and dispatches once a minute (the cron), for the dashboard's trends. */
export interface QueueSample {
  queue: QueueName;
  at: number;
  depth: number;
  ready: number;
  /** Requests dispatched from the queue in the minute before `at`. */
  dispatched: number;
}

/** Record one sample per queue. A cron run repeated for the same minute (`at` is its scheduled time) adds nothing. */
export async function insertQueueSamples(db: D1Database, samples: Omit<QueueSample, "at">[], at: number): Promise<void> {
  if (samples.length === 0) return;
  const rows = JSON.stringify(samples.map((s) => ({ q: s.queue, d: s.depth, r: s.ready, n: s.dispatched })));
  await db
    .prepare(
      `INSERT INTO queue_samples (queue, at, depth, ready, dispatched)
       SELECT j.value ->> '$.q', ?2, j.value ->> '$.d', j.value ->> '$.r', j.value ->> '$.n' FROM json_each(?1) j WHERE true
       ON CONFLICT (queue, at) DO NOTHING`,
    )
    .bind(rows, at)
    .run();
}

/** Every queue's samples in [from, to], by queue and time (read by the index on `at`). */
export async function queueSamplesBetween(db: D1Database, from: number, to: number): Promise<QueueSample[]> {
  const { results } = await db
    .prepare("SELECT queue, at, depth, ready, dispatched FROM queue_samples WHERE at >= ?1 AND at <= ?2 ORDER BY queue, at")
    .bind(from, to)
    .all<QueueSample>();
  return results;
}
