/**
 * Money lent to this shard by client objects (decision 008): a single enqueue's estimate is admitted
 * here, in memory, against the shard's hold of its client's budget headroom, instead of by a call to
 * the client's object (one call and one commit fewer per enqueue; the shard's insert is the only write).
 *
 * Exact under any concurrency: the hold (`shard:<this shard>` in the client's `money_holds`) is money in
 * flight for every other admission before any request is admitted against it, and a request admitted
 * here becomes an ordinary request in flight (a row of the client's `in_flight`) before it can run:
 * every exchange with the client first *converts* the requests admitted so far (idempotent: a row each,
 * `ON CONFLICT DO NOTHING`), then replaces the hold. No request is admitted while an exchange is in
 * flight, so what the shard admits never exceeds what the client holds for it. An exchange whose answer
 * is lost leaves nothing to admit from (free 0) until the next one, which replaces that hold whatever it
 * was (one id per shard and client).
 *
 * When: an enqueue the hold cannot cover makes an exchange (concurrent ones of the client wait for it); a
 * pass converts before it admits a client's requests (Admission.admit); IDLE_MS after the client's last
 * enqueue here the requests are converted and the hold returned; a budget read has it returned first
 * (services/budget.ts). The requests not converted yet carry `money_lease = 1` in `requests`: a restarted
 * shard converts them at its first wake, and until then the hold covers them (the client drops it only
 * SHARD_MONEY.HOLD_MS after the last exchange; the cron wakes every shard each minute). The clients
 * whose objects may hold money for this shard are kept too (`money_holders`, written when that changes):
 * a restarted shard returns their holds at its first wake, also those with nothing left to convert
 * (before, such a hold was counted in flight until HOLD_MS, an hour, after a deploy).
 */
import type { BudgetLimit, BudgetView } from "../../domain/budget";
import { newMeter, observe, rateOf, SHARD_MONEY, sliceWant, type RateMeter } from "../../domain/leases";
import { log } from "../../log";
import { budgetLimit } from "../../storage/config";
import { clientStub } from "../client/stub";
import type { LeaseRefusal } from "./types";

interface Lease {
  clientId: string;
  /** The client's budget as the last enqueue here read it (an exchange with nothing to lend reads none). */
  limit: BudgetLimit | null;
  /** Money of the hold not admitted yet. */
  free: number;
  /** The client may hold money for this shard (a hold lent, an answer lost, or a restart): the idle return ends it. */
  held: boolean;
  /** Requests admitted under the hold and not converted yet, with their estimates. */
  pending: Map<string, number>;
  exchanging: Promise<unknown> | null;
  /** Estimates enqueued here per second (what a hold aims at), and when the last came. */
  rate: RateMeter;
  lastAt: number;
}

/**
 * What the leases need of the shard: whether a request is still unfinished, to clear the converted
 * requests' mark, and to keep whether a client's object may hold money for it (across a restart).
 */
export interface MoneyLeaseHost {
  isLive(requestId: string): boolean;
  markConverted(requestIds: string[]): void;
  markHolding(clientId: string, holding: boolean): void;
}

