import { log } from "../log";
import { poolConfigs } from "../services/config";
import { poolStub } from "../services/pools";
import { schedulerStub } from "../services/requests";

/**
 * The minute cron: the scheduler's backstop and housekeeping. It runs a dispatch pass (which also
 * returns expired leases to the queue) and delivers any usage a pool's alarm has not yet flushed.
 */
export async function runCron(controller: ScheduledController, env: Env): Promise<void> {
  const traceId = `cron-${controller.scheduledTime}`;
  const pools = await poolConfigs(env);
  const [dispatched, ...flushes] = await Promise.allSettled([
    schedulerStub(env).pass("cron"),
    ...[...pools.keys()].map((id) => poolStub(env, id).flush()),
  ]);
  const delivered = flushes.reduce((n, r) => n + (r.status === "fulfilled" ? r.value : 0), 0);
  const failed = flushes.filter((r) => r.status === "rejected").length;
  if (dispatched!.status === "rejected") log.error("cron_dispatch_failed", { trace_id: traceId, error: String(dispatched!.reason) });
  log.info("cron_pass", {
    trace_id: traceId, cron: controller.cron, dispatched: dispatched!.status === "fulfilled" ? dispatched!.value : 0,
    pools: pools.size, usage_delivered: delivered, pools_failed: failed,
  });
}
