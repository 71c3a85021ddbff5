import { DurableObject } from "cloudflare:workers";
import { timeOrderedId } from "../domain/ids";
import { dayStart } from "../domain/calendar";
import { batchGroups, type DowngradeReason, type Strategy } from "../domain/optimizer";
import { compressText, decompressText } from "../services/compression";
import { cachePut, recordSavings, type SavingsRow } from "../services/optimizer";
import { backoffMs, DEFAULT_TIER_POINTS, DEFAULT_TIER_WEIGHTS, fairRank, priorityOf, QUEUES, type Priority, type QueueName } from "../domain/priority";
import type { Caller, PoolAmount, PoolConfig, Tier } from "../domain/types";
import type { ErrorBody } from "../errors";
import { mergeDecisions, queueAlerts, slaAlerts, workerAlerts, WORKER_WINDOW_MS, type WorkerOutcome } from "../domain/alerts";
import { attainment, requestSla, type Attainment, type RequestSla, type SlaRecord, type SlaTarget, defaultTarget } from "../domain/sla";
import { histogramOf, type HistogramSnapshot } from "../domain/histogram";
import { log } from "../log";
import { applyAlerts } from "../services/alerts";
import { budgetLimit, clientQuota, clientTier, poolConfigs, slaTargets, templateConfigs, tierLimits } from "../services/config";
import { poolStub } from "../services/pools";
import { insertRequestLog, MAX_ERROR_CHARS, type FinishedRequest } from "../storage/request-log";
import type { Template } from "../storage/templates";
import type { Settlement, SpendEvent } from "./client";
import type { ReleaseResult, ReserveResult, Result } from "./pool";

/** What the service layer hands the scheduler for one new request (already validated and priced). */
export interface NewRequest {
  /** Given by the caller when it admitted the request's money under this id first. */
  id?: string;
  clientId: string;
  tier: Tier;
  maxConcurrent: number;
  template: string;
  params: unknown;
  queue: QueueName;
  idempotencyKey: string | null;
  notBefore: number | null;
  maxAttempts: number;
  estimateNano: number;
  /** The estimate per pool: the template's amounts at the prices of the time. */
  estimate: PoolCost[];
  /** What the cost optimizer decided (see services/optimizer.ts); absent: nothing. */
  plan?: StoredPlan | null;
  /** `params` as stored: JSON, or compressed JSON ("gz:..."), when the caller already encoded it. */
  paramsStored?: string;
  /** Hash of the spec its idempotency key stands for (services/requests.ts): a repeat with another conflicts. */
  specHash?: string | null;
  /** A result cache hit: the request is recorded as completed at once, at no cost. */
  cached?: { result: unknown; costNano: number } | null;
}

/** The optimizer's decisions a request carries through the scheduler (stored as JSON with it). */
export interface StoredPlan {
  requested_template: string;
  downgraded_from: string | null;
  downgrade_reason: DowngradeReason | null;
  strategies: Array<{ strategy: Strategy; saved_nano: number; detail: string }>;
  cache_key: string | null;
  cache_ttl_ms: number;
  batchable: boolean;
  batch_size: number;
  compress_threshold_bytes: number | null;
  /** Bytes saved by storing params and result compressed. */
  bytes_saved: number;
  /** Answered from the cache or by an identical request's execution. */
  cached: boolean;
  /** How many requests went to the worker in the invocation that completed this one (1: alone). */
  batched: number | null;
}

/** Units and cost in one pool, for a request's estimate or its actual use. */
export type PoolCost = {
  pool: string;
  units: number;
  cost_nano: number;
};

export type RequestStatus = "queued" | "dispatching" | "running" | "completed" | "failed" | "cancelled" | "expired";

/** A request as callers see it. */
export interface RequestView {
  id: string;
  client_id: string;
  template: string;
  /** The template the caller asked for when the optimizer runs its cheaper alternative; null otherwise. */
  downgraded_from: string | null;
  downgrade_reason: DowngradeReason | null;
  queue: QueueName;
  status: RequestStatus;
  priority: number;
  attempts: number;
  max_attempts: number;
  idempotency_key: string | null;
  estimate_nano: number;
  actual_nano: number | null;
  estimate: PoolCost[];
  /** What the request really used per pool, once it completed. */
  actual: PoolCost[] | null;
  result: unknown;
  error: string | null;
  created_at: number;
  updated_at: number;
  not_before: number;
  started_at: number | null;
  finished_at: number | null;
  dispatch_seq: number | null;
  optimizer: {
    requested_template: string;
    strategies: StoredPlan["strategies"];
    cached: boolean;
    batch_size: number | null;
  } | null;
}

export interface EnqueueOutcome {
  request: RequestView;
  duplicate: boolean;
  /** The key's first request (`request`) was made with another spec: the service layer answers 409. */
  conflict?: boolean;
  position: number | null;
  estimated_wait_ms: number | null;
}

export interface PositionView {
  id: string;
  status: RequestStatus;
  queue: QueueName;
  position: number | null;
  queued_total: number;
  priority: Priority | null;
  estimated_wait_ms: number | null;
}

export interface QueueStats {
  queue: QueueName;
  depth: number;
  ready: number;
  oldest_wait_ms: number;
  wait_p50_ms: number;
  wait_p95_ms: number;
  dispatch_rate_per_s: number;
}

export interface SchedulerState {
  running: boolean;
  queued: number;
  in_flight: number;
  max_in_flight: number;
  last_pass_at: number | null;
  dispatched_total: number;
}

/** Worker calls of one template since the scheduler object was created (see metrics()). */
export interface DispatchCounters {
  /** Calls started. */
  dispatches: number;
  /** Calls that succeeded. */
  completions: number;
  /** Calls that failed, other than by timing out or being cancelled. */
  failures: number;
  /** Attempts returned to the queue for another try (after a failure, a timeout or an expired lease). */
  retries: number;
  /** Calls that reached the template's deadline. */
  timeouts: number;
}

/** Upper bounds, in seconds, of the wait-time histogram of the requests queued now. */
export const WAIT_BUCKETS_S = [1, 5, 30, 60, 300, 600, 1800] as const;

export interface SchedulerMetrics {
  running: boolean;
  in_flight: number;
  queues: Array<{ queue: QueueName; depth: number; oldest_wait_ms: number; wait_seconds: HistogramSnapshot }>;
  counters: Record<string, DispatchCounters>;
}

interface Row {
  id: string;
  client_id: string;
  tier: Tier;
  max_concurrent: number;
  template: string;
  params: string;
  queue: QueueName;
  status: RequestStatus;
  priority: number;
  attempts: number;
  max_attempts: number;
  idempotency_key: string | null;
  estimate_nano: number;
  actual_nano: number | null;
  result: string | null;
  error: string | null;
  created_at: number;
  updated_at: number;
  not_before: number;
  lease_until: number | null;
  started_at: number | null;
  finished_at: number | null;
  dispatch_seq: number | null;
  reservations: string | null;
  ready_at: number | null;
  first_started_at: number | null;
  plan: string | null;
  estimate_detail: string | null;
  actual_detail: string | null;
  [key: string]: SqlStorageValue;
}

interface Queued {
  id: string;
  clientId: string;
  tier: Tier;
  /** The tier row's priority points when this request was indexed (refreshed when a tier changes). */
  tierPoints: number;
  queue: QueueName;
  createdAt: number;
  notBefore: number;
  recentShare: number;
}

/** A request that ended, as finishAll records it. */
interface Finished {
  id: string;
  status: "completed" | "failed";
  result?: string;
  actual?: number;
  actualDetail?: string;
  error?: string;
  plan?: StoredPlan;
  startedAt?: number;
}

interface Held {
  pool: string;
  reservationId: string;
  amount: number;
}

interface Outcome {
  ok: boolean;
  result?: unknown;
  usage?: Record<string, number>;
  error?: string;
  /** False for failures that no retry can fix. */
  retryable?: boolean;
  /** Requests in the worker invocation that produced this outcome (batching). */
  batched?: number;
}

/** Requests in worker calls at once (bench/README.md: 2048 rather than 512 drains a backlog faster here). */
const MAX_IN_FLIGHT = 2048;
/** Room above MAX_IN_FLIGHT kept for `immediate` work run at once by execute, so a backlog cannot hold it up. */
const IMMEDIATE_HEADROOM = 32;
/**
 * Requests claimed and admitted together: one client-object call per client and one pool-object call
 * per pool for the whole chunk, and one write each for its claim and start.
 */
const CHUNK = 512;
const SCAN_LIMIT = 2048;
const FAIRNESS_WINDOW_MS = 5 * 60 * 1000;
const RATE_WINDOW_MS = 60 * 1000;
const RANK_CACHE_MS = 250;
/** Completions are settled together: one release call per pool and client for all that end within this window. */
const SETTLE_DELAY_MS = 5;
/**
 * ...or as soon as this many have ended. A timer does not fire while the runtime's event loop stays
 * busy (a pass launching thousands of calls to workers that answer at once), so without this a
 * backlog's whole wave waited for the pass to end before any of it was settled.
 */
const SETTLE_BATCH = 512;
/** Params (JSON characters) in one runMany call at most. */
const MANY_PARAMS_CHARS = 4 * 1024 * 1024;
/** Queue and worker alerts are evaluated by dispatch passes at most this often (and by the cron). */
const ALERT_CHECK_MS = 5000;
const MAX_RESULT_CHARS = 256 * 1024;
/** How long a worker found without RPC `run` is called over HTTP before RPC is tried again. */
const RPC_PROBE_MS = 10 * 60 * 1000;
/** Finished requests per D1 statement when the outbox is delivered to request_log. */
const FINISHED_BATCH = 200;
/** SLA alerts look at the requests decided within this window. */
const SLA_ALERT_WINDOW_MS = 15 * 60 * 1000;
/** ...and are evaluated at most this often (the cron pass included). */
const SLA_CHECK_MS = 30_000;
/** Terminal states that cancellation cannot change. */
const TERMINAL: RequestStatus[] = ["completed", "failed", "cancelled", "expired"];

/**
 * The scheduler: the single owner of the five queues. It ranks queued requests, claims the best
 * with a lease, admits them against client slots and pool reservations (all-or-nothing, batched per
 * client and per pool), invokes each template's worker through its service binding with a deadline,
 * and settles what the worker reports. Claims are synchronous, so overlapping passes (alarm, cron,
 * execute) can never dispatch one request twice; a lease that ends returns its request to the queue.
 */