export class MoneyLeases {
  private readonly leases = new Map<string, Lease>();
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly env: Env, private readonly shard: string, private readonly host: MoneyLeaseHost) {}

  /**
   * A restart: the requests admitted under a hold and not converted (their `money_lease` mark), and the
   * clients that may hold money for this shard; converted and returned at once in the background.
   */
  restore(rows: Array<{ id: string; client_id: string; estimate_nano: number }>, holders: string[]): void {
    const now = Date.now();
    for (const clientId of holders) this.lease(clientId, now).held = true;
    for (const row of rows) {
      if (!this.host.isLive(row.id)) continue;
      const l = this.lease(row.client_id, now);
      l.held = true;
      l.pending.set(row.id, row.estimate_nano);
    }
    if (this.leases.size) this.idleLater(0);
  }

  /** A client's requests admitted here and not converted yet, the money of its hold not admitted yet, and whether this shard keeps an entry for it (for tests). */
  state(clientId: string): { unconverted: string[]; free: number; kept: boolean } {
    const l = this.leases.get(clientId);
    return { unconverted: l ? [...l.pending.keys()] : [], free: l?.free ?? 0, kept: l !== undefined };
  }

  /**
   * Admit one request's estimate against the client's hold and, in the same synchronous section,
   * `insert` it (false: it was not queued after all, nothing is taken). Null when done, else why nothing
   * was inserted: the budget as it stands (the 402's explanation), or the client's object unreachable.
   */
  async admit(clientId: string, requestId: string, nano: number, limit: BudgetLimit, insert: () => boolean): Promise<LeaseRefusal | null> {
    const now = Date.now();
    const l = this.lease(clientId, now);
    l.limit = limit;
    observe(l.rate, now, nano);
    l.lastAt = now;
    this.idleLater(SHARD_MONEY.IDLE_MS);
    for (;;) {
      while (l.exchanging) await l.exchanging.catch(() => undefined);
      if (l.free >= nano) {
        if (insert()) {
          l.free -= nano;
          l.pending.set(requestId, nano);
          this.idleLater(SHARD_MONEY.IDLE_MS);
        }
        return null;
      }
      // Enough for about a window of this client's enqueues here; the client lends at most half of what is left.
      const want = sliceWant(rateOf(l.rate, Date.now()), SHARD_MONEY.WINDOW_MS, nano, Number.MAX_SAFE_INTEGER);
      let refused: BudgetView | null;
      try {
        refused = await this.exchangeNow(l, want, nano);
      } catch (err) {
        return { clientUnreachable: String(err) };
      }
      if (refused) return { refused };
    }
  }

  /**
   * Before any of these requests runs: convert the unconverted ones' clients' requests (one exchange per
   * client; none in a drain of work enqueued otherwise). A client still enqueueing here keeps a hold.
   * Returns the requests whose client's exchange failed (they must not run yet), and its error.
   */
  async convertFor(ids: string[]): Promise<{ failed: Set<string>; error: unknown }> {
    const out: { failed: Set<string>; error: unknown } = { failed: new Set(), error: null };
    const clients: Array<{ l: Lease; mine: string[] }> = [];
    for (const l of this.leases.values()) {
      if (l.pending.size === 0) continue;
      const mine = ids.filter((id) => l.pending.has(id));
      if (mine.length) clients.push({ l, mine });
    }
    await Promise.all(clients.map(async ({ l, mine }) => {
      while (l.exchanging) await l.exchanging.catch(() => undefined);
      if (!mine.some((id) => l.pending.has(id))) return;
      const now = Date.now();
      const active = now - l.lastAt < SHARD_MONEY.IDLE_MS;
      try {
        await this.exchangeNow(l, active ? sliceWant(rateOf(l.rate, now), SHARD_MONEY.WINDOW_MS, 0, Number.MAX_SAFE_INTEGER) : 0, 0);
      } catch (err) {
        for (const id of mine) out.failed.add(id);
        out.error = err;
      }
    }));
    return out;
  }

  /** Convert the client's requests and end its hold (a budget read: the view is then the requests' estimates, as without leases). */
  async giveBack(clientId: string): Promise<void> {
    const l = this.leases.get(clientId);
    if (!l) return;
    while (l.exchanging) await l.exchanging.catch(() => undefined);
    if (l.held || l.pending.size > 0) await this.exchangeNow(l, 0, 0);
  }

  private lease(clientId: string, now: number): Lease {
    let l = this.leases.get(clientId);
    if (!l) {
      l = { clientId, limit: null, free: 0, held: false, pending: new Map(), exchanging: null, rate: newMeter(now), lastAt: 0 };
      this.leases.set(clientId, l);
    }
    return l;
  }

  private async exchangeNow(l: Lease, want: number, need: number): Promise<BudgetView | null> {
    const run = this.exchange(l, want, need);
    l.exchanging = run;
    try {
      return await run;
    } finally {
      l.exchanging = null;
    }
  }

  /**
   * Convert every request admitted under the hold (those finished meanwhile, e.g. cancelled, are left
   * out: their money ends with the hold), then replace the hold. Until answered nothing is admitted
   * from it; a failed exchange leaves nothing free (the client may have ended the hold) and the pending
   * requests to the next one (converting again counts nothing twice).
   */
  private async exchange(l: Lease, want: number, need: number): Promise<BudgetView | null> {
    l.free = 0;
    const wasHeld = l.held;
    const sent = [...l.pending];
    const convert = sent.filter(([id]) => this.host.isLive(id));
    const limit = l.limit ?? (want > 0 || need > 0 ? await budgetLimit(this.env, l.clientId) : null);
    const client = clientStub(this.env, l.clientId);
    try {
      // A restart's backlog goes in pieces, under the hold as it is; the last piece also replaces the hold.
      const pieces: Array<Array<[string, number]>> = [];
      for (let i = 0; i < convert.length; i += SHARD_MONEY.CONVERT_CHUNK) pieces.push(convert.slice(i, i + SHARD_MONEY.CONVERT_CHUNK));
      const last = pieces.pop() ?? [];
      for (const piece of pieces) await client.lendShard(limit, { holder: this.shard, convert: piece, want: 0, need: 0, keepHold: true });
      const answer = await client.lendShard(limit, { holder: this.shard, convert: last, want, need });
      for (const [id] of sent) l.pending.delete(id);
      if (sent.length) this.host.markConverted(sent.map(([id]) => id));
      l.free = answer.lent;
      l.held = answer.lent > 0;
      if (l.held !== wasHeld) this.host.markHolding(l.clientId, l.held);
      // The client lends at least `need` or refuses it: anything else would have admit ask again and again.
      if (!answer.refused && answer.lent < need) throw new Error(`client ${l.clientId} lent ${answer.lent} nano-dollars where ${need} were needed`);
      if (l.held) this.idleLater(SHARD_MONEY.IDLE_MS);
      return answer.refused;
    } catch (err) {
      l.held = true;
      if (!wasHeld) this.host.markHolding(l.clientId, true);
      log.warn("money_lease_failed", { client_id: l.clientId, shard: this.shard, pending: l.pending.size, error: String(err) });
      throw err;
    }
  }

  /**
   * The idle return: a client with no enqueue here for IDLE_MS has its requests converted and its hold
   * ended, and at the next round its entry goes. Runs while any entry is left.
   */
  private idleLater(ms: number): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      const now = Date.now();
      let waiting = false;
      for (const l of this.leases.values()) {
        if (l.exchanging || now - l.lastAt < SHARD_MONEY.IDLE_MS) {
          waiting = true;
          continue;
        }
        // Idle, nothing held and nothing to convert: forgotten (a shard sees many clients over its life).
        // No call can be waiting on it: an enqueue would have moved lastAt, and the others only wait on an exchange.
        if (!l.held && l.pending.size === 0) {
          this.leases.delete(l.clientId);
          continue;
        }
        // A failure is logged by the exchange and tried again at the next round.
        this.exchangeNow(l, 0, 0).catch(() => undefined);
        waiting = true;
      }
      if (waiting) this.idleLater(SHARD_MONEY.IDLE_MS);
    }, ms);
  }
}
