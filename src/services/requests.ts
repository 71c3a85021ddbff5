import { appendTo } from "../domain/groups";
import { canonicalJson } from "../domain/json";
import { QUEUES, type QueueName } from "../domain/priority";
import type { Caller } from "../domain/types";
import { AppError, type ErrorBody } from "../errors";
import type { BudgetLimit, BudgetView } from "../domain/budget";
import { newRequestId, type EnqueueOutcome, type NewRequest, type PositionView, isQueueFull, type QueueFull, type RequestView } from "../objects/scheduler/types";
import type { QuotaShortfall } from "../domain/quota";
import { budgetLimit, clientQuota, templateConfig, tierLimits } from "../storage/config";
import type { Quality } from "../domain/optimizer";
import { compressText } from "../domain/compression";
import type { CostEstimate } from "./estimate";
import { checkDowngradeChoice, planRequest } from "./optimizer";
import { cacheGet } from "../storage/optimizer-cache";
import { unwrap } from "./pools";
import { cancelHeld, findByKey, getRequestView, positionView } from "./scheduler";
import { ownerShard, shardStub } from "../objects/scheduler/shards";
import type { Held, LeaseRefusal } from "../objects/scheduler/types";
import type { AdmitDecision } from "../objects/client/types";
import { holdUnits, readyToRun, releaseUnits, runSlots } from "./run-now";
import { spendQuotaRefusal } from "./refusals";
import { returnShardHold } from "./budget";
import { log } from "../log";
import { settings } from "../settings";
import { clientStub } from "../objects/client/stub";

/** One request as a caller submits it (validated shape; see routes/queue.ts for the schema). */
export interface RequestSpec {
  template: string;
  params?: unknown;
  queue?: QueueName;
  idempotency_key?: string;
  not_before?: number;
  max_attempts?: number;
  /** standard: may be downgraded; premium: the original is demanded (see services/optimizer.ts). */
  quality?: Quality;
  /** false: run as requested or be refused, never as the cheaper alternative (see services/optimizer.ts). */
  allow_downgrade?: boolean;
  /** Epoch ms by which it must run (a deferred request does not wait for off-peak past it). */
  deadline?: number;
}

export const DEFAULT_QUEUE: QueueName = "normal";

/** A request ready for the scheduler, and its template's cheaper alternative (for a 402), if any. */
export interface PreparedRequest {
  request: NewRequest;
  alternative: CostEstimate["alternative"];
}

/**
 * Plan the request with the cost optimizer (model downgrade, off-peak deferral, cache key, batching,
 * compression) and price what will run, per pool (the one estimate of services/estimate.ts): 404 for
 * an unknown template or pool, 403 for a pool dedicated to another client. Params above the plan's
 * threshold are stored compressed. `id`: the request's, made by the caller before anything is awaited
 * (admitAll: a batch's ids, which break ties in rank, follow its order).
 */
export async function prepare(env: Env, caller: Caller, spec: RequestSpec, id: string = newRequestId()): Promise<PreparedRequest> {
  const queue = spec.queue ?? DEFAULT_QUEUE;
  checkDowngradeChoice({ quality: spec.quality, allowDowngrade: spec.allow_downgrade });
  const [plan, tiers] = await Promise.all([
    planRequest(env, { caller, template: spec.template, params: spec.params ?? null, queue, quality: spec.quality, allowDowngrade: spec.allow_downgrade, deadline: spec.deadline ?? null, now: Date.now() }),
    tierLimits(env),
  ]);
  const estimate = plan.estimate;
  // The template that will run (after any downgrade) sets the retry limit unless the caller gives one.
  const template = await templateConfig(env, plan.template);
  const params = JSON.stringify(spec.params ?? null);
  const packed = plan.compress_threshold_bytes === null ? null : await compressText(params, plan.compress_threshold_bytes);
  const notBefore = Math.max(spec.not_before ?? 0, plan.not_before ?? 0) || null;
  return {
    request: {
      id,
      clientId: caller.clientId,
      tier: caller.tier,
      maxConcurrent: tiers.get(caller.tier)?.max_concurrent ?? 1,
      template: plan.template,
      params: spec.params ?? null,
      paramsStored: packed?.stored ?? params,
      queue,
      idempotencyKey: spec.idempotency_key ?? null,
      notBefore,
      maxAttempts: spec.max_attempts ?? template.maxAttempts,
      estimateNano: estimate.total_cost_nano,
      estimate: estimate.pools.map((p) => ({ pool: p.pool, units: p.amount, cost_nano: p.cost_nano })),
      plan: {
        requested_template: spec.template,
        downgraded_from: plan.downgraded_from,
        downgrade_reason: plan.downgrade_reason,
        strategies: plan.strategies.map((st) => ({ strategy: st.strategy, saved_nano: st.saved_nano, detail: st.detail })),
        cache_key: plan.cache_key,
        cache_ttl_ms: plan.cache_ttl_ms,
        batchable: plan.batchable,
        batch_size: plan.batch_size,
        compress_threshold_bytes: plan.compress_threshold_bytes,
        bytes_saved: packed?.bytesSaved ?? 0,
        cached: false,
        batched: null,
      },
    },
    alternative: estimate.alternative,
  };
}

