/**
 * Job slots lent to this shard by client objects (decision 007, "Slots"): a chunk's requests take their
 * slots from the shard's block of their client's concurrency limit, in memory, with no job row each at
 * the client's object (a row written at admission and deleted at settlement, per request, were most of
 * what the client objects cost a drain). The block is one job row there (../client/jobs.ts, lend).
 *
 * Exact under any concurrency: the block's slots are out of the client's limit before any request takes
 * one. An exchange sets the block's size (not adds to it), never below the slots in use it reports, and
 * no request takes from a block while an exchange of it is in flight: in use can only fall meanwhile,
 * so whatever size the client sets covers every running request. An exchange whose answer is lost
 * leaves the block as the smaller of its size and its use then, until one is answered.
 *
 * A block lives to the end its last exchange set, SLOT_LEASE.TTL_MS ahead, and only requests whose lease
 * ends SLOT_LEASE.MARGIN_MS before it take from it (others take a job row each), so a shard that dies
 * holds the slots that long and no longer. A live shard renews every RENEW_MS while it holds a block,
 * shrinks it to its use when it took nothing since the last renewal, and gives it back when its queue
 * is empty. A new life of the object holds under a new holder; an earlier life's block ends on its own.
 */
import { newId } from "../../domain/ids";
import { newMeter, observe, rateOf, SLOT_LEASE, type RateMeter } from "../../domain/leases";
import type { ResolvedQuota } from "../../domain/quota";
import { log } from "../../log";
import { clientStub } from "../client/stub";

interface Block {
  clientId: string;
  /** The client's quota as last read (the client's object applies any burst). */
  quota: ResolvedQuota;
  /** Slots lent, and slots running requests took of them. */
  size: number;
  inUse: number;
  /** When the block ends at the client unless renewed (local time). */
  until: number;
  /** Bumped when the block lapsed: slots taken before are not its any more. */
  epoch: number;
  exchanging: Promise<void> | null;
  /** Slots were taken since the last renewal (else the renewal shrinks the block to its use). */
  used: boolean;
  /** The client lent nothing more when last asked to grow: no chunk asks again before this. */
  pausedUntil: number;
  /** Requests admitted per second. */
  requests: RateMeter;
}

/** A request admitted to one of a client's requests' slots: its id and the end of its lease. */
export interface SlotClaim {
  id: string;
  leaseUntil: number;
}

export class SlotLeases {
  private readonly blocks = new Map<string, Block>();
  /** Requests running on a block slot: their client, the block's epoch then, and the end of their lease. */
  private readonly taken = new Map<string, { clientId: string; epoch: number; leaseUntil: number }>();
  /** One holder per object life: an earlier life's blocks end on their own at the clients. */
  private readonly holder: string;
  private timer: ReturnType<typeof setTimeout> | null = null;

  /** `roomMade`: an exchange left a block with free slots (the shard may have work its pass could not admit meanwhile). */
  constructor(private readonly env: Env, private readonly shard: string, private readonly roomMade: () => void = () => undefined) {
    this.holder = `${shard}:${newId("isolate")}`;
  }

  /**
   * Wait for an exchange of the client's block in flight, if any (no slot is taken from a block meanwhile):
   * an admission that went on without it would ask the client for job rows that the block may hold.
   */
  async ready(clientId: string): Promise<void> {
    const b = this.blocks.get(clientId);
    while (b?.exchanging) await b.exchanging.catch(() => undefined);
  }

  /** Slots held now over all blocks (lent, and in use), for tests. */
  held(): { size: number; inUse: number } {
    let size = 0;
    let inUse = 0;
    for (const b of this.blocks.values()) {
      size += b.size;
      inUse += b.inUse;
    }
    return { size, inUse };
  }

  /**
   * Take slots of the client's block for these requests, in order, while it has room: the ids that got
   * one (the others ask for a job row each). While `backlog` (work is left queued) and the client's
   * requests come at SLOT_LEASE.MIN_RATE or more, a block short of room is grown (or asked for) in the
   * background. Nothing is taken for a client with daily caps per pool (a block holds no units).
   */
  take(clientId: string, quota: ResolvedQuota, claims: SlotClaim[], now: number, backlog: boolean): Set<string> {
    const out = new Set<string>();
    if (claims.length === 0 || Object.keys(quota.poolDaily).length > 0) return out;
    const b = this.block(clientId, quota, now);
    observe(b.requests, now, claims.length);
    if (!b.exchanging && now < b.until) {
      for (const c of claims) {
        if (b.inUse >= b.size) break;
        // A request whose lease would outlive the block takes a job row of its own.
        if (c.leaseUntil > b.until - SLOT_LEASE.MARGIN_MS) continue;
        b.inUse += 1;
        this.taken.set(c.id, { clientId, epoch: b.epoch, leaseUntil: c.leaseUntil });
        out.add(c.id);
      }
      if (out.size > 0) b.used = true;
    }
    // Room for this chunk and the next: a block grows to what runs at once here.
    if (out.size < claims.length && backlog && now >= b.pausedUntil && rateOf(b.requests, now) >= SLOT_LEASE.MIN_RATE) {
      this.exchangeLater(b, Math.max(b.size, b.inUse + 2 * claims.length));
    }
    return out;
  }

