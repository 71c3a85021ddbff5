/**
 * Health: what the scheduler reports and alerts on. Worker-call counters per template (kept in the
 * `state` table), the queues' depth, waits and dispatch rates, service-level verdicts and attainment,
 * and the alerts this object sees first (queue backup, starvation, worker failures and timeouts,
 * SLA breaches).
 */
import { mergeDecisions, queueAlerts, slaAlerts, workerAlerts, WORKER_WINDOW_MS, type WorkerOutcome } from "../../domain/alerts";
import { histogramOf } from "../../domain/histogram";
import { QUEUES, type QueueName } from "../../domain/priority";
import { attainment, defaultTarget, requestSla, type RequestSla, type SlaRecord, type SlaTarget } from "../../domain/sla";
import type { Tier } from "../../domain/types";
import { log } from "../../log";
import { applyAlerts } from "../../storage/alert-apply";
import { slaTargets, templateConfigs } from "../../storage/config";
import type { Ranking } from "./ranking";
import { readyAtOf, timedOut, type Outcome, type Queued, type Row } from "./rows";
import { slaRows } from "./report-reads";
import type { QueueStore } from "./store";
import { WAIT_BUCKETS_S, type DispatchCounters, type QueueStats, type SchedulerMetrics, type SlaGroup } from "./types";

/** Queue and worker alerts are evaluated by dispatch passes at most this often (and by the cron). */
const ALERT_CHECK_MS = 5000;
/** SLA alerts look at the requests decided within this window. */
const SLA_ALERT_WINDOW_MS = 15 * 60 * 1000;
/** ...and are evaluated at most this often (the cron pass included). */
const SLA_CHECK_MS = 30_000;

export class Health {
  /** Worker call outcomes of the alert window, for the failure and timeout alerts. */
  private outcomes: WorkerOutcome[] = [];
  private alertsCheckedAt = 0;
  private slaCheckedAt = 0;
  /** A call failed since the last alert check: check at the next pass without waiting. */
  private alertsDirty = false;
  /** Kept in memory; written to `state` with the writes of the pass or settlement that changed them. */
  private counters: Map<string, DispatchCounters>;
  private countersDirty = false;

  constructor(private readonly env: Env, private readonly store: QueueStore, private readonly ranking: Ranking, savedCounters: string | undefined) {
    this.counters = new Map(Object.entries(JSON.parse(savedCounters ?? "{}") as Record<string, DispatchCounters>));
  }

  /** One request against its service level; null when unknown (or another client's). */
  sla(id: string, clientId: string | null, targets: SlaTarget[]): RequestSla | null {
    const row = this.store.rowOf(id);
    if (!row || (clientId !== null && row.client_id !== clientId)) return null;
    return requestSla(slaRecord(row), targetFor(targets, row.tier, row.queue), Date.now());
  }

  /**
   * Service-level attainment of the requests decided (met or breached) between `from` and `to`, per
   * tier and queue, optionally for one client, tier or queue only.
   */
  slaSummary(from: number, to: number, targets: SlaTarget[], filter: { clientId?: string; tier?: Tier; queue?: QueueName }): SlaGroup[] {
    const now = Date.now();
    const rows = slaRows(this.store, from, to, filter);
    const groups = new Map<string, { tier: Tier; queue: QueueName; verdicts: RequestSla[] }>();
    for (const row of rows) {
      const verdict = requestSla(slaRecord(this.store.live.get(row.id) ?? row), targetFor(targets, row.tier, row.queue), Math.min(now, to));
      if (verdict.decided_at === null || verdict.decided_at < from || verdict.decided_at > to) continue;
      const key = `${row.tier}/${row.queue}`;
      const g = groups.get(key) ?? { tier: row.tier, queue: row.queue, verdicts: [] };
      g.verdicts.push(verdict);
      groups.set(key, g);
    }
    return [...groups.values()].map((g) => ({
      tier: g.tier, queue: g.queue, target: targetFor(targets, g.tier, g.queue),
      ...attainment(g.verdicts, targetFor(targets, g.tier, g.queue).target_percent),
      breached_examples: g.verdicts.filter((v) => v.status === "breached").slice(0, 5).map((v) => v.request_id),
    }));
  }

