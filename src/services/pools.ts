import { costOf } from "../domain/money";
import type { Caller, PoolConfig, Principal } from "../domain/types";
import { AppError } from "../errors";
import { newId } from "../domain/ids";
import type { SpendMark } from "../objects/client/types";
import type { ConsumeResult, Failure, ReleaseResult, ReserveResult, Result, Spent, SpendItem, SpendOptions } from "../objects/pool/types";
import { budgetLimit, clientQuota, clientTier } from "../storage/config";
import { leaseConsume } from "./leases";
import { debitMoney, settleDebit } from "./money";
import { countConsume } from "./pool-counters";
import { POOL_IDS_MAX, poolStub } from "../objects/pool/stub";
import { spendBudgetRefusal, spendQuotaRefusal } from "./refusals";
import { clientStub } from "../objects/client/stub";

/** The configuration version this isolate last handed to each pool's object, which keeps what it adopts. */
const handed = new Map<string, number>();

/** The most consumes one call to a pool object carries. */
export const SPEND_BATCH_MAX = 128;
/** Calls to one pool's object in flight at once from one isolate, before consumes wait to share the next. */
export const SPEND_CALLS_MAX = 2;

/**
 * One pool's consumes in this isolate: at most SPEND_CALLS_MAX calls to its object are in flight;
 * consumes that arrive meanwhile wait here and go together in the next call.
 */
interface Lane {
  calls: number;
  waiting: Waiter[];
}

/**
 * A consume waiting in a lane. `turn` is set by the call that carried it (its answer, or the error) or
 * by the consume before it (lead: make the next call); the waiting consume polls it (see waitTurn).
 */
interface Waiter {
  item: SpendItem;
  cfg: PoolConfig;
  turn: Turn | null;
  /** Until when it waits: to be taken by a call, then (set by the call that takes it) for that call's answer. */
  deadline: number;
  taken: boolean;
}

type Turn = { lead: true } | { lead: false; answer: Spent | Failure } | { lead: false; error: unknown };

/**
 * waitMs: how long a consume waits in its lane to be taken by a call, and then for that call's answer.
 * Not taken in time, it makes the next call itself (with those waiting behind it); not answered in
 * time, it fails (its outcome unknown: retry with an idempotency key). A call takes milliseconds;
 * this is for a call that never returns, or a consume handed the next call whose request was killed.
 * pollMs: how often a waiting consume looks at its turn. Tests shorten waitMs.
 */
export const laneSettings = { waitMs: 10_000, pollMs: 1 };

const lanes = new Map<string, Lane>();

/** How many consumes wait in this isolate's lane for a pool (for tests and diagnostics). */
export function waitingInLane(poolId: string): number {
  return lanes.get(poolId)?.waiting.length ?? 0;
}

/**
 * Spend now from a pool (the consume route, the hot path and the RPC entrypoint). Throws the AppError
 * to answer.
 *
 * Consumes of one pool in one isolate are coalesced: when SPEND_CALLS_MAX calls to the pool's object
 * are in flight, the consumes that arrive meanwhile wait and then go in one call (up to
 * SPEND_BATCH_MAX), made by the first of them when a call ends. The object decides them one after the
 * other, in the order given, and commits them at once. Below that many calls a consume goes at once,
 * so a pool that is not busy waits for nothing; a busy pool pays one call and one commit per batch,
 * not per consume. Each consume keeps its own answer. Two calls, not one: with one, a consume behind
 * a lone call waited for it and then for its own poll (p50 +0.65 ms at 4 connections); with two, that
 * wait is gone at 4 connections and the batches at 32 are about as large.
 *
 * Each caller's part is kept alive with waitUntil: a consume whose client went away may be carrying
 * others, or be the one asked to make the next call.
 *
 * The object gets the configuration itself only when this isolate has not handed it this version
 * yet, or when the object answers that it holds an older one (its storage started over); otherwise
 * just the version.
 */
export async function consumeAt(
  env: Env, ctx: Pick<ExecutionContext, "waitUntil">, cfg: PoolConfig, caller: Caller, opts: SpendOptions,
): Promise<ConsumeResult> {
  // The budget first (402 before any unit is taken), from this isolate's slice of the client's headroom.
  const costNano = costOf(opts.amount, cfg.costPerUnitNano);
  const debit = await debitMoney(env, ctx, caller.clientId, costNano, { pool: cfg.id, units: opts.amount });
  let result: ConsumeResult | null = null;
  let mark: { source: string; seq: number } | null = null;
  try {
    result = await leaseConsume(env, ctx, cfg, caller, opts.amount, opts.requestId ?? null, costNano, debit, opts.idempotencyKey);
    // A grant from a lease settles its debit when it is reported (see ./leases.ts).
    if (result) return result;
    const spent = await spendInLane(env, ctx, cfg, caller, opts);
    mark = { source: spent[4], seq: spent[3] };
    countConsume(cfg.id, "object", true);
    return { pool: cfg.id, eventId: spent[0], units: opts.amount, costNano: spent[1], remaining: spent[2] };
  } catch (err) {
    if (err instanceof AppError && err.code === "rate_limited") countConsume(cfg.id, "object", false);
    throw err;
  } finally {
    if (!result) settleDebit(debit, mark);
  }
}

