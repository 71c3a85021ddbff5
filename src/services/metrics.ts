import { ALERT_KINDS } from "../domain/alerts";
import { STRATEGIES } from "../domain/optimizer";
import { savingsTotals } from "../storage/optimizer";
import { resolveBudget } from "../domain/budget";
import { monthKey } from "../domain/calendar";
import { latencySnapshots } from "./latency";
import type { Family } from "../domain/prometheus";
import { metricsRows } from "../storage/metrics";
import { callDurations, callOutcomes } from "./call-metrics";
import type { DispatchCounters } from "../objects/scheduler/types";
import { poolConfigs } from "../storage/config";
import { consumeCounts } from "./pool-counters";
import { poolStub } from "../objects/pool/stub";
import { schedulerMetrics } from "./scheduler";
import { settings } from "../settings";

const COUNTER_HELP: Record<keyof DispatchCounters, string> = {
  dispatches: "Worker calls started, per template.",
  completions: "Worker calls that succeeded, per template.",
  failures: "Worker calls that failed other than by timing out (errors, bad answers), per template.",
  retries: "Attempts returned to the queue for another try (after a failure, a timeout or an expired lease), per template.",
  timeouts: "Worker calls that reached the template's deadline, per template.",
};

/**
 * Every metric family /metrics exposes, read from the owners of the numbers: each pool's object, the
 * scheduler object, D1 (spend, budgets, alerts) and this isolate (request latency). Labels are bounded
 * by configuration: pools, queues, templates, routes, alert kinds and active clients; never a request.
 */