  /**
   * Per pool: the units that queued requests are waiting for (their templates' amounts), how many are
   * waiting, and the oldest wait in ms. For scaling policies' queue-depth and wait-time triggers.
   */
  async waitingByPool(): Promise<Record<string, { requests: number; units: number; oldest_wait_ms: number }>> {
    const templates = await templateConfigs(this.env);
    const now = Date.now();
    const out: Record<string, { requests: number; units: number; oldest_wait_ms: number }> = {};
    for (const q of this.store.queued.values()) {
      const template = templates.get(this.store.live.get(q.id)?.template ?? "");
      for (const r of template?.requirements ?? []) {
        const w = (out[r.pool] ??= { requests: 0, units: 0, oldest_wait_ms: 0 });
        w.requests += 1;
        w.units += r.amount;
        w.oldest_wait_ms = Math.max(w.oldest_wait_ms, waitedMs(q, now) ?? 0);
      }
    }
    return out;
  }

  /**
   * Each queue's depth, ready requests, waits and dispatch rate over the last minute. Waits are those of
   * the requests that may run now, counted from their ready time (see waitedMs).
   */
  queues(now: number): QueueStats[] {
    // One walk of the queued index, and a typed-array sort (native, no comparator): the status poll
    // was ~4% of a 16,000-request drain's CPU with a filter per queue and a comparator sort.
    const byQueue = new Map<string, Queued[]>(QUEUES.map((queue) => [queue, []]));
    for (const q of this.store.queued.values()) byQueue.get(q.queue)?.push(q);
    return QUEUES.map((queue) => {
      const mine = byQueue.get(queue)!;
      const waits = Float64Array.from(readyWaits(mine, now)).sort();
      return {
        queue,
        depth: mine.length,
        ready: waits.length,
        oldest_wait_ms: waits.at(-1) ?? 0,
        wait_p50_ms: percentile(waits, 0.5),
        wait_p95_ms: percentile(waits, 0.95),
        dispatch_rate_per_s: Math.round(this.ranking.dispatchRatePerS(now, queue) * 100) / 100,
      };
    });
  }

  /** For /metrics: each queue's depth and the waits so far of its requests that may run now; worker-call counters. */
  metrics(running: boolean, inFlight: number, owed: number): SchedulerMetrics {
    const now = Date.now();
    const queued = [...this.store.queued.values()];
    const queues = QUEUES.map((queue) => {
      const mine = queued.filter((q) => q.queue === queue);
      const waits = readyWaits(mine, now);
      return {
        queue,
        depth: mine.length,
        oldest_wait_ms: waits.reduce((a, b) => Math.max(a, b), 0),
        wait_seconds: histogramOf(waits.map((ms) => ms / 1000), WAIT_BUCKETS_S),
      };
    });
    return { running, in_flight: inFlight, settlements_owed: owed, queues, counters: Object.fromEntries(this.counters) };
  }

  /** Remember a worker call's outcome for the failure and timeout alerts. */
  noteOutcome(row: Row, outcome: Outcome, now: number): void {
    if (outcome.error === "cancelled") return;
    if (!outcome.ok) this.alertsDirty = true;
    this.outcomes.push({ template: row.template, ok: outcome.ok, timedOut: timedOut(outcome), at: now });
    let drop = 0;
    while (drop < this.outcomes.length && this.outcomes[drop]!.at <= now - WORKER_WINDOW_MS) drop += 1;
    if (drop) this.outcomes.splice(0, drop);
  }