export type EnqueueResult = { ok: true; value: EnqueueOutcome } | { ok: false; error: ErrorBody; index: number };

type Prepared =
  | { ok: true; value: NewRequest; alternative: CostEstimate["alternative"]; index: number; existing?: { id: string }; shard: number; onLease?: BudgetLimit }
  | { ok: false; error: ErrorBody; index: number };

/**
 * Validate, price and admit specs against the client's budget, in order. A spec whose idempotency key
 * was already used is answered with the first request and costs nothing more, or, when the first
 * request had another spec, refused (409) before anything is booked. Admitted estimates are in
 * flight in the client's object until their requests finish.
 */
async function admitAll(env: Env, caller: Caller, specs: RequestSpec[], traceId: string | null, runNow = false): Promise<Prepared[]> {
  const owner = ownerShard(env, caller.clientId);
  // Made in the batch's order, before anything is awaited: ids sort by when they were made and break
  // ties in rank, so a spec prepared later (its key looked up first, a slower configuration read) still
  // queues in its place.
  const ids = specs.map(() => newRequestId());
  const prepared: Prepared[] = await Promise.all(specs.map(async (spec, index): Promise<Prepared> => {
    try {
      const key = spec.idempotency_key ?? null;
      const specHash = key ? await specFingerprint(spec) : null;
      // The key's request may sit in a shard that owned this client before SCHEDULER_SHARDS changed: it is answered there.
      const keyed = key
        ? await findByKey(env, caller.clientId, key, specHash).catch((err: unknown) => {
          throw unreachable(err, "scheduler", "the scheduler did not answer whether this idempotency key was used; nothing was queued, try again", { idempotency_key: key }, traceId);
        })
        : null;
      if (keyed?.conflict) return { ok: false, error: idempotencyConflict(key!, keyed.id), index };
      const { request: value, alternative } = await prepare(env, caller, spec, ids[index]!);
      value.specHash = specHash;
      value.traceId = traceId;
      return keyed ? { ok: true, value, alternative, index, existing: { id: keyed.id }, shard: keyed.shard } : { ok: true, value, alternative, index, shard: owner };
    } catch (err) {
      if (err instanceof AppError) return { ok: false, error: errorBody(err), index };
      throw err;
    }
  }));
  // Result cache: a hit is answered at once and costs nothing (no budget, no pool units).
  await Promise.all(prepared.map(async (p) => {
    if (!p.ok || p.existing || !p.value.plan?.cache_key) return;
    const hit = await cacheGet(env, p.value.plan.cache_key, Date.now());
    if (hit) p.value.cached = hit;
  }));
  const fresh = prepared.filter((p): p is Extract<Prepared, { ok: true }> => p.ok && !p.existing && !p.value.cached);
  if (fresh.length === 0) return prepared;
  const limit = await budgetLimit(env, caller.clientId);
  if (!limit) throw new AppError("client_not_found", `no client ${caller.clientId}`, { client_id: caller.clientId });
  // One call into the client's object: daily caps per pool (with the quota), then money held in flight.
  const quota = await clientQuota(env, caller.clientId);
  // A single new enqueue's money is admitted by its owner shard, against a hold lent by the client's object
  // (decision 008): no call to that object here. Not for keyed work, executes, a client with daily caps,
  // or a template with a cheaper alternative (the optimizer weighs its client's budget use, which a hold would inflate).
  const only = fresh.length === 1 && specs.length === 1 ? fresh[0]! : null;
  if (only && !runNow && !only.value.idempotencyKey && !only.alternative && quota && Object.keys(quota.poolDaily).length === 0 && settings(env).ENQUEUE_MONEY_LEASES === "on") {
    only.onLease = limit;
    return prepared;
  }
  // An execute that can run at once also takes its job slot in that call, and its units beside it (./run-now.ts).
  const ready = runNow ? readyToRun(fresh.map((p) => p.value)) : [];
  // Units it could not take (the pools' configuration unreadable) are asked for by the shard's admission, as when a pool refuses.
  const held = ready.length
    ? holdUnits(env, ready, owner, quota).catch((err: unknown) => {
      log.warn("units_hold_failed", { client_id: caller.clientId, error: String(err), trace_id: traceId });
      return new Map<string, Held[]>();
    })
    : Promise.resolve(new Map<string, Held[]>());
  const slots = ready.length ? await runSlots(env, ready, owner) : undefined;
  let decisions: AdmitDecision[];
  try {
    const items = fresh.map((p) => ({ requestId: p.value.id!, estimateNano: p.value.estimateNano, pools: unitsByPool(p.value) }));
    decisions = await clientStub(env, caller.clientId).admit(limit, items, quota, slots);
    // Refused for money while the owner shard may hold some for single enqueues (decision 008): that hold
    // is returned (its requests' estimates stay in flight) and the refused are asked once more, so a refusal
    // at the budget's edge counts requests only, as without leases.
    const again = decisions.flatMap((d, i) => (!d.ok && "budget" in d ? [i] : []));
    if (again.length && settings(env).ENQUEUE_MONEY_LEASES === "on") {
      if (await returnShardHold(env, caller.clientId, traceId)) {
        const second = await clientStub(env, caller.clientId).admit(limit, again.map((i) => items[i]!), quota, slots);
        again.forEach((i, j) => (decisions[i] = second[j]!));
      }
    }
  } catch (err) {
    // The client object could not be reached: the units taken beside it go back before the error does.
    // Money it may have booked before its answer was lost is dropped by the cron (reconcileInFlight).
    await releaseUnits(env, [...(await held)].map(([id, list]) => ({ request: ready.find((r) => r.id === id)!, held: list })));
    throw unreachable(err, "client", CLIENT_DOWN, { client_id: caller.clientId }, traceId);
  }
  const units = await held;
  const refused = new Map<number, ErrorBody>();
  const unused: Array<{ request: NewRequest; held: Held[] }> = [];
  fresh.forEach((p, i) => {
    const d = decisions[i]!;
    const held = units.get(p.value.id!);
    if (d.ok) {
      if (d.slot) p.value.slotHeld = true;
      if (held) p.value.poolsHeld = held;
      return;
    }
    if (held) unused.push({ request: p.value, held });
    refused.set(p.index, "quota" in d ? quotaRefusal(caller, d.quota) : budgetRefusal(caller, p.value, p.alternative, d.budget));
  });
  await releaseUnits(env, unused);
  return prepared.map((p) => (refused.has(p.index) ? { ok: false, error: refused.get(p.index)!, index: p.index } : p));
}