export async function collectMetrics(env: Env, now: number): Promise<Family[]> {
  const configs = [...(await poolConfigs(env)).values()].sort((a, b) => a.id.localeCompare(b.id));
  const [pools, scheduler, rows, savings] = await Promise.all([
    Promise.all(configs.map(async (cfg) => ({ cfg, a: await poolStub(env, cfg.id).availability(cfg, null) }))),
    schedulerMetrics(env),
    metricsRows(env.DB, `${monthKey(now)}-01`),
    savingsTotals(env.DB),
  ]);
  const saved = new Map(savings.map((r) => [r.strategy, r.saved_nano]));
  const byPool = <T extends number>(value: (p: (typeof pools)[number]) => T) => pools.map((p) => ({ labels: { pool: p.cfg.id }, value: value(p) }));
  const templates = Object.entries(scheduler.counters).sort(([a], [b]) => a.localeCompare(b));
  const openAlerts = new Map(rows.openAlerts.map((r) => [r.kind, r.n]));
  const budgets = rows.clients.map((c) => ({ client: c.client_id, limit: resolveBudget(c.settings).limitNano, spent: c.month_nano }));

  return [
    { name: "rm_pool_info", type: "gauge", help: "Always 1; the pool's unit, status (active, draining, disabled) and sharing mode as labels.",
      samples: pools.map(({ cfg }) => ({ labels: { pool: cfg.id, unit: cfg.unit, status: cfg.status, sharing: cfg.sharing.mode }, value: 1 })) },
    { name: "rm_pool_level", type: "gauge", help: "Units in the pool's bucket now (after refill), in the pool's unit.", samples: byPool((p) => p.a.level) },
    { name: "rm_pool_capacity", type: "gauge", help: "Units the pool's bucket holds when full.", samples: byPool((p) => p.a.capacity) },
    { name: "rm_pool_utilization_ratio", type: "gauge", help: "Share of the capacity in use now: 1 - level / capacity.", samples: byPool((p) => p.a.utilization) },
    { name: "rm_pool_reserved", type: "gauge", help: "Units held by open reservations.", samples: byPool((p) => p.a.reserved) },
    { name: "rm_pool_denials_total", type: "counter", help: "Spending (consume, reserve, scheduler admission) refused for lack of units: 429 rate_limited.", samples: byPool((p) => p.a.denials) },
    { name: "rm_pool_usage_events_pending", type: "gauge", help: "Usage events in the pool's outbox, not yet delivered to D1.", samples: byPool((p) => p.a.outbox) },
    { name: "rm_pool_leased", type: "gauge", help: "Units lent to isolates on token leases: taken from the bucket, granted by their holders.", samples: byPool((p) => p.a.leased) },
    { name: "rm_pool_consumes_total", type: "counter",
      help: "Consumes per pool counted in this isolate since it started (each scrape sees the isolate that served it): granted or refused (429), decided from this isolate's token lease or by the pool's object.",
      samples: consumeCounts().map((c) => ({ labels: { pool: c.pool, path: c.path, outcome: c.outcome }, value: c.value })) },

    { name: "rm_queue_depth", type: "gauge", help: "Requests queued now.", samples: scheduler.queues.map((q) => ({ labels: { queue: q.queue }, value: q.depth })) },
    { name: "rm_queue_oldest_wait_seconds", type: "gauge", help: "How long the longest-waiting queued request that may run has waited since its ready time (creation, not_before or off-peak start, the latest); 0 when none.",
      samples: scheduler.queues.map((q) => ({ labels: { queue: q.queue }, value: q.oldest_wait_ms / 1000 })) },
    { name: "rm_queue_wait_seconds", type: "histogram", help: "How long the requests queued now that may run have waited so far, since their ready time: a snapshot at scrape time, not cumulative (_count is the ready requests; held-back ones are left out).",
      samples: scheduler.queues.map((q) => ({ labels: { queue: q.queue }, value: q.wait_seconds })) },

    { name: "rm_scheduler_running", type: "gauge", help: "1 when the dispatcher is started, 0 when an operator stopped it.", samples: [{ value: scheduler.running ? 1 : 0 }] },
    { name: "rm_scheduler_in_flight", type: "gauge", help: "Worker calls running now.", samples: [{ value: scheduler.in_flight }] },
    { name: "rm_scheduler_shard_queued", type: "gauge", help: "Requests queued now in each scheduler shard (held-back ones included): new work for a shard at rm_scheduler_shard_max_queued is refused (503 queue_full).",
      samples: scheduler.shards.map((s) => ({ labels: { shard: String(s.shard) }, value: s.queued })) },
    { name: "rm_scheduler_shard_max_queued", type: "gauge", help: "Requests one scheduler shard keeps queued at most (SCHEDULER_MAX_QUEUED).", samples: [{ value: settings(env).SCHEDULER_MAX_QUEUED }] },
    { name: "rm_scheduler_settlements_owed", type: "gauge", help: "Ended worker calls whose settlement failed (a pool or client object unreachable), made again until it goes through.", samples: [{ value: scheduler.settlements_owed }] },
    ...(Object.keys(COUNTER_HELP) as Array<keyof DispatchCounters>).map((counter): Family => ({
      name: `rm_scheduler_${counter}_total`, type: "counter", help: COUNTER_HELP[counter],
      samples: templates.map(([template, c]) => ({ labels: { template }, value: c[counter] })),
    })),

    { name: "rm_http_request_duration_seconds", type: "histogram",
      help: "HTTP request latency by route pattern, method and status class, counted per isolate since it started (each scrape sees the isolate that served it).",
      samples: latencySnapshots() },
    { name: "rm_rpc_duration_seconds", type: "histogram",
      help: "RPC (service binding) and MCP tool call latency by interface (via: rpc, mcp) and method or tool, counted per isolate since it started.",
      samples: callDurations() },
    { name: "rm_rpc_calls_total", type: "counter",
      help: "RPC and MCP tool calls by interface (via), method or tool, and outcome (ok, or the error code), counted per isolate since it started.",
      samples: callOutcomes() },

    { name: "rm_spend_nanodollars_total", type: "counter", help: "Money spent per pool since the ledger began, in nano-dollars (1e-9 USD), from the daily usage rollups.",
      samples: rows.spend.map((s) => ({ labels: { pool: s.pool_id }, value: s.total_nano })) },
    { name: "rm_spend_month_nanodollars", type: "gauge", help: "Money spent per pool this calendar month (UTC), in nano-dollars.",
      samples: rows.spend.map((s) => ({ labels: { pool: s.pool_id }, value: s.month_nano })) },
    { name: "rm_savings_nanodollars_total", type: "counter", help: "Money saved by the optimizer since its ledger began, per strategy (downgrade, caching, batching, compression, off_peak), in nano-dollars.",
      samples: STRATEGIES.map((strategy) => ({ labels: { strategy }, value: saved.get(strategy) ?? 0 })) },
    { name: "rm_client_budget_nanodollars", type: "gauge", help: "Each active client's monthly budget, in nano-dollars; no series for a client without a limit.",
      samples: budgets.flatMap((b) => (b.limit === null ? [] : [{ labels: { client: b.client }, value: b.limit }])) },
    { name: "rm_client_spend_month_nanodollars", type: "gauge", help: "Each active client's spend this calendar month (UTC), in nano-dollars, from the usage ledger (delivered within seconds).",
      samples: budgets.map((b) => ({ labels: { client: b.client }, value: b.spent })) },

    { name: "rm_alerts_open", type: "gauge", help: "Unresolved alerts (open or acknowledged), per kind.",
      samples: ALERT_KINDS.map((kind) => ({ labels: { kind }, value: openAlerts.get(kind) ?? 0 })) },
  ];
}
