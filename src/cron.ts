import { log } from "./log";
import { checkAlerts } from "./services/alerts";
import { reconcileInFlight } from "./services/budget";
import { poolConfigs } from "./storage/config";
import { samplePools } from "./services/pool-samples";
import { sampleQueues } from "./services/queue-samples";
import { poolStub } from "./objects/pool/stub";
import { runRetention } from "./services/retention";
import { passAll, retireEmptyShards } from "./services/scheduler";
import { sweepCache } from "./services/optimizer";
import { evaluateScaling } from "./services/scaling";

/**
 * The minute cron: the scheduler's backstop and housekeeping. It runs a dispatch pass (which also
 * returns expired leases to the queue) and delivers any usage a pool's alarm has not yet flushed.
 * Then it re-checks the alert conditions on the state the pass left, and samples every pool's level
 * and each queue's depth and dispatches for the dashboard's trends (at the scheduled minute, so a
 * repeated run adds nothing), and takes out of flight any estimate whose request is gone. Dynamic
 * pools' scaling policies are evaluated too. Last, records past their retention are pruned, a bounded
 * chunk per kind (services/retention.ts).
 */
export async function runCron(controller: ScheduledController, env: Env): Promise<void> {
  const traceId = `cron-${controller.scheduledTime}`;
  const pools = await poolConfigs(env);
  const [dispatched, ...flushes] = await Promise.allSettled([
    passAll(env, "cron"),
    ...[...pools.keys()].map((id) => poolStub(env, id).flush()),
  ]);
  const delivered = flushes.reduce((n, r) => n + (r.status === "fulfilled" ? r.value : 0), 0);
  const failed = flushes.filter((r) => r.status === "rejected").length;
  if (dispatched!.status === "rejected") log.error("cron_dispatch_failed", { trace_id: traceId, error: String(dispatched!.reason) });
  const [alerts, sampled, queuesSampled, reconciled, scaled, swept] = await Promise.all([
    checkAlerts(env, Date.now(), traceId).catch((err: unknown) => {
      log.error("cron_alerts_failed", { trace_id: traceId, error: String(err) });
      return null;
    }),
    samplePools(env, controller.scheduledTime).catch((err: unknown) => {
      log.error("cron_samples_failed", { trace_id: traceId, error: String(err) });
      return 0;
    }),
    sampleQueues(env, controller.scheduledTime).catch((err: unknown) => {
      log.error("cron_queue_samples_failed", { trace_id: traceId, error: String(err) });
      return 0;
    }),
    reconcileInFlight(env, Date.now()).catch((err: unknown) => {
      log.error("cron_reconcile_failed", { trace_id: traceId, error: String(err) });
      return 0;
    }),
    evaluateScaling(env, Date.now(), "cron", traceId).catch((err: unknown) => {
      log.error("cron_scaling_failed", { trace_id: traceId, error: String(err) });
      return [];
    }),
    sweepCache(env, Date.now()).catch((err: unknown) => {
      log.error("cron_cache_sweep_failed", { trace_id: traceId, error: String(err) });
      return 0;
    }),
  ]);
  await runRetention(env, controller.scheduledTime, traceId);
  // Shards left above a lowered SCHEDULER_SHARDS are forgotten once they hold nothing (services/scheduler.ts).
  await retireEmptyShards(env).catch((err: unknown) => log.error("cron_shard_retire_failed", { trace_id: traceId, error: String(err) }));
  log.info("cron_pass", {
    trace_id: traceId, cron: controller.cron, dispatched: dispatched!.status === "fulfilled" ? dispatched!.value : 0,
    pools: pools.size, usage_delivered: delivered, pools_failed: failed,
    alerts_raised: alerts?.raised.length ?? 0, alerts_resolved: alerts?.resolved ?? 0, pools_sampled: sampled, queues_sampled: queuesSampled, in_flight_dropped: reconciled,
    pools_scaled: scaled.filter((o) => o.event !== null).length, cache_entries_expired: swept,
  });
}
