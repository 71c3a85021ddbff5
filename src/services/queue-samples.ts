import { insertQueueSamples } from "../storage/queue-samples";
import { queueStatus } from "./scheduler";

/**
 * Read every queue's depth and recent dispatches from the scheduler and record them as one sample per
 * queue at `at` (the cron's scheduled minute), for the dashboard's trends. Answers how many were recorded.
 */
export async function sampleQueues(env: Env, at: number): Promise<number> {
  const { queues } = await queueStatus(env);
  await insertQueueSamples(env.DB, queues.map((q) => ({
    queue: q.queue, depth: q.depth, ready: q.ready,
    // The scheduler reports dispatches over its trailing minute as a rate rounded to 0.01/s: times 60
    // that is within 0.3 of the count, so rounding gives the count back exactly.
    dispatched: Math.round(q.dispatch_rate_per_s * 60),
  })), at);
  return queues.length;
}