  /**
   * Raise or resolve the alerts this object sees first: queue backup, starvation, worker failures and
   * timeouts. At most every few seconds; the cron pass re-checks the queues too.
   */
  async checkAlerts(now: number): Promise<void> {
    if (!this.alertsDirty && now - this.alertsCheckedAt < ALERT_CHECK_MS) return;
    this.alertsCheckedAt = now;
    this.alertsDirty = false;
    const oldest = new Map<QueueName, number>();
    const depth = new Map<QueueName, number>();
    for (const q of this.store.queued.values()) {
      depth.set(q.queue, (depth.get(q.queue) ?? 0) + 1);
      // Starvation counts from the ready time of work that may run now: held-back work is not starving.
      if (q.notBefore <= now && q.readyAt < (oldest.get(q.queue) ?? Infinity)) oldest.set(q.queue, q.readyAt);
    }
    try {
      const checkSla = now - this.slaCheckedAt >= SLA_CHECK_MS;
      if (checkSla) this.slaCheckedAt = now;
      const targets = checkSla ? [...(await slaTargets(this.env)).values()] : [];
      const sla = !checkSla ? [] : this.slaSummary(now - SLA_ALERT_WINDOW_MS, now, targets, {}).map((g) => ({
        tier: g.tier, queue: g.queue, met: g.met, breached: g.breached, attainmentPercent: g.attainment_percent,
        targetPercent: g.target_percent, examples: g.breached_examples,
      }));
      // Every tier and queue that has a target is checked, so an alert clears once its window is clean.
      const seen = new Set(sla.map((g) => `${g.tier}/${g.queue}`));
      for (const t of targets) {
        if (!seen.has(`${t.tier}/${t.queue}`)) sla.push({ tier: t.tier, queue: t.queue, met: 0, breached: 0, attainmentPercent: null, targetPercent: t.target_percent, examples: [] });
      }
      const decision = mergeDecisions(
        queueAlerts(QUEUES.map((queue) => ({ queue, depth: depth.get(queue) ?? 0, oldestQueuedAt: oldest.get(queue) ?? null })), now),
        workerAlerts(this.outcomes, now),
        slaAlerts(sla, SLA_ALERT_WINDOW_MS),
      );
      await applyAlerts(this.env, decision, now);
    } catch (err) {
      log.warn("alert_check_failed", { error: String(err) });
    }
  }

  count(template: string, counter: keyof DispatchCounters): void {
    let c = this.counters.get(template);
    if (!c) {
      c = { dispatches: 0, completions: 0, failures: 0, retries: 0, timeouts: 0 };
      this.counters.set(template, c);
    }
    c[counter] += 1;
    this.countersDirty = true;
  }

  /** One write for every count since the last one; called right after the writes that counted. */
  saveCounters(): void {
    if (!this.countersDirty) return;
    this.countersDirty = false;
    this.store.writeState("counters", JSON.stringify(Object.fromEntries(this.counters)));
  }
}

/**
 * How long a queued request has waited: from its ready time (the latest of creation, not-before and
 * the start of its off-peak window), and only while it may run (null while it is held back: deferred,
 * backing off before a retry, or over a daily cap until tomorrow).
 */
export function waitedMs(q: Pick<Queued, "readyAt" | "notBefore">, now: number): number | null {
  return q.notBefore <= now ? Math.max(0, now - q.readyAt) : null;
}

function readyWaits(queued: Queued[], now: number): number[] {
  const out: number[] = [];
  for (const q of queued) {
    const w = waitedMs(q, now);
    if (w !== null) out.push(w);
  }
  return out;
}

function slaRecord(row: Row): SlaRecord {
  return {
    id: row.id, client_id: row.client_id, tier: row.tier, queue: row.queue, status: row.status,
    ready_at: readyAtOf(row), first_started_at: row.first_started_at ?? null, finished_at: row.finished_at,
  };
}

function targetFor(targets: SlaTarget[], tier: Tier, queue: QueueName): SlaTarget {
  return targets.find((t) => t.tier === tier && t.queue === queue) ?? defaultTarget(tier, queue);
}

function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
}
