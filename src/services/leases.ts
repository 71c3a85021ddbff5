import { newId } from "../domain/ids";
import { newMeter, observe, poolLends, rateOf, sliceWant, TOKEN_LEASE, type RateMeter } from "../domain/leases";
import type { Caller, PoolConfig } from "../domain/types";
import { AppError } from "../errors";
import { log } from "../log";
import type { ConsumeResult } from "../objects/pool/types";
import type { LeaseAnswer, LeaseExchange, LeaseGrant } from "../objects/pool/types";
import { countConsume } from "./pool-counters";
import { settleDebit, type Debit } from "./money";
import { poolStub } from "../objects/pool/stub";

/**
 * Token leases, the isolate's side. A pool in `auto` lease mode that this isolate consumes from often
 * enough (TOKEN_LEASE.AUTO_MIN_RATE a second) gets a slice of the pool's bucket lent to it; consumes are
 * then decided here against the slice, with no call to the pool's object. Every grant is reported to
 * the object (its usage event goes to the pool's outbox, so it reaches the ledger and the client's
 * spend from there, once) at the next exchange: at most TOKEN_LEASE.REPORT_MS later, carried by the
 * granting request's waitUntil. The same exchange tops the slice up to the isolate's rate (at most a
 * fair share of what the bucket holds).
 *
 * A consume the slice cannot cover hands the whole slice back in an exchange that asks for at least
 * its amount; when even that fails, everything this isolate held is back in the bucket and the consume
 * goes to the object, which refuses it exactly as without leases (and leasing pauses for a while).
 * Consumes with an idempotency key always go to the object, which keeps their answers.
 */

interface Holding {
  units: number;
  /** Local time after which the slice grants nothing (its expiry at the object, less a margin). */
  deadline: number;
  /** Units added at the last top-up: the slice is topped up again when it falls below half of it. */
  lastAdded: number;
  grants: Array<{ grant: LeaseGrant; debit: Debit | null }>;
  report: number;
  exchanging: boolean;
  /** Whole units in the bucket at the last exchange (for the consume's `remaining`). */
  level: number;
  source: string;
  /** Leasing pauses until then (the pool could not serve us, or it stopped lending). */
  pausedUntil: number;
  meter: RateMeter;
  /** When the next tick is due (null: none scheduled). */
  tickAt: number | null;
  /** The configuration it was last used with. */
  cfg: PoolConfig;
  exchangeStarted: number;
}

const holdings = new Map<string, Holding>();
/** A tick comes this long before the slice's deadline, so that the exchange extends it in time. */
const TICK_AHEAD_MS = 100;
const HOLDINGS_MAX = 4096;
let holderId = "";
/** How long a consume waits for another consume's exchange, and how often it looks (tests shorten them). */
export const leaseSettings = { waitMs: 10_000, pollMs: 1 };

/** Whether this consume may be decided from a lease at all. */
function leasable(cfg: PoolConfig, amount: number, idempotencyKey: string | undefined): boolean {
  return poolLends(cfg) && idempotencyKey === undefined && amount <= cfg.capacity;
}

/**
 * Decide a consume from this isolate's lease on the pool: its answer, or null when it is the object's
 * to decide (no lease, leasing paused, an idempotency key). May wait for an exchange with the object.
 */