function unitsByPool(request: NewRequest): Record<string, number> {
  const out: Record<string, number> = {};
  for (const e of request.estimate) out[e.pool] = (out[e.pool] ?? 0) + e.units;
  return out;
}

/** The 429 body for a daily cap: which pool, its cap, today's use, what the request needs, the shortfall. */
export function quotaRefusal(caller: Caller, shortfall: QuotaShortfall): ErrorBody {
  const { code, message, details } = spendQuotaRefusal(caller.clientId, shortfall);
  return { code, message, details };
}

/** The 402 body: the budget, what is spent and in flight, when it resets, and a cheaper template if one fits. */
function budgetRefusal(caller: Caller, request: NewRequest, cheaper: CostEstimate["alternative"], budget: BudgetView): ErrorBody {
  const alternative = cheaper && {
    template: cheaper.template,
    estimate_nano: cheaper.total_cost_nano,
    fits: budget.budget_nano === null || budget.spent_nano + budget.in_flight_nano + cheaper.total_cost_nano <= budget.budget_nano,
  };
  return {
    code: "budget_exceeded",
    message: `client ${caller.clientId} has ${budget.remaining_nano ?? 0} nano-dollars left of its ${budget.month} budget; this request needs ${request.estimateNano}`,
    details: { client_id: caller.clientId, template: request.template, downgraded_from: request.plan?.downgraded_from ?? null, estimate_nano: request.estimateNano, ...budget, alternative },
  };
}

/**
 * Enqueue several specs; each is answered on its own (a bad one does not stop the others). `traceId`
 * (the HTTP, RPC or MCP call's) is stored with each request: on its scheduler log lines and its jobs.
 */