/** One consume through the pool's lane (below): the object's answer, or the AppError it stands for. */
async function spendInLane(env: Env, ctx: Pick<ExecutionContext, "waitUntil">, cfg: PoolConfig, caller: Caller, opts: SpendOptions): Promise<Spent> {
  const item: SpendItem = [caller.clientId, caller.tier, caller.via, opts.amount, opts.requestId ?? null, opts.idempotencyKey ?? null];
  let lane = lanes.get(cfg.id);
  if (!lane) lanes.set(cfg.id, (lane = { calls: 0, waiting: [] }));
  let answer: Promise<Spent | Failure>;
  if (lane.calls < SPEND_CALLS_MAX) {
    lane.calls += 1;
    answer = lead(env, lane, cfg, item);
  } else {
    answer = waitTurn(env, lane, cfg, item);
  }
  ctx.waitUntil(answer.then(ignore, ignore));
  const spent = await answer;
  if (!Array.isArray(spent)) return unwrap(spent);
  return spent;
}

function ignore(): void {}

/**
 * Wait in the lane until a call carries this consume (its answer) or the consume before it hands over
 * the next call. The turn is polled with this request's own timer, not awaited as a promise settled by
 * the request that carries it: workerd runs a continuation in the context of the request that settles
 * the promise (under vitest-pool-workers at least), where this request's I/O is refused.
 */
async function waitTurn(env: Env, lane: Lane, cfg: PoolConfig, item: SpendItem): Promise<Spent | Failure> {
  const waiter: Waiter = { item, cfg, turn: null, deadline: Date.now() + laneSettings.waitMs, taken: false };
  lane.waiting.push(waiter);
  while (waiter.turn === null) {
    if (Date.now() >= waiter.deadline) {
      if (waiter.taken) throw new AppError("unavailable", `no answer from pool ${cfg.id} within ${laneSettings.waitMs} ms; retry with an idempotency key`);
      // Nobody has taken it: the call in flight is stuck, or the consume handed the next call never
      // made it (its request was killed). Make the call itself, for those waiting behind it too.
      lane.waiting.splice(lane.waiting.indexOf(waiter), 1);
      lane.calls += 1;
      return lead(env, lane, cfg, item);
    }
    await new Promise((resolve) => setTimeout(resolve, laneSettings.pollMs));
  }
  const turn: Turn = waiter.turn;
  if (turn.lead) return lead(env, lane, cfg, item);
  if ("error" in turn) throw turn.error;
  return turn.answer;
}

/**
 * Make one call for `own` and the consumes waiting behind it, answer them, then hand the lane to the
 * next waiting consume (or free it).
 */
async function lead(env: Env, lane: Lane, cfg: PoolConfig, own: SpendItem): Promise<Spent | Failure> {
  const others = lane.waiting.splice(0, SPEND_BATCH_MAX - 1);
  const deadline = Date.now() + laneSettings.waitMs;
  for (const w of others) {
    w.taken = true;
    w.deadline = deadline;
  }
  try {
    // The newest configuration any of them read (an object serves an older version with the one it holds).
    let newest = cfg;
    for (const w of others) if (w.cfg.version > newest.version) newest = w.cfg;
    let answers: Array<Spent | Failure>;
    try {
      answers = await spendAt(env, newest, others.length === 0 ? [own] : [own, ...others.map((w) => w.item)]);
    } catch (error) {
      for (const w of others) w.turn = { lead: false, error };
      throw error;
    }
    others.forEach((w, i) => (w.turn = { lead: false, answer: answers[i + 1]! }));
    return answers[0]!;
  } finally {
    const next = lane.waiting.shift();
    if (next) next.turn = { lead: true };
    else {
      lane.calls -= 1;
      if (lane.calls === 0 && lanes.get(cfg.id) === lane) lanes.delete(cfg.id);
    }
  }
}

/** One call to the pool's object for `items`, with the configuration's version, or the configuration when the object needs it. */
async function spendAt(env: Env, cfg: PoolConfig, items: SpendItem[]): Promise<Array<Spent | Failure>> {
  const stub = poolStub(env, cfg.id);
  let answers = handed.get(cfg.id) === cfg.version ? ((await stub.spend(cfg.version, items)) as Array<Spent | Failure> | null) : null;
  if (answers === null) {
    answers = (await stub.spend(cfg, items)) as Array<Spent | Failure> | null;
    if (handed.size >= POOL_IDS_MAX) handed.clear();
    handed.set(cfg.id, cfg.version);
  }
  if (answers === null || answers.length !== items.length) throw new AppError("internal", `pool ${cfg.id} refused its configuration`);
  return answers;
}

