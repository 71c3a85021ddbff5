import { fits, msUntil, take } from "../../domain/bucket";
import { accessFor } from "../../domain/sharing";
import type { Caller, PoolConfig } from "../../domain/types";
import { log } from "../../log";
import { poolHooks } from "./hooks";
import { fail } from "./results";
import type { PoolStore } from "./store";
import type { CheckResult, ConsumeResult, Failure, Result, Spent, SpendItem, SpendOptions } from "./types";

/** A dynamic pool that runs dry asks for a scaling evaluation at most this often (and not within its cooldown). */
const SCALING_KICK_MIN_MS = 10_000;

/**
 * The pool's admission and direct consumes: whether a caller may take units now (sharing, capacity,
 * level, status), the consume batches every direct spend arrives in, and the scaling kick when a
 * dynamic pool runs dry. Synchronous on the store: no call interleaves inside a decision.
 */
export class Spending {
  /** Earliest time running dry may ask for another scaling evaluation. */
  private scalingKickAfter = 0;

  constructor(
    private readonly env: Env,
    private readonly ctx: DurableObjectState,
    private readonly store: PoolStore,
  ) {}

  /** Would `amount` be granted to `caller` now; `leasedUnits`: the units out on token leases, for the answer. */
  check(cfg: PoolConfig, caller: Caller, amount: number, leasedUnits: () => number): Result<CheckResult> {
    const admitted = this.admit(cfg, caller, amount, Date.now());
    if (!admitted.ok && admitted.error.code !== "rate_limited") return admitted;
    const leased = leasedUnits();
    // A draining or disabled pool grants nothing new, whatever its level.
    if (cfg.status !== "active") return { ok: true, value: { pool: cfg.id, allowed: false, available: 0, leased, retryAfterMs: null } };
    if (admitted.ok) return { ok: true, value: { pool: cfg.id, allowed: true, available: admitted.value, leased, retryAfterMs: 0 } };
    const d = admitted.error.details as { available: number; retry_after_ms: number | null };
    return { ok: true, value: { pool: cfg.id, allowed: false, available: d.available, leased, retryAfterMs: d.retry_after_ms } };
  }

  /** Consume each item in order, each answered on its own (see PoolObject.spend). */
  spend(cfg: PoolConfig, items: SpendItem[]): Array<Spent | Failure> {
    const store = this.store;
    const source = store.source(cfg.id);
    return items.map(([clientId, tier, via, amount, requestId, idempotencyKey]) => {
      const before = store.lastSeq;
      const r = this.consumeWith(cfg, { clientId, tier, via }, { amount, requestId: requestId ?? undefined, idempotencyKey: idempotencyKey ?? undefined });
      // A replayed answer wrote no event: seq 0.
      return r.ok ? [r.value.eventId, r.value.costNano, r.value.remaining, store.lastSeq === before ? 0 : store.lastSeq, source] : r;
    });
  }

  private consumeWith(cfg: PoolConfig, caller: Caller, opts: SpendOptions): Result<ConsumeResult> {
    const store = this.store;
    return store.idempotent(caller, "consume", opts, () => {
      const now = Date.now();
      const admitted = this.admit(cfg, caller, opts.amount, now, true);
      if (!admitted.ok) {
        store.saveDenials();
        return admitted;
      }
      store.bucket = take(store.bucket, opts.amount);
      const event = store.usageEvent(cfg, caller, opts.requestId ?? null, "consume", opts.amount, now);
      // One write: the event, carrying the bucket's new level (no separate bucket UPDATE).
      store.queueUsage([event], true);
      return {
        ok: true,
        value: { pool: cfg.id, eventId: event.eventId, units: opts.amount, costNano: event.costNano, remaining: store.whole() },
      };
    });
  }

  /**
   * Whether `amount` may be taken by `caller` now. On success the value is what the caller could take.
   * Refills the bucket to `now` as a side effect (in memory; persisted by the caller's write).
   */
  admit(cfg: PoolConfig, caller: Caller, amount: number, now: number, spending = false): Result<number> {
    if (spending && cfg.status !== "active") return fail("pool_inactive", `pool ${cfg.id} is ${cfg.status}`);
    const access = accessFor(cfg, caller);
    if (!access.allowed) return fail("pool_forbidden", `pool ${cfg.id} is dedicated to another client`);
    const ceiling = cfg.capacity - access.protectedUnits;
    if (amount > ceiling + 1e-9) {
      return fail("amount_exceeds_capacity", `pool ${cfg.id} can never grant ${amount} ${cfg.unit} to this caller`, {
        pool: cfg.id, requested: amount, max: Math.floor(ceiling + 1e-9),
      });
    }
    const store = this.store;
    store.refillTo(now, cfg);
    const available = store.bucket.level - access.protectedUnits;
    if (fits(available, amount)) return { ok: true, value: Math.floor(available + 1e-9) };
    const retryAfterMs = msUntil(store.bucket.level, amount + access.protectedUnits, cfg);
    if (spending) {
      store.denials += 1;
      this.kickScaling(cfg, now);
    }
    return fail("rate_limited", `pool ${cfg.id} has ${Math.max(0, Math.floor(available + 1e-9))} ${cfg.unit} for ${amount} requested`, {
      pool: cfg.id,
      requested: amount,
      available: Math.max(0, Math.floor(available + 1e-9)),
      retry_after_ms: retryAfterMs,
      available_at: retryAfterMs === null ? null : now + retryAfterMs,
    });
  }

  /**
   * A dynamic pool ran dry: ask its scaling policy to evaluate now, off the hot path, at most once per
   * SCALING_KICK_MIN_MS and not again before the cooldown the evaluation reports.
   */
  private kickScaling(cfg: PoolConfig, now: number): void {
    if (cfg.sizing !== "dynamic" || cfg.status !== "active" || now < this.scalingKickAfter) return;
    this.scalingKickAfter = now + SCALING_KICK_MIN_MS;
    const evaluation = poolHooks.poolDry?.(this.env, cfg.id, now);
    if (!evaluation) return;
    this.ctx.waitUntil(evaluation.then(
      (outcome) => {
        if (outcome?.cooldown_until) this.scalingKickAfter = Math.max(this.scalingKickAfter, outcome.cooldown_until);
      },
      (err: unknown) => log.warn("scaling_kick_failed", { pool: cfg.id, error: String(err) }),
    ));
  }
}
