import { budgetAlerts, mergeDecisions, monthOf, poolAlerts, queueAlerts, type AlertDecision, type BudgetSnapshot, type PoolLevel, type QueueSnapshot } from "../domain/alerts";
import { AppError } from "../errors";
import { log } from "../log";
import { ackAlert, getAlert, raisedFrom, raiseStatement, resolveStatement, type Alert } from "../storage/alerts";
import { budgetLimit, poolConfigs } from "./config";
import { poolStub } from "./pools";
import { queueStatus } from "./scheduler";
import { settings } from "../settings";

/** A webhook that does not answer within this long is given up on; delivery never holds up its caller longer. */
export const ALERT_WEBHOOK_DEADLINE_MS = 2000;

/** The optional webhook service binding: declared only where it is wanted, so not part of the generated Env. */
interface AlertWebhookBinding {
  ALERT_WEBHOOK?: Fetcher;
}

export interface AppliedAlerts {
  /** Alerts this call created (first raises); each was delivered to the webhook, when one is configured. */
  raised: Alert[];
  /** Raises counted on an alert that was already unresolved. */
  repeated: number;
  resolved: number;
}

/**
 * Record a decision in D1 in one batch (clears first, then raises) and deliver the alerts it created.
 * Never throws for delivery; D1 failures do throw. Awaits delivery, bounded by the webhook deadline:
 * on a request's hot path call it inside `ctx.waitUntil`.
 *
 * This is the entry point for every code path that sees a condition, e.g. after settling spend:
 *   applyAlerts(env, budgetAlerts({ clientId, spentNano, budgetNano, month: monthOf(now) }), now)
 * and after a worker call, with the template's recent outcomes:
 *   applyAlerts(env, workerAlerts(outcomes, now), now)
 */
export async function applyAlerts(env: Env, decision: AlertDecision, now: number, traceId?: string): Promise<AppliedAlerts> {
  const statements = [
    ...decision.clear.map((c) => resolveStatement(env.DB, c.kind, c.subject, now, c.keep ?? null)),
    ...decision.raise.map((r) => raiseStatement(env.DB, r, now)),
  ];
  if (statements.length === 0) return { raised: [], repeated: 0, resolved: 0 };
  const results = await env.DB.batch(statements);
  const resolved = results.slice(0, decision.clear.length).reduce((n, r) => n + r.results.length, 0);
  const outcomes = results.slice(decision.clear.length).map((r) => raisedFrom(r));
  const raised = outcomes.filter((o) => o?.created).map((o) => o!.alert);
  const repeated = outcomes.filter((o) => o && !o.created).length;
  for (const alert of raised) {
    log.info("alert_raised", { trace_id: traceId, alert_id: alert.id, kind: alert.kind, subject: alert.subject, severity: alert.severity, message: alert.message });
  }
  if (resolved > 0) log.info("alerts_resolved", { trace_id: traceId, resolved });
  await Promise.all(raised.map((alert) => deliver(env, alert, traceId)));
  return { raised, repeated, resolved };
}

/** POST one alert to the webhook, when configured: the service binding first, else the URL. Logs failures, never throws. */
async function deliver(env: Env, alert: Alert, traceId?: string): Promise<void> {
  const webhook = (env as unknown as AlertWebhookBinding).ALERT_WEBHOOK;
  const url = settings(env).ALERT_WEBHOOK_URL;
  const send = webhook
    ? (init: RequestInit) => webhook.fetch("https://alert-webhook.internal/", init)
    : url
      ? (init: RequestInit) => fetch(url, init)
      : null;
  if (!send) return;
  const controller = new AbortController();
  const deadline = setTimeout(() => controller.abort(new Error("deadline")), ALERT_WEBHOOK_DEADLINE_MS);
  try {
    const res = await send({
      method: "POST",
      headers: { "content-type": "application/json", "x-alert-id": alert.id },
      body: JSON.stringify(alert),
      signal: controller.signal,
    });
    const text = await res.text();
    if (!res.ok) log.warn("alert_delivery_failed", { trace_id: traceId, alert_id: alert.id, status: res.status, body: text.slice(0, 200) });
  } catch (err) {
    const reason = controller.signal.aborted ? `no answer within ${ALERT_WEBHOOK_DEADLINE_MS} ms` : err instanceof Error ? err.message : String(err);
    log.warn("alert_delivery_failed", { trace_id: traceId, alert_id: alert.id, error: reason });
  } finally {
    clearTimeout(deadline);
  }
}