  /** A request is done with its slot (settled, sent back to its queue, cancelled, or its lease ended): the block has it again. */
  release(requestId: string): void {
    const t = this.taken.get(requestId);
    if (!t) return;
    this.taken.delete(requestId);
    const b = this.blocks.get(t.clientId);
    if (b && b.epoch === t.epoch) b.inUse -= 1;
  }

  /** Give back every block's free slots now (nothing is queued here): each client's use is exact again. */
  async handBackFree(): Promise<void> {
    await Promise.all([...this.blocks.values()].map(async (b) => {
      // After an exchange in flight (a top-up asked a moment ago): its answer may have grown the block.
      while (b.exchanging) await b.exchanging.catch(() => undefined);
      if (b.size > b.inUse) await this.exchangeNow(b, b.inUse);
    }));
  }

  private block(clientId: string, quota: ResolvedQuota, now: number): Block {
    let b = this.blocks.get(clientId);
    if (!b) {
      b = { clientId, quota, size: 0, inUse: 0, until: 0, epoch: 0, exchanging: null, used: false, pausedUntil: 0, requests: newMeter(now) };
      this.blocks.set(clientId, b);
    }
    b.quota = quota;
    // Past its end without a renewal answered: the client may have dropped it (the requests on it have
    // ended: their leases ended before it). Slots taken before are not this block's any more.
    if (b.size > 0 && now >= b.until && !b.exchanging) Object.assign(b, { size: 0, inUse: 0, epoch: b.epoch + 1 });
    return b;
  }

  /** An exchange in the background, unless one is in flight: a failure is logged (the requests take a job row each meanwhile). */
  private exchangeLater(b: Block, want: number): void {
    if (b.exchanging) return;
    this.exchangeNow(b, want).catch(() => undefined);
  }

  private async exchangeNow(b: Block, want: number): Promise<void> {
    if (b.exchanging) return;
    const run = this.exchange(b, want);
    b.exchanging = run;
    try {
      await run;
    } finally {
      b.exchanging = null;
      this.keepAlive();
    }
  }

  /**
   * Set the block's size at the client. No slot is taken from it meanwhile (take skips a block being
   * exchanged), so the use reported stays an upper bound of the use while the client decides.
   */
  private async exchange(b: Block, want: number): Promise<void> {
    const epoch = b.epoch;
    const inUse = b.inUse;
    const until = Math.max(b.until, Date.now() + SLOT_LEASE.TTL_MS);
    try {
      const size = await clientStub(this.env, b.clientId).leaseSlots(b.quota, { holder: this.holder, want: Math.max(want, inUse), inUse, until });
      if (b.epoch !== epoch) return;
      // Asked to grow and lent nothing more (no plenty, or a daily cap): the chunks take job rows a while without asking.
      if (want > inUse && size <= inUse) b.pausedUntil = Date.now() + SLOT_LEASE.RENEW_MS;
      b.size = size;
      b.until = size > 0 ? until : 0;
      if (size > b.inUse) this.roomMade();
    } catch (err) {
      // Applied or not, the client holds at least this many for the holder until at least the old end.
      if (b.epoch === epoch) b.size = Math.min(b.size, inUse);
      log.warn("slot_lease_failed", { client_id: b.clientId, shard: this.shard, error: String(err) });
      throw err;
    }
  }

  /** While any block is held, renew every RENEW_MS: a block not used since the last renewal shrinks to its use. */
  private keepAlive(): void {
    if (this.timer || ![...this.blocks.values()].some((b) => b.size > 0)) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      // A slot whose request's lease ended long ago is back in the block (the lease sweep releases it; this is
      // the backstop, so a slot missed by every path cannot keep a block, and this object, alive for good).
      const stale = Date.now() - SLOT_LEASE.MARGIN_MS;
      for (const [id, t] of this.taken) if (t.leaseUntil < stale) this.release(id);
      for (const b of this.blocks.values()) {
        if (b.size === 0 || b.exchanging) continue;
        const want = b.used ? b.size : b.inUse;
        b.used = false;
        this.exchangeLater(b, want);
      }
      this.keepAlive();
    }, SLOT_LEASE.RENEW_MS);
  }
}
