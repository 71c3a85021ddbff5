// Recording alert decisions in D1 and delivering new alerts to the webhook: no reads from objects, so the
// Durable Objects that see a condition call it directly (the cron's re-check stays in services/alerts.ts).
import type { AlertDecision } from "../domain/alerts";
import { log } from "../log";
import { raisedFrom, raiseStatement, resolveStatement, type Alert } from "./alerts";
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