/**
 * The cron's re-check: read pool levels and queue depths from their owners and apply what they imply,
 * so an alert is raised even when no request path saw the condition, and resolved once it clears.
 * A pool or the scheduler that does not answer is left out: its alerts keep their state until the next pass.
 */
export async function checkAlerts(env: Env, now: number, traceId?: string): Promise<AppliedAlerts> {
  const configs = [...(await poolConfigs(env)).values()];
  const pools = configs.filter((p) => p.status !== "disabled");
  // A disabled pool takes no spending, so how full it is concerns no one.
  const disabled: AlertDecision = { raise: [], clear: configs.filter((p) => p.status === "disabled").map((p) => ({ kind: "pool_low", subject: p.id })) };
  const [levels, queues, budgets] = await Promise.all([
    Promise.allSettled(pools.map(async (cfg): Promise<PoolLevel> => {
      const a = await poolStub(env, cfg.id).availability(cfg, null);
      return { id: cfg.id, level: a.level, capacity: a.capacity, lowWaterPercent: cfg.lowWaterPercent };
    })),
    queueStatus(env).then(
      (s) => s.queues.map((q): QueueSnapshot => ({ queue: q.queue, depth: q.depth, oldestQueuedAt: q.depth > 0 ? now - q.oldest_wait_ms : null })),
      (err: unknown) => {
        log.warn("alert_check_scheduler_failed", { trace_id: traceId, error: String(err) });
        return null;
      },
    ),
    budgetSnapshots(env, now).catch((err: unknown) => {
      log.warn("alert_check_budgets_failed", { trace_id: traceId, error: String(err) });
      return [];
    }),
  ]);
  const answered = levels.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  if (answered.length < levels.length) log.warn("alert_check_pools_failed", { trace_id: traceId, failed: levels.length - answered.length });
  return applyAlerts(env, mergeDecisions(
    poolAlerts(answered), disabled, queues ? queueAlerts(queues, now) : { raise: [], clear: [] }, ...budgets.map(budgetAlerts),
  ), now, traceId);
}

/** Every active client's spend this month against its budget, from the clients' own objects. */
async function budgetSnapshots(env: Env, now: number): Promise<BudgetSnapshot[]> {
  const { results } = await env.DB.prepare("SELECT id FROM clients WHERE status = 'active'").all<{ id: string }>();
  const month = monthOf(now);
  const snapshots = await Promise.all(results.map(async ({ id }) => {
    const limit = await budgetLimit(env, id);
    if (!limit) return null;
    const view = await env.CLIENT.get(env.CLIENT.idFromName(id)).budget(limit);
    return { clientId: id, spentNano: view.spent_nano, budgetNano: limit.limitNano, month };
  }));
  return snapshots.filter((s): s is BudgetSnapshot => s !== null);
}

export async function findAlert(env: Env, id: string): Promise<Alert> {
  const alert = await getAlert(env.DB, id);
  if (!alert) throw new AppError("alert_not_found", `no alert ${id}`, { alert_id: id });
  return alert;
}

/** Acknowledge: open becomes acknowledged; acknowledging again answers it as is; a resolved alert is 409. */
export async function acknowledgeAlert(env: Env, id: string, now: number): Promise<Alert> {
  const acked = await ackAlert(env.DB, id, now);
  if (acked) return acked;
  const alert = await findAlert(env, id);
  if (alert.state === "resolved") throw new AppError("alert_state", `alert ${id} is resolved`, { alert_id: id, state: alert.state });
  return alert;
}