export async function leaseConsume(
  env: Env, ctx: Pick<ExecutionContext, "waitUntil">, cfg: PoolConfig, caller: Caller, amount: number, requestId: string | null,
  costNano: number, debit: Debit | null, idempotencyKey: string | undefined,
): Promise<ConsumeResult | null> {
  if (!leasable(cfg, amount, idempotencyKey)) return null;
  const now = Date.now();
  let h = holdings.get(cfg.id);
  if (!h) {
    if (holdings.size >= HOLDINGS_MAX) return null;
    holdings.set(cfg.id, (h = {
      units: 0, deadline: 0, lastAdded: 0, grants: [], report: 0, exchanging: false, level: 0, source: "",
      pausedUntil: 0, meter: newMeter(now), tickAt: null, cfg, exchangeStarted: 0,
    }));
  }
  h.cfg = cfg;
  observe(h.meter, now);
  if (now < h.pausedUntil) return null;
  const waitUntil = now + leaseSettings.waitMs;
  let tried = false;
  for (;;) {
    const t = Date.now();
    if (t < h.deadline && h.units >= amount) {
      h.units -= amount;
      const eventId = newId("event", t);
      h.grants.push({ grant: [eventId, caller.clientId, caller.tier, caller.via, amount, requestId, costNano, t], debit });
      countConsume(cfg.id, "lease", true);
      if (h.units * 2 < h.lastAdded && !h.exchanging) ctx.waitUntil(exchange(env, cfg, h, 0, false));
      scheduleTick(env, ctx, cfg, h);
      return { pool: cfg.id, eventId, units: amount, costNano, remaining: h.level + h.units };
    }
    // Only a pool consumed often enough here is worth a slice (a cooling one keeps what it holds until
    // its next tick hands it back, unless this consume needs it: below).
    if (h.units === 0 && rateOf(h.meter, t) < TOKEN_LEASE.AUTO_MIN_RATE) return null;
    if (h.exchanging && t - h.exchangeStarted > leaseSettings.waitMs) {
      // An exchange that never answered: stop waiting for it (if it answers after all, it still applies).
      h.exchanging = false;
    }
    if (h.exchanging) {
      if (t > waitUntil) throw new AppError("unavailable", `no lease answer from pool ${cfg.id} within ${leaseSettings.waitMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, leaseSettings.pollMs));
      continue;
    }
    if (tried) return null;
    tried = true;
    // No slice, or one that cannot cover this consume: hand back what is held and ask for at least this
    // amount. The consumes arriving meanwhile wait for it (none goes to the object while this isolate
    // takes units). Kept alive with waitUntil, even if this request goes away.
    const handBack = exchange(env, cfg, h, amount, false);
    ctx.waitUntil(handBack);
    await handBack;
    if (h.units < amount) {
      h.pausedUntil = Date.now() + TOKEN_LEASE.DRY_BACKOFF_MS;
      return null;
    }
  }
}

/**
 * One exchange with the pool's object: report the grants so far, give back what `need` asks (a need
 * hands the whole slice back first), take what it lends. One at a time per pool in this isolate.
 */
async function exchange(env: Env, cfg: PoolConfig, h: Holding, need: number, close: boolean): Promise<void> {
  if (h.exchanging) return;
  h.exchanging = true;
  h.exchangeStarted = Date.now();
  const now = Date.now();
  // While paused, what is held goes back and nothing new is asked for: consumes go to the object then.
  const paused = now < h.pausedUntil;
  const returned = need > 0 || close || paused || now >= h.deadline ? h.units : 0;
  h.units -= returned;
  const reported = h.grants.splice(0);
  // The slice aims at WINDOW_MS of this isolate's consumes: a top-up asks only for what it lacks.
  const target = sliceWant(rateOf(h.meter, now), TOKEN_LEASE.WINDOW_MS, need, cfg.capacity);
  const want = close || paused ? 0 : Math.max(0, target - h.units);
  const x: LeaseExchange = { holder: holder(), report: ++h.report, grants: reported.map((g) => g.grant), returned, want, need, close };
  let answer: LeaseAnswer | null = null;
  try {
    const stub = poolStub(env, cfg.id);
    answer = (await stub.lease(cfg.version, x)) as LeaseAnswer | null;
    if (answer === null) answer = (await stub.lease(cfg, x)) as LeaseAnswer | null;
    if (answer === null) throw new Error(`pool ${cfg.id} refused its configuration`);
  } catch (err) {
    // Unknown whether the object applied it: its grants are reported again with the next exchange (the
    // ledger keeps an event id once; the pool and the client count them twice, conservatively) and
    // what it gave back stays given back.
    h.grants.unshift(...reported);
    h.exchanging = false;
    log.warn("lease_exchange_failed", { pool: cfg.id, error: String(err) });
    return;
  }
  const received = Date.now();
  h.units += answer.added;
  if (answer.added > 0) h.lastAdded = answer.added;
  // A closed lease is no lease: the next consume asks anew only if the pool is busy again.
  h.deadline = close ? 0 : received + answer.ttlMs - TOKEN_LEASE.MARGIN_MS;
  h.level = answer.level;
  h.source = answer.source;
  for (const g of reported) settleDebit(g.debit, { source: answer.source, seq: answer.seq });
  h.exchanging = false;
  if (answer.stop && !close) {
    // The pool no longer lends (leases off, not active, not shared): hand the rest back now.
    h.pausedUntil = received + TOKEN_LEASE.DRY_BACKOFF_MS;
    await exchange(env, cfg, h, 0, true);
  }
}

/**
 * Make sure the grants get reported, and an idle slice goes back, without waiting for more traffic: a
 * timer in this request (under its waitUntil) that exchanges at the report interval while the slice is
 * held or grants wait. A tick overdue by far is taken for dead (its request ended) and replaced.
 */
function scheduleTick(env: Env, ctx: Pick<ExecutionContext, "waitUntil">, cfg: PoolConfig, h: Holding): void {
  const now = Date.now();
  if (h.tickAt !== null && h.tickAt > now - TOKEN_LEASE.REPORT_MS) return;
  const at = Math.min(now + TOKEN_LEASE.REPORT_MS, h.deadline - TICK_AHEAD_MS);
  h.tickAt = at;
  ctx.waitUntil((async () => {
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, (h.tickAt ?? Date.now()) - Date.now())));
      const idle = rateOf(h.meter, Date.now()) < TOKEN_LEASE.AUTO_MIN_RATE / 2;
      if (h.units > 0 || h.grants.length > 0) await exchange(env, cfg, h, 0, idle);
      if (h.units === 0 && h.grants.length === 0 && (idle || h.deadline <= Date.now())) {
        h.tickAt = null;
        return;
      }
      h.tickAt = Math.min(Date.now() + TOKEN_LEASE.REPORT_MS, h.deadline - TICK_AHEAD_MS);
    }
  })());
}

function holder(): string {
  if (!holderId) holderId = newId("isolate");
  return holderId;
}

/**
 * Report every grant and hand every slice back now, as an idle isolate does within a second (tests:
 * a grant's usage event is in its pool's outbox once this returns).
 */
export async function closeLeases(env: Env): Promise<void> {
  await Promise.all([...holdings.values()].map(async (h) => {
    while (h.exchanging) await new Promise((resolve) => setTimeout(resolve, leaseSettings.pollMs));
    if (h.units > 0 || h.grants.length > 0) await exchange(env, h.cfg, h, 0, true);
  }));
}