/**
 * Reserve units for a caller (/internal/reserve and RPC reserve). The reservation holds one of the
 * client's job slots (its concurrency limit, and its units against the pool's daily cap) and its price
 * in flight, in the client's object, until it is released or expires: refused with 429 quota_exceeded
 * or 402 budget_exceeded before any unit is taken. Then the pool decides. Throws the AppError to answer.
 */
export async function reserveAt(env: Env, cfg: PoolConfig, caller: Caller, opts: SpendOptions & { ttlMs: number }): Promise<ReserveResult> {
  const [limit, quota] = await Promise.all([budgetLimit(env, caller.clientId), clientQuota(env, caller.clientId)]);
  if (!limit || !quota) throw new AppError("client_not_found", `no client ${caller.clientId}`, { client_id: caller.clientId });
  const now = Date.now();
  const id = newId("reservation", now);
  const nano = costOf(opts.amount, cfg.costPerUnitNano);
  const client = clientStub(env, caller.clientId);
  const held = await client.holdReservation(limit, quota, { id, nano, expiresAt: now + opts.ttlMs, pool: cfg.id, units: opts.amount });
  if (!held.ok) throw "budget" in held ? spendBudgetRefusal(caller.clientId, nano, { pool: cfg.id, units: opts.amount }, held.budget) : spendQuotaRefusal(caller.clientId, held.quota);
  let r: Result<ReserveResult>;
  try {
    r = await poolStub(env, cfg.id).reserve(cfg, caller, { ...opts, reservationId: id });
  } catch (err) {
    await client.settleReservation(id, null);
    throw err;
  }
  // Refused, or the replay of an earlier reservation under the same idempotency key (held under its own id).
  if (!r.ok || r.value.reservationId !== id) await client.settleReservation(id, null);
  return unwrap(r);
}

/**
 * Settle a reservation (/internal/release and RPC release): the pool consumes what was used and refunds
 * the rest; the client's object frees its job slot and keeps the spend in flight until the pool's
 * outbox has delivered it.
 */
export async function releaseAt(env: Env, cfg: PoolConfig, caller: Caller, reservationId: string, actualUsed: number): Promise<ReleaseResult> {
  const r = unwrap(await poolStub(env, cfg.id).release(cfg, caller, reservationId, actualUsed));
  const mark: SpendMark | null = r.eventId && r.seq && r.source ? [r.source, r.seq, r.costNano] : null;
  await clientStub(env, caller.clientId).settleReservation(reservationId, mark);
  return r;
}


/** A pool object's answer, or the AppError it stands for (429s carry Retry-After in seconds). */
export function unwrap<T>(result: Result<T>): T;
export function unwrap(result: Failure): never;
export function unwrap<T>(result: Result<T>): T {
  if (result.ok) return result.value;
  const retryMs = result.error.details?.retry_after_ms;
  const retryAfterSec = result.error.code === "rate_limited"
    ? typeof retryMs === "number" ? Math.max(1, Math.ceil(retryMs / 1000)) : 3600
    : undefined;
  throw AppError.from(result.error, retryAfterSec);
}

/**
 * The caller a spend is attributed to. A client's key speaks for its own client only; the internal
 * and admin tokens name the client they act for. New work for a suspended client is refused (403
 * `client_suspended`); `allowSuspended` is for what starts nothing: reads (checks, estimates) and
 * settling what was started before the suspension (release). A suspended client's own key is refused
 * earlier, by authenticate().
 */
export async function callerFor(
  env: Env, principal: Principal, clientId: string | undefined, via: string, opts: { allowSuspended?: boolean } = {},
): Promise<Caller> {
  if (principal.kind === "client") {
    if (clientId !== undefined && clientId !== principal.clientId) {
      throw new AppError("forbidden", "an API key may act only for its own client", { client_id: clientId });
    }
    return { clientId: principal.clientId, tier: principal.tier, via };
  }
  if (clientId === undefined) {
    throw new AppError("validation_failed", "client_id is required with this credential", {
      fields: [{ path: "client_id", message: "Required" }],
    });
  }
  const client = await clientTier(env, clientId);
  if (!client) throw new AppError("client_not_found", `no client ${clientId}`, { client_id: clientId });
  if (client.status === "suspended" && !opts.allowSuspended) {
    throw new AppError("client_suspended", `client ${clientId} is suspended: new work is refused`, { client_id: clientId });
  }
  return { clientId, tier: client.tier, via };
}

export type { PoolConfig };
