import type { BudgetLimit, BudgetView } from "../domain/budget";
import { MONEY_LEASE, newMeter, observe, rateOf, sliceWant, type RateMeter } from "../domain/leases";
import { AppError } from "../errors";
import type { SpendMark } from "../objects/client/types";
import { budgetLimit } from "../storage/config";
import { spendBudgetRefusal } from "./refusals";
import { clientStub } from "../objects/client/stub";

/**
 * Budgets on every direct spend, decided in this isolate. A client's object lends this isolate a slice
 * of the client's budget headroom (a money lease, held there as money in flight); consumes are checked
 * against the slice locally and most need no call to the client's object. When the slice cannot cover
 * a spend (or is about to expire), the isolate hands it back, with the spend made under it per pool
 * outbox, and gets a new one: one call, made by one consume while the others wait for it.
 *
 * A debit's outcome comes later (the pool may refuse): a success adds its outbox mark to the slice, a
 * refusal gives the money back to it. Debits still open when their slice is handed back are carried
 * into the next slice (the client's object holds them again in it), so their money is never out of flight.
 */

/** One slice of a client's headroom in this isolate. */
interface Slice {
  /** The lease id at the client's object. */
  id: string;
  /** Local time after which it serves no new debit (its expiry there, less a margin). */
  deadline: number;
  available: number;
  /** Debits whose outcome is not known yet. */
  open: number;
  /** Spend made under it, per pool outbox: the last seq and the total cost. */
  marks: Map<string, [seq: number, nano: number]>;
  /** Handed back: where its open debits went (null while the exchange is in flight). */
  next: Slice | null;
  handedBack: boolean;
  /** Outcomes that arrived while it was being handed back, applied to the next slice. */
  deferred: Array<() => void>;
  dead: boolean;
}

interface Wallet {
  slice: Slice | null;
  renewing: boolean;
  renewStarted: number;
  meter: RateMeter;
}

/** A debit made against a slice; `settle` it with the spend's outbox mark, or with null when nothing was spent. */
export interface Debit {
  slice: Slice;
  nano: number;
}

const wallets = new Map<string, Wallet>();
const WALLETS_MAX = 10_000;
/** How long a debit waits for another consume's exchange with the client's object, and how often it looks. */
export const moneySettings = { waitMs: 10_000, pollMs: 1 };

/**
 * Hold `nano` of the client's budget for a spend now: null when there is nothing to hold (it costs
 * nothing, or the client has no limit). Throws 402 budget_exceeded, with the budget as it stands, when
 * spent + in flight + this spend would pass the budget.
 */
export async function debitMoney(
  env: Env, ctx: Pick<ExecutionContext, "waitUntil">, clientId: string, nano: number, what: { pool: string; units: number },
): Promise<Debit | null> {
  if (nano <= 0) return null;
  const limit = await budgetLimit(env, clientId);
  if (!limit) throw new AppError("client_not_found", `no client ${clientId}`, { client_id: clientId });
  if (limit.limitNano === null) return null;
  let w = wallets.get(clientId);
  if (!w) {
    if (wallets.size >= WALLETS_MAX) wallets.clear();
    wallets.set(clientId, (w = { slice: null, renewing: false, renewStarted: 0, meter: newMeter(Date.now()) }));
  }
  observe(w.meter, Date.now(), nano);
  const waitUntil = Date.now() + moneySettings.waitMs;
  for (;;) {
    const s = w.slice;
    if (s && Date.now() < s.deadline && s.available >= nano) {
      s.available -= nano;
      s.open += nano;
      return { slice: s, nano };
    }
    if (w.renewing && Date.now() - w.renewStarted > moneySettings.waitMs) {
      // An exchange that never answered: stop waiting for it (if it answers after all, it still applies).
      w.renewing = false;
    }
    if (!w.renewing) {
      // Kept alive with waitUntil: other consumes wait for it, even if this request goes away.
      const renewal = renew(env, clientId, w, limit, nano);
      ctx.waitUntil(renewal.then(() => undefined, () => undefined));
      const refused = await renewal;
      if (refused) throw spendBudgetRefusal(clientId, nano, what, refused);
      continue;
    }
    if (Date.now() > waitUntil) throw new AppError("unavailable", `no budget answer for client ${clientId} within ${moneySettings.waitMs} ms`);
    // Polled with this request's own timer: a promise settled by another request would run this one's
    // continuation in that request's context (see waitTurn in ./pools.ts).
    await new Promise((resolve) => setTimeout(resolve, moneySettings.pollMs));
  }
}

/** The spend a debit stood for happened (`mark`: its outbox and seq) or not (null: the money is free again). */
export function settleDebit(debit: Debit | null, mark: { source: string; seq: number } | null): void {
  if (!debit) return;
  let s = debit.slice;
  while (s.next) s = s.next;
  if (s.dead) return;
  if (s.handedBack) {
    s.deferred.push(() => settleDebit(debit, mark));
    return;
  }
  s.open -= debit.nano;
  if (mark && mark.seq > 0) {
    const prior = s.marks.get(mark.source);
    s.marks.set(mark.source, [Math.max(prior?.[0] ?? 0, mark.seq), (prior?.[1] ?? 0) + debit.nano]);
  } else {
    s.available += debit.nano;
  }
}

/**
 * Hand the current slice back and get the next one (one exchange per client at a time). Returns the
 * budget as it stands when `need` was refused.
 */
async function renew(env: Env, clientId: string, w: Wallet, limit: BudgetLimit, need: number): Promise<BudgetView | null> {
  w.renewing = true;
  w.renewStarted = Date.now();
  const old = w.slice;
  w.slice = null;
  if (old) old.handedBack = true;
  const carry = old?.open ?? 0;
  const marks: SpendMark[] = old ? [...old.marks].map(([source, [seq, nano]]) => [source, seq, nano]) : [];
  const want = sliceWant(rateOf(w.meter, Date.now()), MONEY_LEASE.WINDOW_MS, need, Number.MAX_SAFE_INTEGER);
  try {
    const answer = await clientStub(env, clientId).leaseMoney(limit, {
      returning: old ? { id: old.id, marks } : null, carry, need, want,
    });
    const fresh: Slice | null = answer.lease
      ? {
          id: answer.lease.id, deadline: Date.now() + answer.lease.ttlMs - MONEY_LEASE.MARGIN_MS, available: answer.lease.nano - carry,
          open: carry, marks: new Map(), next: null, handedBack: false, deferred: [], dead: false,
        }
      : null;
    w.slice = fresh;
    if (old) {
      // With no new slice there was nothing to carry (carry > 0 is always lent again).
      if (fresh) old.next = fresh;
      else old.dead = true;
      old.handedBack = false;
      for (const apply of old.deferred.splice(0)) apply();
    }
    return answer.refused;
  } catch (err) {
    // Whether the client's object took the old slice back is unknown: it holds it until its drop time
    // either way (conservative), and its open debits are settled there, not here.
    if (old) {
      old.dead = true;
      old.handedBack = false;
      old.deferred.length = 0;
    }
    throw err;
  } finally {
    w.renewing = false;
  }
}

/**
 * Hand every slice of this isolate back now (tests). An isolate that goes idle does not: its slices
 * lapse at the client's object (held to their expiry and the grace), the one conservative cost.
 */
export async function returnMoney(env: Env): Promise<void> {
  await Promise.all([...wallets].map(async ([clientId, w]) => {
    if (!w.slice || w.renewing) return;
    const limit = await budgetLimit(env, clientId);
    if (limit) await renew(env, clientId, w, limit, 0).catch(() => undefined);
  }));
}