export class SchedulerObject extends DurableObject<Env> {
  private sql: SqlStorage;
  private running = true;
  private queued = new Map<string, Queued>();
  /**
   * Every request not yet finished (queued, dispatching, running), as stored. This object is the only
   * writer of its table, so the copy stays exact and the dispatch path reads no rows back from SQLite.
   */
  private live = new Map<string, Row>();
  private inflight = new Map<string, CallHandle>();
  /** The worker calls' deadlines, on one timer. */
  private deadlines = new Deadlines();
  /** Bindings whose worker has no RPC `run`, until when to call them over HTTP without trying RPC. */
  private fetchOnly = new Map<string, number>();
  /** Workers found without RPC `runMany`, until when: their requests are sent one call each meanwhile. */
  private callEach = new Map<string, number>();
  private admitting = new Set<string>();
  private waiters = new Map<string, Array<(v: RequestView) => void>>();
  private dispatchLog: Array<{ at: number; clientId: string; queue: QueueName }> = [];
  private durations: number[] = [];
  /** Worker call outcomes of the alert window, for the failure and timeout alerts. */
  private outcomes: WorkerOutcome[] = [];
  private alertsCheckedAt = 0;
  private slaCheckedAt = 0;
  /** A call failed since the last alert check: check at the next pass without waiting. */
  private alertsDirty = false;
  private rankCache: { at: number; order: string[] } | null = null;
  /** The optimizer's plan of each live request that has one (parsed once). */
  private plans = new Map<string, StoredPlan>();
  /** Operators' fair-share weights of clients with queued work (refreshed by each pass). */
  private weights = new Map<string, number>();
  /** Priority points and fair-share weight by tier, from the tier rows (loadWeights refreshes them). */
  private tierRows = new Map<Tier, { points: number; weight: number }>();
  private settleBuffer: Array<{ id: string; attempt: number; outcome: Outcome }> = [];
  private settleTimer: ReturnType<typeof setTimeout> | null = null;
  private alarmAt: number | null = null;
  private lastPassAt: number | null = null;
  private seq = 0;
  /** Kept in memory; written to `state` with the writes of the pass or settlement that changed them. */
  private counters = new Map<string, DispatchCounters>();
  private countersDirty = false;
  /** The finished-requests outbox (see flushFinished): one delivery at a time, and a backoff after a failure. */
  private finishedFlushing = false;
  private finishedFailures = 0;
  private finishedRetryAt = 0;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`
      CREATE TABLE IF NOT EXISTS requests (
        id TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        tier TEXT NOT NULL,
        max_concurrent INTEGER NOT NULL,
        template TEXT NOT NULL,
        params TEXT NOT NULL,
        queue TEXT NOT NULL,
        status TEXT NOT NULL,
        priority REAL NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        idempotency_key TEXT,
        estimate_nano INTEGER NOT NULL,
        actual_nano INTEGER,
        result TEXT,
        error TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        not_before INTEGER NOT NULL,
        lease_until INTEGER,
        started_at INTEGER,
        finished_at INTEGER,
        dispatch_seq INTEGER,
        reservations TEXT,
        estimate_detail TEXT,
        actual_detail TEXT
      );
      CREATE UNIQUE INDEX IF NOT EXISTS requests_idempotency ON requests (client_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
      CREATE INDEX IF NOT EXISTS requests_client_created ON requests (client_id, created_at);
      DROP INDEX IF EXISTS requests_status;
      CREATE TABLE IF NOT EXISTS state (k TEXT PRIMARY KEY, v TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS finished_outbox (id TEXT PRIMARY KEY);
    `);
    const columns = new Set(this.sql.exec<{ name: string }>("SELECT name FROM pragma_table_info('requests')").toArray().map((c) => c.name));
    for (const column of ["estimate_detail", "actual_detail"]) {
      if (!columns.has(column)) this.sql.exec(`ALTER TABLE requests ADD COLUMN ${column} TEXT`);
    }
    // For service levels: when the request could first run, and when it was first dispatched.
    for (const column of ["ready_at", "first_started_at"]) {
      if (!columns.has(column)) this.sql.exec(`ALTER TABLE requests ADD COLUMN ${column} INTEGER`);
    }
    if (!columns.has("plan")) this.sql.exec("ALTER TABLE requests ADD COLUMN plan TEXT");
    // The hash of the spec an idempotency key was first used with; NULL for requests made before it.
    if (!columns.has("spec_hash")) this.sql.exec("ALTER TABLE requests ADD COLUMN spec_hash TEXT");
    // Whether a finished request has optimizer records to deliver (1 for entries written before the column).
    const outboxColumns = this.sql.exec<{ name: string }>("SELECT name FROM pragma_table_info('finished_outbox')").toArray().map((c) => c.name);
    if (!outboxColumns.includes("optimizer")) this.sql.exec("ALTER TABLE finished_outbox ADD COLUMN optimizer INTEGER NOT NULL DEFAULT 1");
    this.sql.exec("CREATE INDEX IF NOT EXISTS requests_finished ON requests (finished_at)");
    const state = new Map(this.sql.exec<{ k: string; v: string }>("SELECT k, v FROM state").toArray().map((r) => [r.k, r.v]));
    this.running = state.get("running") !== "false";
    this.counters = new Map(Object.entries(JSON.parse(state.get("counters") ?? "{}") as Record<string, DispatchCounters>));
    this.seq = this.sql.exec<{ n: number | null }>("SELECT MAX(dispatch_seq) AS n FROM requests").one().n ?? 0;
    for (const row of this.sql.exec<Row>("SELECT * FROM requests WHERE status IN ('queued', 'dispatching', 'running')")) {
      this.live.set(row.id, row);
      if (row.plan) this.plans.set(row.id, JSON.parse(row.plan) as StoredPlan);
      if (row.status === "queued") this.index(row);
    }
    void ctx.blockConcurrencyWhile(async () => {
      this.alarmAt = await ctx.storage.getAlarm();
    });
  }

  // --- RPC: requests --------------------------------------------------------------------------

  /** Add requests to their queues; a repeated idempotency key returns the first request (`conflict` when its spec differs). */
  enqueue(items: NewRequest[]): EnqueueOutcome[] {
    const now = Date.now();
    const outcomes = items.map((item) => this.insert(item, now));
    if (outcomes.some((o) => !o.duplicate)) this.ensureAlarm(now);
    return outcomes.map((o) => ({ ...o, ...this.positionOf(o.request.id, now) }));
  }

  /**
   * Enqueue one request and, for the `immediate` queue, dispatch it at once and wait for its first
   * attempt to settle. Other queues are only enqueued. Returns the request as it stands.
   */
  async execute(item: NewRequest, waitMs: number): Promise<EnqueueOutcome> {
    const now = Date.now();
    const inserted = this.insert(item, now);
    const id = inserted.request.id;
    if (!inserted.duplicate && !item.cached && item.queue === "immediate" && this.running) {
      const settled = this.waitFor(id, waitMs);
      await this.pass("execute", [id]);
      if (this.rowOf(id)?.status !== "queued") await settled;
    }
    this.ensureAlarm(Date.now());
    const row = this.rowOf(id)!;
    return { request: await viewOf(row), duplicate: inserted.duplicate, ...(inserted.conflict ? { conflict: true } : {}), ...this.positionOf(id, Date.now()) };
  }

  /** Of these request ids, those the scheduler holds and has not finished. */
  unfinished(ids: string[]): string[] {
    return ids.filter((id) => this.live.has(id));
  }

  /** The id of the request a client made with this idempotency key, if any, and whether `specHash` conflicts with its spec. */
  findByKey(clientId: string, key: string, specHash: string | null = null): { id: string; conflict: boolean } | null {
    const row = this.sql.exec<Row>("SELECT id, spec_hash FROM requests WHERE client_id = ? AND idempotency_key = ?", clientId, key).toArray()[0];
    return row ? { id: row.id, conflict: specConflict(row, specHash) } : null;
  }

  async get(id: string, clientId: string | null): Promise<RequestView | null> {
    const row = this.rowOf(id);
    if (!row || (clientId !== null && row.client_id !== clientId)) return null;
    return viewOf(row);
  }

  /** How many of a client's requests created at or after `since` are in each status. */
  countsFor(clientId: string, since: number): Record<string, number> {
    const rows = this.sql.exec<{ status: string; n: number }>(
      "SELECT status, COUNT(*) AS n FROM requests WHERE client_id = ? AND created_at >= ? GROUP BY status", clientId, since,
    ).toArray();
    return Object.fromEntries(rows.map((r) => [r.status, r.n]));
  }

  async position(id: string, clientId: string | null): Promise<PositionView | null> {
    const row = this.rowOf(id);
    if (!row || (clientId !== null && row.client_id !== clientId)) return null;
    await this.refreshTiers();
    const now = Date.now();
    const q = this.queued.get(id);
    return {
      id,
      status: row.status,
      queue: row.queue,
      queued_total: this.queued.size,
      priority: q ? priorityOf({ ...q, recentShare: this.shares(now).get(q.clientId) ?? 0 }, now) : null,
      ...this.positionOf(id, now),
    };
  }

  /**
   * Cancel a request. Queued: removed from its queue. Dispatching or running (unless `onlyQueued`):
   * its worker call is aborted and its reservations and slot are released. Otherwise a conflict.
   */
  async cancel(id: string, clientId: string | null, onlyQueued: boolean): Promise<Result<RequestView>> {
    const row = this.rowOf(id);
    if (!row || (clientId !== null && row.client_id !== clientId)) return fail("request_not_found", `no request ${id}`);
    if (TERMINAL.includes(row.status) || (onlyQueued && row.status !== "queued")) {
      return fail("request_state", `request ${id} is ${row.status}`, { status: row.status });
    }
    const now = Date.now();
    const wasActive = row.status !== "queued";
    this.queued.delete(id);
    this.rankCache = null;
    this.sql.exec(
      "UPDATE requests SET status = 'cancelled', error = 'cancelled by caller', finished_at = ?, updated_at = ?, lease_until = NULL WHERE id = ?",
      now, now, id,
    );
    this.sql.exec("INSERT INTO finished_outbox (id, optimizer) VALUES (?, 0) ON CONFLICT (id) DO NOTHING", id);
    Object.assign(row, { status: "cancelled", error: "cancelled by caller", finished_at: now, updated_at: now, lease_until: null });
    this.live.delete(id);
    this.plans.delete(id);
    log.info("request_cancelled", { request_id: id, client_id: row.client_id, was: row.status });
    if (wasActive) this.inflight.get(id)?.abort(new Error("cancelled"));
    await this.releaseHolds([{ row, actual: {}, final: true }]);
    if (wasActive) this.ensureAlarm(Date.now());
    this.resolveWaiters(id);
    return { ok: true, value: view(this.rowOf(id)!) };
  }

  /** One request against its service level; null when unknown (or another client's). */
  sla(id: string, clientId: string | null, targets: SlaTarget[]): RequestSla | null {
    const row = this.rowOf(id);
    if (!row || (clientId !== null && row.client_id !== clientId)) return null;
    return requestSla(slaRecord(row), targetFor(targets, row.tier, row.queue), Date.now());
  }

  /**
   * Service-level attainment of the requests decided (met or breached) between `from` and `to`, per
   * tier and queue, optionally for one client, tier or queue only.
   */
  slaSummary(from: number, to: number, targets: SlaTarget[], filter: { clientId?: string; tier?: Tier; queue?: QueueName }): SlaGroup[] {
    const now = Date.now();
    const rows = this.sql.exec<Row>(
      `SELECT id, client_id, tier, queue, status, created_at, ready_at, first_started_at, finished_at FROM requests
       WHERE (finished_at IS NULL OR finished_at >= ?) AND created_at <= ?
         AND (? IS NULL OR client_id = ?) AND (? IS NULL OR tier = ?) AND (? IS NULL OR queue = ?)`,
      from, to, filter.clientId ?? null, filter.clientId ?? null, filter.tier ?? null, filter.tier ?? null, filter.queue ?? null, filter.queue ?? null,
    ).toArray();
    const groups = new Map<string, { tier: Tier; queue: QueueName; verdicts: RequestSla[] }>();
    for (const row of rows) {
      const verdict = requestSla(slaRecord(this.live.get(row.id) ?? row), targetFor(targets, row.tier, row.queue), Math.min(now, to));
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

  /** A client's unfinished requests: queued, and dispatching or running. */
  activeFor(clientId: string): { queued: number; running: number } {
    let queued = 0;
    let running = 0;
    for (const row of this.live.values()) {
      if (row.client_id !== clientId) continue;
      if (row.status === "queued") queued += 1;
      else running += 1;
    }
    return { queued, running };
  }

  /**
   * Per pool: the units that queued requests are waiting for (their templates' amounts), how many are
   * waiting, and the oldest wait in ms. For scaling policies' queue-depth and wait-time triggers.
   */
  async waitingByPool(): Promise<Record<string, { requests: number; units: number; oldest_wait_ms: number }>> {
    const templates = await templateConfigs(this.env);
    const now = Date.now();
    const out: Record<string, { requests: number; units: number; oldest_wait_ms: number }> = {};
    for (const q of this.queued.values()) {
      const template = templates.get(this.live.get(q.id)?.template ?? "");
      for (const r of template?.requirements ?? []) {
        const w = (out[r.pool] ??= { requests: 0, units: 0, oldest_wait_ms: 0 });
        w.requests += 1;
        w.units += r.amount;
        w.oldest_wait_ms = Math.max(w.oldest_wait_ms, now - q.createdAt);
      }
    }
    return out;
  }

  /** Cancel every unfinished request of a client (a forced delete). Returns how many were cancelled. */
  async cancelClient(clientId: string): Promise<number> {
    const ids = [...this.live.values()].filter((r) => r.client_id === clientId).map((r) => r.id);
    let cancelled = 0;
    for (const id of ids) if ((await this.cancel(id, clientId, false)).ok) cancelled += 1;
    return cancelled;
  }

  queueStatus(): { queues: QueueStats[]; scheduler: SchedulerState } {
    const now = Date.now();
    this.pruneLog(now);
    const queues = QUEUES.map((queue) => {
      const waits = [...this.queued.values()].filter((q) => q.queue === queue).map((q) => now - q.createdAt).sort((a, b) => a - b);
      const ready = [...this.queued.values()].filter((q) => q.queue === queue && q.notBefore <= now).length;
      const dispatched = this.dispatchLog.filter((d) => d.queue === queue && d.at > now - RATE_WINDOW_MS).length;
      return {
        queue,
        depth: waits.length,
        ready,
        oldest_wait_ms: waits.at(-1) ?? 0,
        wait_p50_ms: percentile(waits, 0.5),
        wait_p95_ms: percentile(waits, 0.95),
        dispatch_rate_per_s: Math.round((dispatched / (RATE_WINDOW_MS / 1000)) * 100) / 100,
      };
    });
    return { queues, scheduler: this.state() };
  }

  /** For /metrics: each queue's depth and the waits of its requests so far; worker-call counters. */
  metrics(): SchedulerMetrics {
    const now = Date.now();
    const queues = QUEUES.map((queue) => {
      const waits = [...this.queued.values()].filter((q) => q.queue === queue).map((q) => now - q.createdAt);
      return {
        queue,
        depth: waits.length,
        oldest_wait_ms: waits.reduce((a, b) => Math.max(a, b), 0),
        wait_seconds: histogramOf(waits.map((ms) => ms / 1000), WAIT_BUCKETS_S),
      };
    });
    return { running: this.running, in_flight: this.inflight.size, queues, counters: Object.fromEntries(this.counters) };
  }

  // --- RPC: control ---------------------------------------------------------------------------

  setRunning(running: boolean): SchedulerState {
    this.running = running;
    this.sql.exec("INSERT INTO state (k, v) VALUES ('running', ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v", String(running));
    log.info(running ? "scheduler_started" : "scheduler_stopped", {});
    if (running) this.ensureAlarm(Date.now());
    return this.state();
  }

  state(): SchedulerState {
    return {
      running: this.running,
      queued: this.queued.size,
      in_flight: this.inflight.size,
      max_in_flight: MAX_IN_FLIGHT,
      last_pass_at: this.lastPassAt,
      dispatched_total: this.seq,
    };
  }

  /** Capacity was freed or work arrived elsewhere: run a pass soon. */
  wake(): void {
    this.ensureAlarm(Date.now());
  }

  override async alarm(): Promise<void> {
    this.alarmAt = null;
    await this.pass("alarm");
  }

  /**
   * One dispatch pass: return expired leases to the queue, then claim the best ready requests and
   * admit and launch them, chunk by chunk, until the in-flight limit or the ready list is reached.
   * Requests blocked on a pool or a client's slots are skipped for the rest of the pass (no
   * lower-priority request overtakes them on that pool or client). Returns how many were launched.
   */
  async pass(trigger: string, onlyIds?: string[]): Promise<number> {
    const now = Date.now();
    this.lastPassAt = now;
    const lost = this.reclaimLeases(now);
    if (lost.length) await this.releaseHolds(lost.map((row) => ({ row: { ...row, reservations: null }, actual: {}, final: true })));
    if (!this.running) {
      await this.flushFinished();
      return 0;
    }
    const [templates, pools] = await Promise.all([templateConfigs(this.env), poolConfigs(this.env), onlyIds ? undefined : this.loadWeights()]);
    const order = onlyIds ?? this.readyOrder(now);
    const blockedPools = new Set<string>();
    const fullClients = new Set<string>();
    // Identical cacheable requests are coalesced: while one runs, the others wait and share its result.
    const keysInFlight = new Set<string>();
    for (const [id, plan] of this.plans) {
      const status = this.live.get(id)?.status;
      if (plan.cache_key && (status === "dispatching" || status === "running")) keysInFlight.add(plan.cache_key);
    }
    let coalescedWaiting = 0;
    let launched = 0;
    let wakeAt: number | null = null;
    const limit = onlyIds ? MAX_IN_FLIGHT + IMMEDIATE_HEADROOM : MAX_IN_FLIGHT;
    const end = Math.min(order.length, SCAN_LIMIT);
    let cursor = 0;
    while (cursor < end && this.inflight.size + this.admitting.size < limit) {
      // The next requests in rank order, as many as there is room for: none is passed over unless it
      // cannot run now (room freed while a chunk was admitted goes to the very next in line).
      const room = Math.min(CHUNK, limit - this.inflight.size - this.admitting.size);
      const chunk: Array<{ id: string; template: Template | undefined }> = [];
      while (chunk.length < room && cursor < end) {
        const id = order[cursor++]!;
        const q = this.queued.get(id);
        if (!q || q.notBefore > now || fullClients.has(q.clientId)) continue;
        const template = templates.get(this.rowOf(id)!.template);
        if (template && template.requirements.some((r) => blockedPools.has(r.pool))) continue;
        const key = this.plans.get(id)?.cache_key;
        if (key) {
          if (keysInFlight.has(key)) {
            coalescedWaiting += 1;
            continue;
          }
          keysInFlight.add(key);
        }
        chunk.push({ id, template });
      }
      if (chunk.length === 0) continue;
      const rows = this.claim(chunk, Date.now());
      const admitted = await this.admit(rows, templates, pools, blockedPools, fullClients);
      this.launchAll(admitted.rows, templates);
      this.saveCounters();
      launched += admitted.rows.length;
      if (admitted.retryAt !== null) wakeAt = Math.min(wakeAt ?? Infinity, admitted.retryAt);
    }
    if (launched > 0) log.info("dispatch_pass", { trigger, launched, queued: this.queued.size, in_flight: this.inflight.size });
    const nextReady = this.nextNotBefore(Date.now());
    if (nextReady !== null) wakeAt = Math.min(wakeAt ?? Infinity, nextReady);
    // More ready work than this pass could take: continue right after it, without waiting for the cron.
    if (!onlyIds && this.readyCount(Date.now()) > coalescedWaiting && blockedPools.size === 0 && fullClients.size === 0 && this.inflight.size < MAX_IN_FLIGHT) {
      wakeAt = Date.now();
    }
    if (wakeAt !== null) this.ensureAlarm(wakeAt);
    if (!onlyIds) await this.checkAlerts(Date.now());
    if (!onlyIds) await this.flushFinished();
    return launched;
  }

  // --- internals: queue -------------------------------------------------------------------------

  private insert(item: NewRequest, now: number): { request: RequestView; duplicate: boolean; conflict?: boolean } {
    if (item.idempotencyKey) {
      const prior = this.sql.exec<Row>("SELECT * FROM requests WHERE client_id = ? AND idempotency_key = ?", item.clientId, item.idempotencyKey).toArray()[0];
      if (prior) return { request: view(prior), duplicate: true, ...(specConflict(prior, item.specHash ?? null) ? { conflict: true } : {}) };
    }
    const id = item.id ?? newRequestId();
    const notBefore = Math.max(now, item.notBefore ?? now);
    const priority = priorityOf({ tier: item.tier, tierPoints: this.tierPointsOf(item.tier), queue: item.queue, createdAt: now, recentShare: this.shares(now).get(item.clientId) ?? 0 }, now).score;
    const params = item.paramsStored ?? JSON.stringify(item.params ?? null);
    const plan = item.plan ? { ...item.plan } : null;
    if (item.cached && plan) {
      // A cache hit: completed now, no dispatch, no pool units, no cost.
      plan.cached = true;
      plan.strategies = [...plan.strategies, { strategy: "caching", saved_nano: item.cached.costNano, detail: "answered from the result cache" }];
    }
    const planText = plan ? JSON.stringify(plan) : null;
    const cached = item.cached ?? null;
    this.sql.exec(
      `INSERT INTO requests (id, client_id, tier, max_concurrent, template, params, queue, status, priority, attempts, max_attempts,
         idempotency_key, estimate_nano, created_at, updated_at, not_before, estimate_detail, ready_at, plan,
         result, actual_nano, actual_detail, first_started_at, started_at, finished_at, spec_hash)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      id, item.clientId, item.tier, item.maxConcurrent, item.template, params, item.queue, cached ? "completed" : "queued", priority,
      item.maxAttempts, item.idempotencyKey, item.estimateNano, now, now, notBefore, JSON.stringify(item.estimate), notBefore, planText,
      cached ? JSON.stringify(cached.result ?? null) : null, cached ? 0 : null, cached ? "[]" : null, cached ? now : null, cached ? now : null, cached ? now : null,
      item.specHash ?? null,
    );
    const row: Row = {
      id, client_id: item.clientId, tier: item.tier, max_concurrent: item.maxConcurrent, template: item.template,
      params, queue: item.queue, status: cached ? "completed" : "queued", priority, attempts: 0,
      max_attempts: item.maxAttempts, idempotency_key: item.idempotencyKey, estimate_nano: item.estimateNano,
      actual_nano: cached ? 0 : null, result: cached ? JSON.stringify(cached.result ?? null) : null, error: null, created_at: now, updated_at: now, not_before: notBefore,
      lease_until: null, started_at: cached ? now : null, finished_at: cached ? now : null, dispatch_seq: null, reservations: null,
      ready_at: notBefore, first_started_at: cached ? now : null, plan: planText,
      estimate_detail: JSON.stringify(item.estimate), actual_detail: cached ? "[]" : null,
    };
    if (cached) {
      this.sql.exec("INSERT INTO finished_outbox (id, optimizer) VALUES (?, ?) ON CONFLICT (id) DO NOTHING", id, plan && hasOptimizerRecords(plan) ? 1 : 0);
      return { request: view(row), duplicate: false };
    }
    this.live.set(id, row);
    if (plan) this.plans.set(id, plan);
    this.index(row);
    return { request: view(row), duplicate: false };
  }

  private index(row: Row): void {
    this.queued.set(row.id, {
      id: row.id, clientId: row.client_id, tier: row.tier, tierPoints: this.tierPointsOf(row.tier), queue: row.queue, createdAt: row.created_at,
      notBefore: row.not_before, recentShare: 0,
    });
    this.rankCache = null;
  }

  private rowOf(id: string): Row | undefined {
    return this.live.get(id) ?? this.sql.exec<Row>("SELECT * FROM requests WHERE id = ?", id).toArray()[0];
  }

  /** Queued ids in dispatch order (ready ones first), with current fairness shares. */
  private rankedOrder(now: number): string[] {
    if (this.rankCache && now - this.rankCache.at < RANK_CACHE_MS) return this.rankCache.order;
    const all = [...this.queued.values()];
    const ready = fairRank(all.filter((q) => q.notBefore <= now), now, this.recentCounts(now), this.weightOf, SCAN_LIMIT)
      .map((q) => q.id);
    const later = all.filter((q) => q.notBefore > now).sort((a, b) => a.notBefore - b.notBefore || a.createdAt - b.createdAt).map((q) => q.id);
    const order = [...ready, ...later];
    this.rankCache = { at: now, order };
    return order;
  }

  /**
   * The ready requests a pass may take, best first: the head of the fair order only (a pass looks at
   * no more than SCAN_LIMIT; ranking the whole backlog behind it was ~5% of a drain's CPU).
   */
  private readyOrder(now: number): string[] {
    const ready: Queued[] = [];
    for (const q of this.queued.values()) if (q.notBefore <= now) ready.push(q);
    return fairRank(ready, now, this.recentCounts(now), this.weightOf, SCAN_LIMIT, true).map((q) => q.id);
  }

  private readyCount(now: number): number {
    let n = 0;
    for (const q of this.queued.values()) if (q.notBefore <= now) n += 1;
    return n;
  }

  /** The earliest not-before time still in the future (deferred or backing-off work), if any. */
  private nextNotBefore(now: number): number | null {
    let next: number | null = null;
    for (const q of this.queued.values()) if (q.notBefore > now && (next === null || q.notBefore < next)) next = q.notBefore;
    return next;
  }

  private positionOf(id: string, now: number): { position: number | null; estimated_wait_ms: number | null } {
    if (!this.queued.has(id)) return { position: null, estimated_wait_ms: null };
    const position = this.rankedOrder(now).indexOf(id) + 1;
    const q = this.queued.get(id)!;
    const rate = this.dispatchLog.filter((d) => d.at > now - RATE_WINDOW_MS).length / (RATE_WINDOW_MS / 1000);
    const avgRunMs = this.durations.length ? this.durations.reduce((a, b) => a + b, 0) / this.durations.length : 1000;
    const byThroughput = rate > 0 ? (position / rate) * 1000 : Math.ceil(position / MAX_IN_FLIGHT) * avgRunMs;
    return { position, estimated_wait_ms: Math.round(Math.max(byThroughput, q.notBefore - now)) };
  }

  /** A client's fair-share weight: the operator's setting, else its tier's. */
  private weightOf = (client: string, tier: Tier): number => this.weights.get(client) ?? this.tierRows.get(tier)?.weight ?? DEFAULT_TIER_WEIGHTS[tier];

  private tierPointsOf(tier: Tier): number {
    return this.tierRows.get(tier)?.points ?? DEFAULT_TIER_POINTS[tier];
  }

  /** Dispatches per client within the fairness window. */
  private recentCounts(now: number): Map<string, number> {
    this.pruneLog(now);
    const counts = new Map<string, number>();
    for (const d of this.dispatchLog) counts.set(d.clientId, (counts.get(d.clientId) ?? 0) + 1);
    // Claims still being admitted count too: a pass that ranks while another pass admits its chunk
    // must not hand the same clients' share out twice.
    for (const id of this.admitting) {
      const clientId = this.live.get(id)?.client_id;
      if (clientId) counts.set(clientId, (counts.get(clientId) ?? 0) + 1);
    }
    return counts;
  }

  /** Fair-share weights of the clients with queued work (operators' settings; the tier's otherwise). */
  private async loadWeights(): Promise<void> {
    const clients = new Set<string>();
    for (const q of this.queued.values()) clients.add(q.clientId);
    const [loaded] = await Promise.all([
      Promise.all([...clients].map(async (id) => [id, (await clientQuota(this.env, id))?.weight ?? null] as const)),
      this.refreshTiers(),
    ]);
    const next = new Map<string, number>();
    for (const [id, weight] of loaded) if (weight !== null) next.set(id, weight);
    if (next.size !== this.weights.size || [...next].some(([id, w]) => this.weights.get(id) !== w)) this.rankCache = null;
    this.weights = next;
  }

  /** Tier points and weights from the tier rows (through the configuration cache); queued work re-ranked on a change. */
  private async refreshTiers(): Promise<void> {
    const tiers = await tierLimits(this.env);
    let tiersChanged = false;
    for (const [tier, row] of tiers) {
      const known = this.tierRows.get(tier);
      if (known?.points === row.priority_points && known.weight === row.weight) continue;
      this.tierRows.set(tier, { points: row.priority_points, weight: row.weight });
      tiersChanged = true;
    }
    if (tiersChanged) {
      for (const q of this.queued.values()) q.tierPoints = this.tierPointsOf(q.tier);
      this.rankCache = null;
    }
  }

  private shares(now: number): Map<string, number> {
    this.pruneLog(now);
    const counts = new Map<string, number>();
    for (const d of this.dispatchLog) counts.set(d.clientId, (counts.get(d.clientId) ?? 0) + 1);
    const total = this.dispatchLog.length;
    return new Map([...counts].map(([client, n]) => [client, total ? n / total : 0]));
  }

  private pruneLog(now: number): void {
    const cutoff = now - FAIRNESS_WINDOW_MS;
    let drop = 0;
    while (drop < this.dispatchLog.length && this.dispatchLog[drop]!.at <= cutoff) drop += 1;
    if (drop) this.dispatchLog.splice(0, drop);
  }

  // --- internals: dispatch ----------------------------------------------------------------------

  /**
   * Take requests out of their queues under a lease, in one write (synchronous: no other pass can take
   * them too).
   */
  private claim(items: Array<{ id: string; template: Template | undefined }>, now: number): Row[] {
    const margin = this.leaseMarginMs();
    const leases = items.map(({ id, template }) => [id, now + (template?.timeoutMs ?? 30_000) + margin] as const);
    // One statement per lease length (per template timeout, usually one): an id list is the cheapest update.
    for (const [leaseUntil, group] of groupBy(leases, ([, until]) => String(until))) {
      this.sql.exec(
        "UPDATE requests SET status = 'dispatching', lease_until = ?, updated_at = ? WHERE id IN (SELECT value FROM json_each(?))",
        Number(leaseUntil), now, JSON.stringify(group.map(([id]) => id)),
      );
    }
    this.rankCache = null;
    return leases.map(([id, leaseUntil]) => {
      this.queued.delete(id);
      this.admitting.add(id);
      return Object.assign(this.live.get(id)!, { status: "dispatching", lease_until: leaseUntil, updated_at: now });
    });
  }

  /**
   * Admit claimed requests: client slots first (batched per client), then every pool amount
   * (batched per pool), all-or-nothing per request. Requests not admitted go back to their queue with
   * anything they got released; requests that can never run fail now.
   */
  private async admit(rows: Row[], templates: Map<string, Template>, pools: Map<string, PoolConfig>, blockedPools: Set<string>, fullClients: Set<string>): Promise<{ rows: Row[]; retryAt: number | null }> {
    let retryAt: number | null = null;
    const requeue: Row[] = [];
    const failNow: Array<{ row: Row; reason: string }> = [];
    const runnable: Row[] = [];
    for (const row of rows) {
      const template = templates.get(row.template);
      const missing = template?.requirements.find((r) => !pools.has(r.pool));
      if (!template) failNow.push({ row, reason: `template ${row.template} no longer exists` });
      else if (missing) failNow.push({ row, reason: `pool ${missing.pool} no longer exists` });
      else runnable.push(row);
    }

    // The client's quota, one call per client: its object admits jobs up to the quota (and burst). A
    // suspended client's work waits in its queue; a deleted client's fails.
    const byClient = groupBy(runnable, (r) => r.client_id);
    const slotted = new Set<string>();
    const waitUntil = new Map<string, number>();
    await Promise.all([...byClient].map(async ([clientId, list]) => {
      const [quota, client] = await Promise.all([clientQuota(this.env, clientId), clientTier(this.env, clientId)]);
      if (!quota || !client) {
        for (const row of list) failNow.push({ row, reason: `client ${clientId} no longer exists` });
        return;
      }
      if (client.status === "suspended") {
        fullClients.add(clientId);
        return;
      }
      const claims = list.map((r) => ({
        jobId: r.id, kind: "request" as const, expiresAt: r.lease_until!,
        pools: Object.fromEntries(templates.get(r.template)!.requirements.map((q) => [q.pool, q.amount])),
      }));
      const decisions = await this.clientStub(clientId).acquireJobs(quota, claims);
      decisions.forEach((d, i) => {
        if (d.ok) slotted.add(list[i]!.id);
        // Over a daily cap per pool: the request waits for the next UTC day.
        else if (d.shortfall.limit === "pool_daily") waitUntil.set(list[i]!.id, dayStart(Date.now()) + 24 * 60 * 60 * 1000);
      });
      if (decisions.some((d) => !d.ok)) fullClients.add(clientId);
    }));

    // Pool reservations, one call per pool.
    const withSlot = runnable.filter((r) => slotted.has(r.id));
    const failing = new Set(failNow.map((f) => f.row.id));
    for (const r of runnable) if (!slotted.has(r.id) && !failing.has(r.id)) requeue.push(r);
    const needs = new Map<string, Array<{ row: Row; amount: number }>>();
    for (const row of withSlot) {
      for (const req of templates.get(row.template)!.requirements) {
        needs.set(req.pool, [...(needs.get(req.pool) ?? []), { row, amount: req.amount }]);
      }
    }
    const held = new Map<string, Held[]>();
    const refused = new Map<string, ErrorBody>();
    await Promise.all([...needs].map(async ([pool, list]) => {
      const results = (await this.poolStub(pool).reserveMany(pools.get(pool)!, list.map(({ row, amount }) => ({
        caller: callerOf(row), amount, ttlMs: Math.max(1000, row.lease_until! - Date.now()), requestId: row.id,
      })))) as Result<ReserveResult>[];
      results.forEach((res, i) => {
        const { row, amount } = list[i]!;
        if (res.ok) held.set(row.id, [...(held.get(row.id) ?? []), { pool, reservationId: res.value.reservationId, amount }]);
        else if (!refused.has(row.id)) refused.set(row.id, res.error);
      });
    }));

    const admitted: Row[] = [];
    const rollback: Array<{ row: Row; holds: Held[] }> = [];
    for (const row of withSlot) {
      const error = refused.get(row.id);
      const holds = held.get(row.id) ?? [];
      if (!error) {
        row.reservations = JSON.stringify(holds);
        admitted.push(row);
        continue;
      }
      rollback.push({ row, holds });
      if (error.code === "rate_limited") {
        const details = error.details as { pool: string; retry_after_ms: number | null };
        blockedPools.add(details.pool);
        const hint = details.retry_after_ms ?? 60_000;
        retryAt = Math.min(retryAt ?? Infinity, Date.now() + Math.max(10, hint));
        requeue.push(row);
      } else if (error.code === "pool_inactive") {
        requeue.push(row);
        retryAt = Math.min(retryAt ?? Infinity, Date.now() + 60_000);
      } else {
        failNow.push({ row, reason: `${error.code}: ${error.message}` });
      }
    }
    if (rollback.length) await this.releaseHolds(rollback.map(({ row, holds }) => ({ row: { ...row, reservations: JSON.stringify(holds) }, actual: {}, final: false })));

    const now = Date.now();
    const claimed = (row: Row) => this.live.get(row.id)?.status === "dispatching";
    for (const row of requeue) if (claimed(row)) this.requeue(row, now, waitUntil.get(row.id) ?? row.not_before, false);
    this.finishAll(failNow.filter(({ row }) => claimed(row)).map(({ row, reason }) => ({ id: row.id, status: "failed", error: reason })), now);
    for (const row of rows) this.admitting.delete(row.id);
    // A request cancelled while it was being admitted gives back what it got.
    const stillClaimed = admitted.filter(claimed);
    const cancelled = admitted.filter((r) => !stillClaimed.includes(r));
    if (cancelled.length) await this.releaseHolds(cancelled.map((row) => ({ row, actual: {}, final: true })));
    const failed = failNow.filter(({ row }) => this.rowOf(row.id)?.status === "failed").map(({ row }) => row);
    if (failed.length) await this.releaseHolds(failed.map((row) => ({ row: { ...row, reservations: null }, actual: {}, final: true })));
    return { rows: stillClaimed, retryAt };
  }

  /**
   * Launch admitted requests: marked running together (one write), then batchable ones of one template
   * sent together (up to their batch size), the rest alone.
   */
  private launchAll(rows: Row[], templates: Map<string, Template>): void {
    this.start(rows, Date.now());
    const batchable = rows.map((row) => ({ row, template: row.template, batchable: (this.plans.get(row.id)?.batchable ?? false) && row.queue === "batch" }));
    const size = (g: typeof batchable) => Math.max(1, this.plans.get(g[0]!.row.id)?.batch_size ?? 1);
    const alone: Row[] = [];
    for (const group of batchGroupsBySize(batchable, size)) {
      if (group.length === 1) alone.push(group[0]!.row);
      else this.launchBatch(group.map((g) => g.row), templates.get(group[0]!.template)!);
    }
    for (const [id, list] of groupBy(alone, (r) => r.template)) {
      const template = templates.get(id)!;
      if ((this.callEach.get(template.binding) ?? 0) > Date.now()) {
        for (const row of list) this.launch(row, template);
        continue;
      }
      // One call carries at most MANY_PARAMS_CHARS of params (an RPC message is limited to 32 MiB);
      // params stored compressed are large by definition and go alone.
      let group: Row[] = [];
      let chars = 0;
      const flush = () => {
        if (group.length === 1) this.launch(group[0]!, template);
        else if (group.length > 1) this.launchMany(group, template);
        group = [];
        chars = 0;
      };
      for (const row of list) {
        if (row.params.startsWith("gz:")) {
          this.launch(row, template);
          continue;
        }
        if (group.length > 0 && chars + row.params.length > MANY_PARAMS_CHARS) flush();
        group.push(row);
        chars += row.params.length;
      }
      flush();
    }
  }

  /** Mark requests running under a new attempt (one dispatch, one sequence number each), in one write. */
  private start(rows: Row[], now: number): void {
    if (rows.length === 0) return;
    const items = rows.map((row) => {
      this.seq += 1;
      Object.assign(row, { status: "running", attempts: row.attempts + 1, started_at: now, first_started_at: row.first_started_at ?? now, updated_at: now, dispatch_seq: this.seq });
      this.dispatchLog.push({ at: now, clientId: row.client_id, queue: row.queue });
      this.count(row.template, "dispatches");
      return [row.id, this.seq, row.reservations];
    });
    this.sql.exec(
      `UPDATE requests SET status = 'running', attempts = attempts + 1, started_at = ?1, first_started_at = COALESCE(first_started_at, ?1),
         updated_at = ?1, dispatch_seq = j.value ->> 1, reservations = j.value ->> 2
       FROM json_each(?2) AS j WHERE requests.id = j.value ->> 0`,
      now, JSON.stringify(items),
    );
  }

  /** Start the worker call; its settlement is batched with others'. Not awaited by the pass. */
  private launch(row: Row, template: Template): void {
    const now = Date.now();
    const handle = new CallHandle();
    this.inflight.set(row.id, handle);
    const attempt = row.attempts;
    void this.invoke(row, template, handle).then((outcome) => {
      if (this.inflight.get(row.id) === handle) this.inflight.delete(row.id);
      this.noteDuration(Date.now() - now);
      this.queueSettlement(row.id, attempt, outcome);
    });
  }

  /**
   * Batching: several requests of one batchable template in one worker invocation; each is settled on
   * its own from its item of the answer. Cancelling one drops its outcome, not the others' call.
   */
  private launchBatch(rows: Row[], template: Template): void {
    const now = Date.now();
    const shared = new CallHandle();
    const attempts = new Map<string, number>();
    // Each request's own handle: cancelling one request aborts nothing the others share.
    const handles = new Map<string, CallHandle>();
    for (const row of rows) {
      attempts.set(row.id, row.attempts);
      handles.set(row.id, new CallHandle());
      this.inflight.set(row.id, handles.get(row.id)!);
    }
    void this.invokeBatch(rows, template, shared).then((outcomes) => {
      this.noteDuration(Date.now() - now);
      for (const row of rows) {
        if (this.inflight.get(row.id) === handles.get(row.id)) this.inflight.delete(row.id);
        this.queueSettlement(row.id, attempts.get(row.id)!, { ...outcomes.get(row.id)!, batched: rows.length });
      }
    });
  }

  /**
   * Several requests of one template in one call to its worker (RPC `runMany(jobs, report)`, README:
   * the worker protocol), each still a request of its own: the worker runs them independently and
   * reports each answer as soon as it has it, and each request keeps its own deadline and stop handle,
   * so one slow or failing request holds up and fails no other. One call instead of one per request
   * was about a third of the runtime's CPU per dispatch while draining a backlog (bench/README.md). A
   * worker without `runMany` gets one call per request, and is remembered for a while.
   */
  private launchMany(rows: Row[], template: Template): void {
    const startedAt = Date.now();
    type Entry = { row: Row; attempt: number; handle: CallHandle; deadline: { at: number; fire: () => void } };
    const pending = new Map<number, Entry>();
    let allEnded!: () => void;
    const ended = new Promise<void>((resolve) => {
      allEnded = resolve;
    });
    const end = (i: number, outcome: Outcome) => {
      const entry = pending.get(i);
      if (!entry) return; // answered already, or timed out or cancelled before its line came
      pending.delete(i);
      this.deadlines.remove(entry.deadline); // a no-op for the deadline that fired
      if (this.inflight.get(entry.row.id) === entry.handle) this.inflight.delete(entry.row.id);
      this.noteDuration(Date.now() - startedAt);
      this.queueSettlement(entry.row.id, entry.attempt, outcome);
      if (pending.size === 0) allEnded();
    };
    rows.forEach((row, i) => {
      const deadline = this.deadlines.add(startedAt + template.timeoutMs, () => end(i, { ok: false, error: `worker timed out after ${template.timeoutMs} ms` }));
      const entry: Entry = { row, attempt: row.attempts, handle: new CallHandle(), deadline };
      entry.handle.stopped.catch(() => end(i, { ok: false, error: "cancelled", retryable: false }));
      pending.set(i, entry);
      this.inflight.set(row.id, entry.handle);
    });
    // The worker reports answers as its requests end, several at a time when they end together.
    const report = (answers: unknown) => {
      if (!Array.isArray(answers)) return;
      for (const a of answers as Array<(ItemAnswer & { i?: unknown }) | null>) {
        if (a && typeof a.i === "number") end(a.i, itemOutcome(a));
      }
      // Answers that came together are a batch already: settle them now rather than on the timer,
      // which a busy event loop can hold back for seconds.
      this.settleNow();
    };
    void (async () => {
      try {
        const binding = (this.env as unknown as Record<string, WorkerBinding | undefined>)[template.binding];
        if (!binding) throw new TypeError('does not implement the method "runMany"'); // launch reports the missing binding
        // Every request may end (deadline, cancel) before the worker's call does: then it is not waited for.
        await Promise.race([binding.runMany(await Promise.all(rows.map(jobOf)), report), ended]);
        for (const i of [...pending.keys()]) end(i, { ok: false, error: "worker failed: runMany ended without answering this request" });
      } catch (err) {
        if (lacksMethod(err, "runMany")) {
          // Not this worker's protocol: the same requests, one call each (their deadlines start now).
          this.callEach.set(template.binding, Date.now() + RPC_PROBE_MS);
          for (const [i, entry] of [...pending]) {
            pending.delete(i);
            this.deadlines.remove(entry.deadline);
            if (this.inflight.get(entry.row.id) === entry.handle) this.launch(entry.row, template);
          }
          return;
        }
        const reason = err instanceof WorkerAnswer ? err.message : `worker failed: ${(err instanceof Error ? err.message : String(err)).slice(0, 300)}`;
        for (const i of [...pending.keys()]) end(i, { ok: false, error: reason });
      }
    })();
  }

  private noteDuration(ms: number): void {
    this.durations.push(ms);
    if (this.durations.length > 100) this.durations.shift();
  }

  /**
   * Call the template's worker with a deadline. Never rejects: every failure is an outcome.
   */
  private async invoke(row: Row, template: Template, handle: CallHandle): Promise<Outcome> {
    const answer = await this.call(template, handle, row.id, await jobOf(row));
    if (!answer.ok) return answer;
    const parsed = answer.body as { result?: unknown; usage?: Record<string, number> } | null;
    return { ok: true, result: parsed?.result ?? null, usage: parsed?.usage ?? {} };
  }

  /**
   * The batch protocol: `{ "jobs": [job...] }` in (each job as a single call's), `{ "results":
   * [{ result, usage, error? }...] }` out, in the same order.
   */
  private async invokeBatch(rows: Row[], template: Template, handle: CallHandle): Promise<Map<string, Outcome>> {
    const jobs = await Promise.all(rows.map(jobOf));
    const answer = await this.call(template, handle, rows[0]!.id, { jobs });
    const out = new Map<string, Outcome>();
    if (!answer.ok) {
      for (const row of rows) out.set(row.id, answer);
      return out;
    }
    const results = (answer.body as { results?: ItemAnswer[] } | null)?.results ?? [];
    for (const [i, row] of rows.entries()) {
      const r = results[i];
      if (!r) out.set(row.id, { ok: false, error: "worker answered the batch without this request" });
      else out.set(row.id, itemOutcome(r));
    }
    return out;
  }

  /**
   * Hand a job (or a batch) to the template's worker within its deadline: over RPC (`run(job)`) when the
   * worker has it, else `POST /run`. RPC skips HTTP framing and JSON on both sides (about a third of
   * the call's cost under workerd; bench/README.md). A worker without `run` is remembered for a while.
   * The deadlines share one timer (see Deadlines): a timer, an AbortController and a listener per call
   * were about 5% of the service's CPU while draining, and workerd caps live timers per object at 10,000.
   */
  private async call(template: Template, handle: CallHandle, requestId: string, job: unknown): Promise<(Outcome & { ok: false }) | { ok: true; body: unknown }> {
    const binding = (this.env as unknown as Record<string, WorkerBinding | undefined>)[template.binding];
    if (!binding || typeof binding.fetch !== "function") {
      return { ok: false, error: `no service binding ${template.binding} for template ${template.id}`, retryable: false };
    }
    let timedOut = false;
    const deadline = this.deadlines.add(Date.now() + template.timeoutMs, () => {
      timedOut = true;
      handle.abort(new Error("deadline"));
    });
    try {
      return { ok: true, body: await this.send(binding, template.binding, job, requestId, handle) };
    } catch (err) {
      if (timedOut) return { ok: false, error: `worker timed out after ${template.timeoutMs} ms` };
      if (handle.aborted) return { ok: false, error: "cancelled", retryable: false };
      if (err instanceof WorkerAnswer) return { ok: false, error: err.message };
      return { ok: false, error: `worker failed: ${(err instanceof Error ? err.message : String(err)).slice(0, 300)}` };
    } finally {
      this.deadlines.remove(deadline);
    }
  }

  /**
   * The worker's answer to a job: by RPC unless its binding is marked HTTP-only, by HTTP when it is (or
   * when RPC finds no `run`, which marks it). Rejects with the worker's error, or when `stopped` does.
   */
  private async send(binding: WorkerBinding, name: string, job: unknown, requestId: string, handle: CallHandle): Promise<unknown> {
    if ((this.fetchOnly.get(name) ?? 0) <= Date.now()) {
      try {
        return await Promise.race([binding.run(job), handle.stopped]);
      } catch (err) {
        if (!lacksMethod(err, "run")) throw err;
        this.fetchOnly.set(name, Date.now() + RPC_PROBE_MS);
      }
    }
    const res = await Promise.race([binding.fetch("https://worker.internal/run", {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": requestId },
      body: JSON.stringify(job),
      signal: handle.signal(),
    }), handle.stopped]);
    const text = await res.text();
    if (!res.ok) throw new WorkerAnswer(`worker answered ${res.status}: ${text.slice(0, 300)}`);
    return JSON.parse(text);
  }

  private queueSettlement(id: string, attempt: number, outcome: Outcome): void {
    this.settleBuffer.push({ id, attempt, outcome });
    if (this.settleBuffer.length >= SETTLE_BATCH) return this.settleNow();
    this.settleTimer ??= setTimeout(() => {
      this.settleTimer = null;
      void this.settle();
    }, SETTLE_DELAY_MS);
  }

  /** Settle what has ended, now (the timer, if armed, is not needed any more). */
  private settleNow(): void {
    if (this.settleTimer) clearTimeout(this.settleTimer);
    this.settleTimer = null;
    if (this.settleBuffer.length) void this.settle();
  }

  /**
   * Settle finished calls in one batch: consume what each worker reports (never more than reserved;
   * a pool it does not report is taken as fully used), refund the rest, free client slots, record the
   * outcome, then wake the dispatcher for the capacity freed.
   */
  private async settle(): Promise<void> {
    const batch = this.settleBuffer.splice(0);
    const live: Array<{ row: Row; outcome: Outcome; actual: Record<string, number> }> = [];
    for (const { id, attempt, outcome } of batch) {
      const row = this.rowOf(id);
      // Cancelled meanwhile (already released), or an attempt whose lease was reclaimed: not ours to settle.
      if (!row || row.status !== "running" || row.attempts !== attempt) continue;
      const holds = JSON.parse(row.reservations ?? "[]") as Held[];
      const actual: Record<string, number> = {};
      if (outcome.ok) {
        for (const h of holds) {
          const reported = outcome.usage?.[h.pool];
          actual[h.pool] = typeof reported === "number" && Number.isInteger(reported) && reported >= 0 ? Math.min(h.amount, reported) : h.amount;
        }
      }
      live.push({ row, outcome, actual });
    }
    const final = (l: (typeof live)[number]) => l.outcome.ok || l.outcome.retryable === false || l.row.attempts >= l.row.max_attempts;
    // Results stored compressed above the plan's threshold (the work is done before the synchronous part).
    const stored = new Map<string, { text: string; bytesSaved: number }>();
    await Promise.all(live.filter((l) => l.outcome.ok).map(async ({ row, outcome }) => {
      let text = JSON.stringify(outcome.result ?? null);
      if (text.length > MAX_RESULT_CHARS) text = JSON.stringify({ truncated: true, chars: text.length });
      const threshold = this.plans.get(row.id)?.compress_threshold_bytes ?? null;
      if (threshold === null) return void stored.set(row.id, { text, bytesSaved: 0 });
      const c = await compressText(text, threshold);
      stored.set(row.id, { text: c.stored, bytesSaved: c.bytesSaved });
    }));
    const used = await this.releaseHolds(live.map((l) => ({ row: l.row, actual: l.actual, final: final(l) })));
    const now = Date.now();
    const leaders: Array<{ row: Row; plan: StoredPlan; result: string; actualNano: number }> = [];
    const finished: Finished[] = [];
    for (const { row, outcome } of live) {
      this.noteOutcome(row, outcome, now);
      if (outcome.error !== "cancelled") this.count(row.template, outcome.ok ? "completions" : timedOut(outcome) ? "timeouts" : "failures");
      if (outcome.ok) {
        const { text: result, bytesSaved } = stored.get(row.id)!;
        const actual = used.get(row.id) ?? [];
        const actualNano = actual.reduce((sum, p) => sum + p.cost_nano, 0);
        const plan = this.plans.get(row.id);
        if (plan?.cache_key) leaders.push({ row, plan, result, actualNano });
        // The plan is rewritten only when the run changed it (most requests run alone, nothing compressed).
        const batched = outcome.batched ?? 1;
        finished.push({
          id: row.id, status: "completed", result, actual: actualNano, actualDetail: JSON.stringify(actual),
          plan: plan && (bytesSaved > 0 || batched > 1) ? { ...plan, bytes_saved: plan.bytes_saved + bytesSaved, batched } : undefined,
        });
      } else if (outcome.retryable !== false && row.attempts < row.max_attempts) {
        this.requeue(row, now, now + backoffMs(row.attempts), true, outcome.error);
        this.count(row.template, "retries");
        log.warn("dispatch_retry", { request_id: row.id, attempt: row.attempts, error: outcome.error });
      } else {
        finished.push({ id: row.id, status: "failed", error: outcome.error ?? "failed" });
        log.warn("request_failed", { request_id: row.id, client_id: row.client_id, attempts: row.attempts, error: outcome.error });
      }
    }
    this.finishAll(finished, now);
    if (leaders.length) {
      const waiting = this.queuedByCacheKey(new Set(leaders.map((l) => l.plan.cache_key!)));
      for (const leader of leaders) await this.completeFollowers(leader, waiting.get(leader.plan.cache_key!) ?? []);
    }
    this.saveCounters();
    if (live.length) this.ensureAlarm(Date.now());
  }

  /** Queued requests with one of these cache keys, by key: one scan of the plans for a settlement's leaders. */
  private queuedByCacheKey(keys: Set<string>): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const [id, plan] of this.plans) {
      if (!plan.cache_key || !keys.has(plan.cache_key) || this.live.get(id)?.status !== "queued") continue;
      out.set(plan.cache_key, [...(out.get(plan.cache_key) ?? []), id]);
    }
    return out;
  }

  /**
   * A cacheable request completed: the identical requests queued behind it (same cache key) complete
   * with its result, at no cost and without dispatch. Their money leaves flight.
   */
  private async completeFollowers(leader: { row: Row; plan: StoredPlan; result: string; actualNano: number }, candidates: string[]): Promise<void> {
    const now = Date.now();
    const followers: Row[] = [];
    const finished: Finished[] = [];
    for (const id of candidates) {
      const row = this.live.get(id);
      const plan = this.plans.get(id);
      // Still queued: another leader of the same key may have completed it already.
      if (id === leader.row.id || !plan || row?.status !== "queued") continue;
      followers.push(row);
      finished.push({
        id, status: "completed", result: leader.result, actual: 0, actualDetail: "[]", startedAt: now,
        plan: { ...plan, cached: true, strategies: [...plan.strategies, { strategy: "caching", saved_nano: leader.actualNano, detail: `coalesced with ${leader.row.id}, which ran it` }] },
      });
    }
    this.finishAll(finished, now);
    if (followers.length === 0) return;
    log.info("requests_coalesced", { leader: leader.row.id, followers: followers.length });
    await Promise.all([...groupBy(followers, (r) => r.client_id)].map(async ([clientId, list]) => {
      await this.clientStub(clientId).settle(await budgetLimit(this.env, clientId), list.map((r) => ({ requestId: r.id, events: [] })));
    }));
  }

  /**
   * Release reservations (consuming `actual` per pool) and client slots for these rows, and settle their
   * money with their clients: a final item's estimate leaves flight, and what was used is spent. Returns
   * what each request used per pool.
   */
  private async releaseHolds(items: Array<{ row: Row; actual: Record<string, number>; final: boolean }>): Promise<Map<string, PoolCost[]>> {
    const pools = await poolConfigs(this.env);
    const byPool = new Map<string, Array<{ row: Row; hold: Held; used: number }>>();
    for (const { row, actual } of items) {
      for (const hold of JSON.parse(row.reservations ?? "[]") as Held[]) {
        byPool.set(hold.pool, [...(byPool.get(hold.pool) ?? []), { row, hold, used: actual[hold.pool] ?? 0 }]);
      }
    }
    const used = new Map<string, PoolCost[]>();
    const events = new Map<string, SpendEvent[]>();
    await Promise.all([...byPool].map(async ([pool, list]) => {
      const cfg = pools.get(pool);
      if (!cfg) return;
      const results = (await this.poolStub(pool).releaseMany(cfg, list.map(({ row, hold, used }) => ({ caller: callerOf(row), reservationId: hold.reservationId, actualUsed: used })))) as Result<ReleaseResult>[];
      results.forEach((r, i) => {
        const { row } = list[i]!;
        if (!r.ok) {
          log.warn("release_refused", { request_id: row.id, pool, error: r.error.code });
          return;
        }
        used.set(row.id, [...(used.get(row.id) ?? []), { pool, units: r.value.consumed, cost_nano: r.value.costNano }]);
        if (r.value.eventId) events.set(row.id, [...(events.get(row.id) ?? []), { eventId: r.value.eventId, costNano: r.value.costNano, at: r.value.at, pool, units: r.value.consumed }]);
      });
    }));
    await Promise.all([...groupBy(items, (i) => i.row.client_id)].map(async ([clientId, list]) => {
      const settlements: Settlement[] = list.map(({ row, final }) => ({ requestId: row.id, events: events.get(row.id) ?? [], keepInFlight: !final }));
      await this.clientStub(clientId).settle(await budgetLimit(this.env, clientId), settlements);
    }));
    return used;
  }

  private requeue(row: Row, now: number, notBefore: number, failedAttempt: boolean, error?: string): void {
    this.sql.exec(
      "UPDATE requests SET status = 'queued', lease_until = NULL, reservations = NULL, not_before = ?, updated_at = ?, error = COALESCE(?, error) WHERE id = ?",
      notBefore, now, failedAttempt ? (error ?? null) : null, row.id,
    );
    const live = this.live.get(row.id) ?? row;
    Object.assign(live, {
      status: "queued", lease_until: null, reservations: null, not_before: notBefore, updated_at: now,
      error: (failedAttempt ? (error ?? null) : null) ?? live.error,
    });
    this.live.set(live.id, live);
    this.index(live);
    if (failedAttempt) this.resolveWaiters(row.id);
  }

  private finish(id: string, status: Finished["status"], now: number, fields: Omit<Finished, "id" | "status">): void {
    this.finishAll([{ id, status, ...fields }], now);
  }

  /**
   * Record requests' end (and queue them for the request log) in two writes, then update the copies
   * in memory and answer whoever waits on them. A plan given replaces the stored one; `startedAt`
   * marks requests that never ran (coalesced) as started now.
   */
  private finishAll(items: Finished[], now: number): void {
    if (items.length === 0) return;
    // Positional arrays: each `->> n` re-reads its element, and short arrays read faster than objects.
    const json = JSON.stringify(items.map((f) => [
      f.id, f.status, f.result ?? null, f.actual ?? null, f.actualDetail ?? null, f.error ?? null,
      f.plan ? JSON.stringify(f.plan) : null, f.startedAt ?? null,
      f.status === "completed" && hasOptimizerRecords(f.plan ?? this.plans.get(f.id)) ? 1 : 0,
    ]));
    // Each `->>` parses its element again (~1.5 us a column here): the usual batch, with no plan to
    // replace and nothing started late, leaves those columns out.
    const full = items.some((f) => f.plan !== undefined || f.startedAt !== undefined);
    this.sql.exec(
      full
        ? `UPDATE requests SET status = j.value ->> 1, result = j.value ->> 2, actual_nano = j.value ->> 3, actual_detail = j.value ->> 4,
             error = j.value ->> 5, plan = COALESCE(j.value ->> 6, plan), started_at = COALESCE(j.value ->> 7, started_at),
             first_started_at = COALESCE(j.value ->> 7, first_started_at), finished_at = ?1, updated_at = ?1, lease_until = NULL
           FROM json_each(?2) AS j WHERE requests.id = j.value ->> 0`
        : `UPDATE requests SET status = j.value ->> 1, result = j.value ->> 2, actual_nano = j.value ->> 3, actual_detail = j.value ->> 4,
             error = j.value ->> 5, finished_at = ?1, updated_at = ?1, lease_until = NULL
           FROM json_each(?2) AS j WHERE requests.id = j.value ->> 0`,
      now, json,
    );
    this.sql.exec("INSERT INTO finished_outbox (id, optimizer) SELECT value ->> 0, value ->> 8 FROM json_each(?) WHERE true ON CONFLICT (id) DO NOTHING", json);
    for (const f of items) {
      const live = this.live.get(f.id);
      if (live) {
        Object.assign(live, {
          status: f.status, result: f.result ?? null, actual_nano: f.actual ?? null, actual_detail: f.actualDetail ?? null, error: f.error ?? null,
          finished_at: now, updated_at: now, lease_until: null,
        });
        if (f.plan) live.plan = JSON.stringify(f.plan);
        if (f.startedAt !== undefined) Object.assign(live, { started_at: f.startedAt, first_started_at: f.startedAt });
      }
      this.queued.delete(f.id);
      this.resolveWaiters(f.id);
      this.live.delete(f.id);
      this.plans.delete(f.id);
    }
  }

  /**
   * Requests whose lease ended without settling (a pass or the object died mid-way, or a worker call
   * outlived its deadline and margin) go back to their queue; a running one counts its attempt. Their
   * reservations and slots expire on their own.
   */
  private reclaimLeases(now: number): Row[] {
    const failed: Row[] = [];
    // Every pass looks: walk the live requests without copying them (10,000 queued is a 10,000-item copy).
    const stale: Row[] = [];
    for (const r of this.live.values()) {
      if ((r.status === "dispatching" || r.status === "running") && r.lease_until !== null && r.lease_until <= now && !this.admitting.has(r.id)) stale.push(r);
    }
    for (const row of stale) {
      this.inflight.get(row.id)?.abort(new Error("lease expired"));
      this.inflight.delete(row.id);
      if (row.status === "running" && row.attempts >= row.max_attempts) {
        this.finish(row.id, "failed", now, { error: "lease expired: the dispatcher stopped while the request ran" });
        failed.push(row);
      } else {
        if (row.status === "running") this.count(row.template, "retries");
        this.requeue(row, now, now, row.status === "running", "lease expired; returned to the queue");
      }
      log.warn("lease_expired", { request_id: row.id, was: row.status, attempts: row.attempts });
    }
    this.saveCounters();
    return failed;
  }

  /**
   * Forget up to `limit` requests finished before `cutoff` whose request-log entry has reached D1
   * (reports read D1). The retention run calls it each cron minute with the "requests" setting.
   */
  purgeFinished(cutoff: number, limit: number): number {
    // Counted by RETURNING: rowsWritten would include index writes.
    const purged = this.sql.exec(
      `DELETE FROM requests WHERE id IN (
         SELECT id FROM requests WHERE finished_at < ? AND id NOT IN (SELECT id FROM finished_outbox) ORDER BY finished_at LIMIT ?) RETURNING 1`,
      cutoff, limit,
    ).toArray().length;
    if (purged) log.info("requests_purged", { count: purged });
    return purged;
  }

  /** Remember a worker call's outcome for the failure and timeout alerts. */
  private noteOutcome(row: Row, outcome: Outcome, now: number): void {
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
  private async checkAlerts(now: number): Promise<void> {
    if (!this.alertsDirty && now - this.alertsCheckedAt < ALERT_CHECK_MS) return;
    this.alertsCheckedAt = now;
    this.alertsDirty = false;
    const oldest = new Map<QueueName, number>();
    const depth = new Map<QueueName, number>();
    for (const q of this.queued.values()) {
      depth.set(q.queue, (depth.get(q.queue) ?? 0) + 1);
      if (q.createdAt < (oldest.get(q.queue) ?? Infinity)) oldest.set(q.queue, q.createdAt);
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

  private count(template: string, counter: keyof DispatchCounters): void {
    let c = this.counters.get(template);
    if (!c) {
      c = { dispatches: 0, completions: 0, failures: 0, retries: 0, timeouts: 0 };
      this.counters.set(template, c);
    }
    c[counter] += 1;
    this.countersDirty = true;
  }

  /** One write for every count since the last one; called right after the writes that counted. */
  private saveCounters(): void {
    if (!this.countersDirty) return;
    this.countersDirty = false;
    this.sql.exec(
      "INSERT INTO state (k, v) VALUES ('counters', ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
      JSON.stringify(Object.fromEntries(this.counters)),
    );
  }

  /**
   * For completed requests the optimizer touched: their savings (one row per strategy, idempotent by
   * request and strategy) and, for the leaders of cacheable work, their result into the result cache.
   * Delivered with the request log, so a failure retries both.
   */
  private async deliverOptimizerRecords(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    const rows = this.sql.exec<{ id: string; client_id: string; template: string; plan: string | null; result: string | null; actual_nano: number | null; finished_at: number }>(
      "SELECT id, client_id, template, plan, result, actual_nano, finished_at FROM requests WHERE id IN (SELECT value FROM json_each(?)) AND plan IS NOT NULL",
      JSON.stringify(ids),
    ).toArray();
    const savings: SavingsRow[] = [];
    for (const r of rows) {
      const plan = JSON.parse(r.plan!) as StoredPlan;
      for (const saving of savingsOf(plan)) savings.push({ requestId: r.id, clientId: r.client_id, template: r.template, at: r.finished_at, ...saving });
      if (cachesResult(plan) && r.result !== null) {
        const text = r.result.startsWith("gz:") ? await decompressText(r.result) : r.result;
        await cachePut(this.env, plan.cache_key, r.template, JSON.parse(text), r.actual_nano ?? 0, plan.cache_ttl_ms, Date.now());
      }
    }
    if (savings.length) await recordSavings(this.env, savings);
  }

  /**
   * Deliver finished requests (queued by finish and cancel in the same SQLite write as their status) to
   * D1's request_log for reports: one upsert per batch, keyed by request id, then drop them from the
   * outbox. Run at the end of a pass, so after each settlement batch. A failure leaves them for a later
   * pass, after a backoff; it never fails the pass.
   */
  private async flushFinished(): Promise<void> {
    if (this.finishedFlushing || Date.now() < this.finishedRetryAt) return;
    this.finishedFlushing = true;
    try {
      for (;;) {
        const rows = this.sql.exec<{ outbox_id: string; optimizer: number } & { [K in keyof FinishedRequest]: SqlStorageValue }>(
          `SELECT o.id AS outbox_id, o.optimizer, r.id, r.client_id, r.template, r.queue, r.status, r.estimate_nano, r.actual_nano, r.attempts,
                  r.created_at, r.finished_at, substr(r.error, 1, ?) AS error
           FROM finished_outbox o LEFT JOIN requests r ON r.id = o.id ORDER BY o.rowid LIMIT ?`,
          MAX_ERROR_CHARS, FINISHED_BATCH,
        ).toArray();
        if (rows.length === 0) break;
        // A request no longer stored has nothing to report: just drop its entry.
        await insertRequestLog(this.env.DB, rows.filter((r) => r.id !== null).map(({ outbox_id: _, optimizer: __, ...r }) => r as unknown as FinishedRequest));
        await this.deliverOptimizerRecords(rows.filter((r) => r.id !== null && r.status === "completed" && r.optimizer === 1).map((r) => String(r.id)));
        this.sql.exec("DELETE FROM finished_outbox WHERE id IN (SELECT value FROM json_each(?))", JSON.stringify(rows.map((r) => r.outbox_id)));
        if (rows.length < FINISHED_BATCH) break;
      }
      this.finishedFailures = 0;
    } catch (err) {
      this.finishedFailures += 1;
      const backoff = Math.min(60_000, 500 * 2 ** this.finishedFailures);
      this.finishedRetryAt = Date.now() + backoff;
      log.warn("request_log_flush_failed", { attempt: this.finishedFailures, retry_in_ms: backoff, error: String(err) });
    } finally {
      this.finishedFlushing = false;
    }
  }

  private waitFor(id: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.waiters.set(id, [...(this.waiters.get(id) ?? []), () => {
        clearTimeout(timer);
        resolve();
      }]);
    });
  }

  private resolveWaiters(id: string): void {
    const list = this.waiters.get(id);
    if (!list) return;
    this.waiters.delete(id);
    const row = this.rowOf(id);
    if (row) for (const fn of list) fn(view(row));
  }

  private leaseMarginMs(): number {
    return Number((this.env as unknown as Record<string, string>).LEASE_MARGIN_MS ?? 5000) || 5000;
  }

  private ensureAlarm(at: number): void {
    // An alarm already due no later than `at` will do, unless it is overdue (a failed alarm waits in
    // the runtime's retry backoff): then set it again.
    if (this.alarmAt !== null && this.alarmAt <= at && this.alarmAt >= Date.now() - 1000) return;
    this.alarmAt = at;
    void this.ctx.storage.setAlarm(at);
  }

  private poolStub(pool: string) {
    return poolStub(this.env, pool);
  }

  private clientStub(clientId: string) {
    return this.env.CLIENT.get(this.env.CLIENT.idFromName(clientId));
  }
}

export function newRequestId(): string {
  return timeOrderedId("req");
}

/** A repeat of an idempotency key with another spec; a request made before hashes (NULL) never conflicts. */
function specConflict(prior: Row, specHash: string | null): boolean {
  const stored = prior.spec_hash;
  return typeof stored === "string" && specHash !== null && stored !== specHash;
}

function timedOut(outcome: Outcome): boolean {
  return !outcome.ok && (outcome.error ?? "").includes("timed out");
}

function callerOf(row: Row): Caller {
  return { clientId: row.client_id, tier: row.tier, via: "scheduler" };
}

/** Attainment of one tier and queue over a window (see slaSummary). */
export interface SlaGroup extends Attainment {
  tier: Tier;
  queue: QueueName;
  target: SlaTarget;
  breached_examples: string[];
}

function slaRecord(row: Row): SlaRecord {
  return {
    id: row.id, client_id: row.client_id, tier: row.tier, queue: row.queue, status: row.status,
    ready_at: row.ready_at ?? row.created_at, first_started_at: row.first_started_at ?? null, finished_at: row.finished_at,
  };
}

function targetFor(targets: SlaTarget[], tier: Tier, queue: QueueName): SlaTarget {
  return targets.find((t) => t.tier === tier && t.queue === queue) ?? defaultTarget(tier, queue);
}

function view(row: Row): RequestView {
  const plan = row.plan ? (JSON.parse(row.plan) as StoredPlan) : null;
  return {
    id: row.id,
    client_id: row.client_id,
    template: row.template,
    downgraded_from: plan?.downgraded_from ?? null,
    downgrade_reason: plan?.downgrade_reason ?? null,
    queue: row.queue,
    status: row.status,
    priority: row.priority,
    attempts: row.attempts,
    max_attempts: row.max_attempts,
    idempotency_key: row.idempotency_key,
    estimate_nano: row.estimate_nano,
    actual_nano: row.actual_nano,
    estimate: row.estimate_detail === null ? [] : (JSON.parse(row.estimate_detail) as PoolCost[]),
    actual: row.actual_detail === null ? null : (JSON.parse(row.actual_detail) as PoolCost[]),
    result: row.result === null ? null : JSON.parse(row.result),
    error: row.error,
    created_at: row.created_at,
    updated_at: row.updated_at,
    not_before: row.not_before,
    started_at: row.started_at,
    finished_at: row.finished_at,
    dispatch_seq: row.dispatch_seq,
    optimizer: optimizerView(plan, row.status),
  };
}

/** The savings rows a completed request's plan records (one per strategy, and for compression and batching). */
function savingsOf(plan: StoredPlan): Array<Pick<SavingsRow, "strategy" | "savedNano" | "bytesSaved">> {
  const rows: Array<Pick<SavingsRow, "strategy" | "savedNano" | "bytesSaved">> = plan.strategies.map((st) => ({ strategy: st.strategy, savedNano: st.saved_nano }));
  if (plan.bytes_saved > 0) rows.push({ strategy: "compression", savedNano: 0, bytesSaved: plan.bytes_saved });
  if ((plan.batched ?? 1) > 1) rows.push({ strategy: "batching", savedNano: 0 });
  return rows;
}

/** Whether a completed request's result goes into the result cache: it ran cacheable work itself. */
function cachesResult(plan: StoredPlan): plan is StoredPlan & { cache_key: string } {
  return Boolean(plan.cache_key) && !plan.cached;
}

/** Whether a completed request has optimizer records to deliver (most plans decide nothing). */
function hasOptimizerRecords(plan: StoredPlan | undefined): boolean {
  return plan !== undefined && (cachesResult(plan) || savingsOf(plan).length > 0);
}

/** batchGroups with the batch size of each template's requests (their plans carry it). */
function batchGroupsBySize<T extends { template: string; batchable: boolean }>(items: T[], size: (group: T[]) => number): T[][] {
  const out: T[][] = [];
  for (const group of batchGroups(items, Number.MAX_SAFE_INTEGER)) {
    const n = size(group);
    for (let i = 0; i < group.length; i += n) out.push(group.slice(i, i + n));
  }
  return out;
}

/** A request's params as JSON text (stored compressed above the plan's threshold). */
async function paramsOf(row: Row): Promise<string> {
  return row.params.startsWith("gz:") ? decompressText(row.params) : row.params;
}

/** What the worker gets for one request (the worker protocol, README). */
async function jobOf(row: Row): Promise<{ request_id: string; template: string; params: unknown; attempt: number; allotted: Record<string, number> }> {
  return { request_id: row.id, template: row.template, params: JSON.parse(await paramsOf(row)), attempt: row.attempts, allotted: allottedOf(row) };
}

/** A worker's non-2xx HTTP answer: a failed attempt, reported as it came. */
class WorkerAnswer extends Error {}

/** One request's answer in a batch (`results[i]`) or a runMany report. */
type ItemAnswer = { result?: unknown; usage?: Record<string, number>; error?: unknown };

function itemOutcome(a: ItemAnswer): Outcome {
  return a.error ? { ok: false, error: `worker failed: ${String(a.error).slice(0, 300)}` } : { ok: true, result: a.result ?? null, usage: a.usage ?? {} };
}

/** The runtime's answer to an RPC call of a method the worker does not have. */
function lacksMethod(err: unknown, name: string): boolean {
  return err instanceof TypeError && err.message.includes(`does not implement the method "${name}"`);
}

/**
 * One worker call's stop: cancelled (a cancel, a lease that ended) or past its deadline. `stopped`
 * rejects with the reason. An AbortSignal is made only for a call over HTTP, which fetch needs.
 */
class CallHandle {
  readonly stopped: Promise<never>;
  private reason: unknown = undefined;
  private stop!: (reason: unknown) => void;
  private controller: AbortController | null = null;

  constructor() {
    this.stopped = new Promise<never>((_, reject) => {
      this.stop = reject;
    });
    // A call may end before anyone races this; a later stop must not be an unhandled rejection.
    this.stopped.catch(() => undefined);
  }

  get aborted(): boolean {
    return this.reason !== undefined;
  }

  abort(reason: unknown = new Error("aborted")): void {
    if (this.reason !== undefined) return;
    this.reason = reason;
    this.stop(reason);
    this.controller?.abort(reason);
  }

  signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.reason !== undefined) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }
}

/**
 * Deadlines on one timer, armed for the earliest. Calls share a template's timeout, so a new deadline
 * is rarely the earliest and arms nothing; a call that ends removes its entry.
 */
class Deadlines {
  private entries = new Set<{ at: number; fire: () => void }>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private timerAt = Infinity;

  add(at: number, fire: () => void): { at: number; fire: () => void } {
    const entry = { at, fire };
    this.entries.add(entry);
    if (at < this.timerAt) this.arm(at);
    return entry;
  }

  remove(entry: { at: number; fire: () => void }): void {
    this.entries.delete(entry);
    if (this.entries.size === 0 && this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
      this.timerAt = Infinity;
    }
  }

  private arm(at: number): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => this.sweep(), Math.max(0, at - Date.now()));
  }

  private sweep(): void {
    this.timer = null;
    this.timerAt = Infinity;
    const now = Date.now();
    let next = Infinity;
    for (const entry of [...this.entries]) {
      if (entry.at <= now) {
        this.entries.delete(entry);
        entry.fire();
      } else {
        next = Math.min(next, entry.at);
      }
    }
    if (next < Infinity) this.arm(next);
  }
}

/** A service binding to a template's worker: HTTP always, RPC `run` and `runMany` when the worker has them. */
interface WorkerBinding {
  fetch: Fetcher["fetch"];
  run(job: unknown): Promise<unknown>;
  runMany(jobs: unknown[], report: (answers: unknown) => void): Promise<unknown>;
}

function allottedOf(row: Row): Record<string, number> {
  return Object.fromEntries((JSON.parse(row.reservations ?? "[]") as Held[]).map((h) => [h.pool, h.amount]));
}

function optimizerView(p: StoredPlan | null, status: RequestStatus): RequestView["optimizer"] {
  if (!p) return null;
  return {
    requested_template: p.requested_template,
    // A request that ran alone completes without rewriting its plan: batched null there means 1.
    strategies: p.strategies, cached: p.cached, batch_size: p.batched ?? (status === "completed" && !p.cached ? 1 : null),
  };
}

/** A view whose stored result may be compressed: decompressed for the caller. */
async function viewOf(row: Row): Promise<RequestView> {
  if (typeof row.result === "string" && row.result.startsWith("gz:")) return view({ ...row, result: await decompressText(row.result) });
  return view(row);
}

function groupBy<T>(items: T[], key: (t: T) => string): Map<string, T[]> {
  const map = new Map<string, T[]>();
  for (const item of items) map.set(key(item), [...(map.get(key(item)) ?? []), item]);
  return map;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
}

function fail(code: ErrorBody["code"], message: string, details?: Record<string, unknown>): { ok: false; error: ErrorBody } {
  return { ok: false, error: details ? { code, message, details } : { code, message } };
}

export type { PoolAmount };