export async function enqueueMany(env: Env, caller: Caller, specs: RequestSpec[], traceId: string | null = null): Promise<EnqueueResult[]> {
  const prepared = await admitAll(env, caller, specs, traceId);
  const toEnqueue = prepared.filter((p): p is Extract<Prepared, { ok: true }> => p.ok);
  // One call per shard: the owner's, and a shard holding a repeated key's first request.
  const outcomes: Array<EnqueueOutcome | QueueFull | { refused: BudgetView }> = new Array(toEnqueue.length);
  const byShard = new Map<number, number[]>();
  toEnqueue.forEach((p, i) => appendTo(byShard, p.shard, i));
  const maxQueued = settings(env).SCHEDULER_MAX_QUEUED;
  await Promise.all([...byShard].map(async ([shard, list]) => {
    let answers: Array<EnqueueOutcome | QueueFull | LeaseRefusal>;
    const onLease = list.length === 1 ? toEnqueue[list[0]!]!.onLease : undefined;
    try {
      answers = onLease
        ? [(await shardStub(env, shard).enqueueOnLease(toEnqueue[list[0]!]!.value, onLease, maxQueued)) as EnqueueOutcome | QueueFull | LeaseRefusal]
        : (await shardStub(env, shard).enqueue(list.map((i) => toEnqueue[i]!.value), maxQueued)) as Array<EnqueueOutcome | QueueFull>;
    } catch (err) {
      throw unreachable(err, "scheduler", SCHEDULER_DOWN, { shard, request_ids: list.map((i) => toEnqueue[i]!.existing?.id ?? toEnqueue[i]!.value.id) }, traceId);
    }
    const down = answers.find((a) => "clientUnreachable" in a);
    if (down) throw unreachable(new Error((down as { clientUnreachable: string }).clientUnreachable), "client", CLIENT_DOWN, { client_id: caller.clientId }, traceId);
    list.forEach((i, j) => (outcomes[i] = answers[j] as Exclude<(typeof answers)[number], { clientUnreachable: string }>));
  }));
  // Not queued: a concurrent first use of the same key won the insert, or the shard was full. This admission's money was never needed.
  // (Money admitted on a shard's lease is the shard's to give back: Scheduler.enqueueOnLease.)
  const unused = toEnqueue.filter((p, i) => { const o = outcomes[i]!; return !p.existing && !p.onLease && (isQueueFull(o) || "refused" in o || o.request.id !== p.value.id); }).map((p) => p.value.id!);
  if (unused.length) await dropUnused(env, caller.clientId, unused, traceId);
  const byIndex = new Map(toEnqueue.map((p, i) => [p.index, { outcome: outcomes[i]!, shard: p.shard }]));
  return prepared.map((p): EnqueueResult => {
    if (!p.ok) return { ok: false, error: p.error, index: p.index };
    const { outcome, shard } = byIndex.get(p.index)!;
    if (isQueueFull(outcome)) return { ok: false, error: queueFull(shard, outcome), index: p.index };
    if ("refused" in outcome) return { ok: false, error: budgetRefusal(caller, p.value, p.alternative, outcome.refused), index: p.index };
    const { conflict, ...value } = outcome;
    return conflict ? { ok: false, error: idempotencyConflict(p.value.idempotencyKey!, value.request.id), index: p.index } : { ok: true, value };
  });
}

/** Enqueue one spec and, for the immediate queue, run it now when every limit admits it (`traceId`: as enqueueMany). */
export async function execute(env: Env, caller: Caller, spec: RequestSpec, traceId: string | null = null): Promise<EnqueueOutcome> {
  const [prepared] = await admitAll(env, caller, [{ ...spec, queue: spec.queue ?? "immediate" }], traceId, true);
  if (!prepared!.ok) throw AppError.from(prepared!.error);
  const template = await templateConfig(env, prepared!.value.template);
  let answer: EnqueueOutcome | QueueFull;
  try {
    answer = (await shardStub(env, prepared!.shard).execute(prepared!.value, template.timeoutMs + 1000, settings(env).SCHEDULER_MAX_QUEUED)) as EnqueueOutcome | QueueFull;
  } catch (err) {
    // Whether the shard took the request is unknown: its slot and units are kept (it may run on them)
    // and end with their hold; the money booked for it is dropped by the cron if the shard has no such request.
    throw unreachable(err, "scheduler", SCHEDULER_DOWN, { shard: prepared!.shard, request_id: prepared!.existing?.id ?? prepared!.value.id }, traceId);
  }
  if (isQueueFull(answer)) {
    if (!prepared!.existing) await dropUnused(env, caller.clientId, [prepared!.value.id!], traceId);
    throw AppError.from(queueFull(prepared!.shard, answer), QUEUE_FULL_RETRY_SEC);
  }
  const { conflict, ...outcome } = answer;
  if (!prepared!.existing && outcome.request.id !== prepared!.value.id) await dropUnused(env, caller.clientId, [prepared!.value.id!], traceId);
  if (conflict) throw AppError.from(idempotencyConflict(prepared!.value.idempotencyKey!, outcome.request.id));
  return outcome;
}

