import { log } from "../log";
import { poolConfigs } from "../services/config";
import { poolStub } from "../services/pools";

/**
 * The minute cron: housekeeping backstop. Pool objects flush their own usage outboxes by alarm; this
 * delivers anything an alarm has not (for instance after repeated D1 failures).
 */
export async function runCron(controller: ScheduledController, env: Env): Promise<void> {
  const traceId = `cron-${controller.scheduledTime}`;
  const pools = await poolConfigs(env);
  const results = await Promise.allSettled([...pools.keys()].map((id) => poolStub(env, id).flush()));
  const delivered = results.reduce((n, r) => n + (r.status === "fulfilled" ? r.value : 0), 0);
  const failed = results.filter((r) => r.status === "rejected").length;
  log.info("cron_pass", { trace_id: traceId, cron: controller.cron, pools: pools.size, usage_delivered: delivered, pools_failed: failed });
}