/**
 * What an idempotency key stands for: every field of the spec except the key itself and client_id
 * (the key is already the client's own), with the queue's default filled in (normal for enqueue,
 * immediate for execute: another queue is another job), as canonical JSON (object keys sorted, so
 * the order fields are sent in does not matter), hashed.
 */
async function specFingerprint(spec: RequestSpec): Promise<string> {
  const { idempotency_key: _key, client_id: _client, ...rest } = spec as RequestSpec & { client_id?: string };
  const text = canonicalJson(JSON.parse(JSON.stringify({ ...rest, queue: spec.queue ?? DEFAULT_QUEUE })));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** How long a caller refused by a full shard is told to wait: a shard dispatches thousands a second while it has room in flight. */
export const QUEUE_FULL_RETRY_SEC = 5;

/** The 503 body for a shard that holds SCHEDULER_MAX_QUEUED queued requests already (docs/operations.md). */
function queueFull(shard: number, full: QueueFull): ErrorBody {
  return {
    code: "queue_full",
    message: `the scheduler shard that keeps this client's work has ${full.queued} requests queued, its limit (SCHEDULER_MAX_QUEUED ${full.max}); nothing was queued, try again in ${QUEUE_FULL_RETRY_SEC} s`,
    details: { shard, queued: full.queued, max_queued: full.max, retry_after_ms: QUEUE_FULL_RETRY_SEC * 1000 },
  };
}

function idempotencyConflict(key: string, firstId: string): ErrorBody {
  return {
    code: "idempotency_conflict",
    message: `idempotency key ${key} was already used for request ${firstId} with a different request; use a new key for a new request`,
    details: { idempotency_key: key, request_id: firstId },
  };
}

const CLIENT_DOWN = "the client's budget and quota could not be checked; nothing was queued, try again";

/** What a caller is told when its shard did not answer: the request may have been queued, so a retry should not make it twice. */
const SCHEDULER_DOWN = "the scheduler did not answer; the request may or may not be queued: look it up by its request_id, or retry with the same idempotency key";

/**
 * Take the money booked for requests that a concurrent call with the same idempotency key made first
 * out of flight. The request is answered either way: what is left is dropped by the cron (reconcileInFlight).
 */
async function dropUnused(env: Env, clientId: string, ids: string[], traceId: string | null): Promise<void> {
  try {
    await clientStub(env, clientId).drop(ids);
  } catch (err) {
    log.warn("in_flight_drop_failed", { client_id: clientId, request_ids: ids, error: String(err), trace_id: traceId });
  }
}

/**
 * A client or scheduler object that failed mid-call (unreachable, reset, overloaded, or an error of its
 * own): 503 `unavailable` with Retry-After, the cause logged with the trace id and kept out of the answer.
 * An AppError (the object's own refusal) passes as it is.
 */
function unreachable(err: unknown, object: "client" | "scheduler", message: string, details: Record<string, unknown>, traceId: string | null): AppError {
  if (err instanceof AppError) return err;
  log.error("object_unreachable", { object, ...details, error: err instanceof Error ? err.message : String(err), trace_id: traceId });
  return new AppError("unavailable", message, details, 1);
}


export async function getRequest(env: Env, id: string, clientId: string | null): Promise<RequestView> {
  const found = await getRequestView(env, id, clientId);
  if (!found) throw new AppError("request_not_found", `no request ${id}`, { request_id: id });
  return found;
}

export async function positionOf(env: Env, id: string, clientId: string | null): Promise<PositionView> {
  const found = await positionView(env, id, clientId);
  if (!found) throw new AppError("request_not_found", `no request ${id}`, { request_id: id });
  return found;
}

export async function cancelRequest(env: Env, id: string, clientId: string | null, onlyQueued: boolean): Promise<RequestView> {
  return unwrap(await cancelHeld(env, id, clientId, onlyQueued));
}

function errorBody(err: AppError): ErrorBody {
  return err.details ? { code: err.code, message: err.message, details: err.details } : { code: err.code, message: err.message };
}

export { QUEUES };
