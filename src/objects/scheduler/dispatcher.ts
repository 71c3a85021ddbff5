/**
 * The dispatcher: one pass over the queues. It returns expired leases to their queues, then takes the
 * ready requests in fair order, chunk by chunk: claim (QueueStore), admit (Admission), mark running and
 * launch (WorkerCalls), until the in-flight limit or the end of the ready list. An `execute` of
 * immediate work takes the immediate lane (runNow): its own request only, with no pass over the backlog.
 */
import { log } from "../../log";
import { poolConfigs, templateConfigs } from "../../storage/config";
import type { Template } from "../../storage/templates";
import type { Admission, Admitted } from "./admission";
import type { WorkerCalls } from "./calls";
import type { Health } from "./health";
import { BusyShards, IMMEDIATE_HEADROOM, MAX_IN_FLIGHT, paceLimitOf, passChunkOf, SCAN_LIMIT, YOUNG_MS } from "./limits";
import { shardCount } from "./shards";
import type { Outbox } from "./outbox";
import type { Ranking } from "./ranking";
import type { Held, Row } from "./rows";
import type { Settlement } from "./settlement";
import type { QueueStore } from "./store";
import type { SlotLeases } from "./slot-leases";
import type { UnitLeases } from "./unit-leases";

/** What the pass asks of the object that hosts it: whether dispatch is on, a pass later, and whether it owns a client. */
export interface DispatcherHost {
  isRunning(): boolean;
  /** Make sure a pass runs no later than `at` (a timer when soon, the alarm behind it: ./wake.ts). */
  passBy(at: number): void;
  /** False for a client whose new work goes to another shard now (SCHEDULER_SHARDS changed): this shard drains its old work. */
  ownsClient(clientId: string): boolean;
}

/** A shard draining a client it no longer owns looks for freed slots this often (the client object wakes only its owner). */
const FORMER_CLIENT_POLL_MS = 1000;
/**
 * Slow start: a shard that launched nothing for QUIET_MS and finds more ready work than its pacing
 * limit takes at most RAMP_FIRST requests in its next pass, and each pass after that twice as many as
 * the last, up to the limit. A drain's first passes run on a cold isolate (V8 compiles the path as it
 * goes), all shards at once: executes sent then waited behind them the longest of any in the drain. A
 * backlog within the limit goes at once (it makes no such wave).
 */
const QUIET_MS = 1000;
const RAMP_FIRST = 16;

/** The shards of this isolate that have ready work: they share its thread, so they share the pacing budget (./limits.ts). */
const busyShards = new BusyShards<Dispatcher>();

/** The collaborators a pass drives. */
export interface PassParts {
  store: QueueStore;
  ranking: Ranking;
  admission: Admission;
  calls: WorkerCalls;
  settlement: Settlement;
  health: Health;
  outbox: Outbox;
  units: UnitLeases;
  slots: SlotLeases;
}

export class Dispatcher {
  /** When the last pass began. */
  lastPassAt: number | null = null;
  /** When a pass last launched a call, and how many the next pass may take at most (slow start). */
  private lastLaunchAt = 0;
  private ramp = RAMP_FIRST;
  private readonly store: QueueStore;
  private readonly ranking: Ranking;
  private readonly admission: Admission;
  private readonly calls: WorkerCalls;
  private readonly settlement: Settlement;
  private readonly health: Health;
  private readonly outbox: Outbox;
  private readonly units: UnitLeases;
  private readonly slots: SlotLeases;

  constructor(private readonly env: Env, parts: PassParts, private readonly host: DispatcherHost) {
    this.store = parts.store;
    this.ranking = parts.ranking;
    this.admission = parts.admission;
    this.calls = parts.calls;
    this.settlement = parts.settlement;
    this.health = parts.health;
    this.outbox = parts.outbox;
    this.units = parts.units;
    this.slots = parts.slots;
  }

  /**
   * One dispatch pass: make the settlements owed that are due, return expired leases to the queue, then
   * claim the best ready requests and admit and launch them, chunk by chunk, until the in-flight limit
   * or the ready list is reached.
   * Requests blocked on a pool or a client's slots are skipped for the rest of the pass (no
   * lower-priority request overtakes them on that pool or client). Returns how many were launched.
   */
  async pass(trigger: string, onlyIds?: string[]): Promise<number> {
    const now = Date.now();
    this.lastPassAt = now;
    this.settlement.retryOwed(now);
    const lost = this.settlement.reclaimLeases(now);
    if (lost.length) await this.settlement.releaseHolds(lost.map((row) => ({ row: { ...row, reservations: null }, actual: {}, final: true })));
    if (!this.host.isRunning()) {
      await this.outbox.flush();
      return 0;
    }
    const [templates, pools] = await Promise.all([templateConfigs(this.env), poolConfigs(this.env), onlyIds ? undefined : this.ranking.loadWeights()]);
    // The fair order, read lazily: a pass ranks the ready backlog but picks only as far as it launches.
    const nextInOrder = onlyIds ? listed(onlyIds) : this.ranking.readyOrder(now);
    const blockedPools = new Set<string>();
    const fullClients = new Set<string>();
    // Identical cacheable requests are coalesced: while one runs, the others wait and share its result.
    const keysInFlight = new Set<string>();
    for (const id of this.store.active) {
      const key = this.store.plans.get(id)?.cache_key;
      if (key) keysInFlight.add(key);
    }
    let coalescedWaiting = 0;
    let launched = 0;
    let wakeAt: number | null = null;
    const limit = onlyIds ? MAX_IN_FLIGHT + IMMEDIATE_HEADROOM : MAX_IN_FLIGHT;
    let scanned = 0;
    let exhausted = false;
    if (!onlyIds) busyShards.note(this, this.store.readyCount(now) > 0, now);
    const shards = shardCount(this.env);
    const paceLimit = paceLimitOf(shards, busyShards.count(now));
    const chunkLimit = passChunkOf(shards);
    // Quiet: nothing in flight and nothing launched for QUIET_MS (a shard held at its limits, or polling a former client, is not).
    if (!onlyIds && this.calls.inflight.size === 0 && now - this.lastLaunchAt > QUIET_MS) this.ramp = this.store.readyCount(now) > paceLimit ? RAMP_FIRST : paceLimit;
    const youngLimit = onlyIds ? Infinity : Math.min(paceLimit, this.ramp);
    let paced = false;
    while (!exhausted && this.calls.inflight.size + this.store.admitting.size < limit) {
      const youngRoom = youngLimit - this.calls.young(Date.now(), YOUNG_MS) - this.store.admitting.size;
      if (youngRoom <= 0) {
        paced = true;
        break;
      }
      // The next requests in rank order, as many as there is room for: none is passed over unless it
      // cannot run now (room freed while a chunk was admitted goes to the very next in line).
      const room = Math.min(chunkLimit, youngRoom, limit - this.calls.inflight.size - this.store.admitting.size);
      const chunk: Array<{ id: string; template: Template | undefined }> = [];
      while (chunk.length < room) {
        const id = scanned < SCAN_LIMIT ? nextInOrder() : undefined;
        if (id === undefined) {
          exhausted = true;
          break;
        }
        scanned += 1;
        const q = this.store.queued.get(id);
        if (!q || q.notBefore > now || fullClients.has(q.clientId)) continue;
        const template = templates.get(this.store.rowOf(id)!.template);
        if (template && template.requirements.some((r) => blockedPools.has(r.pool))) continue;
        const key = this.store.plans.get(id)?.cache_key;
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
      const rows = this.admission.claim(chunk, Date.now());
      const admitted = await this.admission.admit(rows, templates, pools, blockedPools, fullClients);
      this.start(admitted.rows, Date.now());
      this.calls.launchAll(admitted.rows, templates);
      this.health.saveCounters();
      launched += admitted.rows.length;
      if (admitted.retryAt !== null) wakeAt = Math.min(wakeAt ?? Infinity, admitted.retryAt);
    }
    // Its ready work all launched: not busy any more, so a shard left alone with work takes the whole budget at its next pass.
    if (!onlyIds && this.store.readyCount(Date.now()) === 0) busyShards.note(this, false, Date.now());
    if (launched > 0) {
      log.info("dispatch_pass", { trigger, launched, queued: this.store.queued.size, in_flight: this.calls.inflight.size });
      if (!onlyIds) {
        this.ramp = Math.min(paceLimit, this.ramp * 2);
        this.lastLaunchAt = Date.now();
      }
    }
    const nextReady = this.store.nextNotBefore(Date.now());
    if (nextReady !== null) wakeAt = Math.min(wakeAt ?? Infinity, nextReady);
    // More ready work than this pass could take: continue right after it, without waiting for the cron.
    if (!onlyIds && this.store.readyCount(Date.now()) > coalescedWaiting && blockedPools.size === 0 && fullClients.size === 0 && this.calls.inflight.size < MAX_IN_FLIGHT) {
      // Paced: come back when some of the calls just started have ended or aged (a settlement wakes it sooner).
      wakeAt = paced ? Date.now() + YOUNG_MS / 5 : Date.now();
    } else if (paced && (blockedPools.size > 0 || fullClients.size > 0)) {
      // Paced with a pool or client blocked too: the others' work may still go, once the calls just started have aged.
      wakeAt = Math.min(wakeAt ?? Infinity, Date.now() + YOUNG_MS / 5);
    }
    if ([...fullClients].some((c) => !this.host.ownsClient(c))) wakeAt = Math.min(wakeAt ?? Infinity, Date.now() + FORMER_CLIENT_POLL_MS);
    if (wakeAt !== null) this.host.passBy(wakeAt);
    if (!onlyIds) await this.health.checkAlerts(Date.now());
    // Nothing left queued here: the units lent to this shard and not in use go back to their pools.
    if (!onlyIds && this.store.queued.size === 0) await Promise.all([this.units.handBackFree(), this.slots.handBackFree()]);
    // What a restart would read, moved up to the oldest request still live (at most every 30 s).
    if (!onlyIds) this.store.saveLoadFloor(Date.now());
    if (!onlyIds) {
      // A pass the alarm or the timer brought in a busy stretch delivers with the next one due, in the background: the
      // next pass does not wait for D1 (Outbox.flushPaced). Other passes (the cron's, explicit ones) deliver before they end.
      const due = trigger === "alarm" || trigger === "timer" ? this.outbox.flushPaced(Date.now()) : (await this.outbox.flush(), null);
      if (due !== null) this.host.passBy(due);
    }
    return launched;
  }

  /**
   * The immediate lane: admit and launch one request now, with no pass over the backlog (no lease
   * sweep, no ranking, no alert check or outbox flush), within the headroom kept above the in-flight
   * limit; its outcome is settled on its own while its caller waits (Settlement.queue). False when it
   * stays queued: not ready, taken meanwhile, refused by its client's or a pool's limits (then the alarm
   * retries it first: it ranks highest), or an identical cacheable request is running (it will share
   * that result).
   */
  async runNow(id: string, slotHeld = false, poolsHeld: Held[] = []): Promise<boolean> {
    // `slotHeld`, `poolsHeld`: its job slot came with its money and its units were taken beside it
    // (services/requests.ts); while it stays queued here, they are given back.
    const stays = (): false => {
      const row = this.store.rowOf(id)!;
      this.admission.giveBackHeld({ id, clientId: row.client_id, tier: row.tier, traceId: row.trace_id ?? null }, slotHeld, poolsHeld);
      return false;
    };
    if (!this.store.queued.has(id) || this.calls.inflight.size + this.store.admitting.size >= MAX_IN_FLIGHT + IMMEDIATE_HEADROOM) return stays();
    const key = this.store.plans.get(id)?.cache_key;
    if (key) {
      for (const other of this.store.active) if (other !== id && this.store.plans.get(other)?.cache_key === key) return stays();
    }
    const [templates, pools] = await Promise.all([templateConfigs(this.env), poolConfigs(this.env)]);
    const q = this.store.queued.get(id);
    // A pass took it meanwhile (its admission holds the slot now: the same job id), or it waits for its time.
    if (!q) return false;
    if (q.notBefore > Date.now()) return stays();
    const rows = this.admission.claim([{ id, template: templates.get(this.store.rowOf(id)!.template) }], Date.now());
    let admitted: Admitted;
    try {
      admitted = await this.admission.admit(rows, templates, pools, new Set(), new Set(), slotHeld ? new Set([id]) : undefined, poolsHeld.length ? new Map([[id, poolsHeld]]) : undefined);
    } catch {
      // An object or D1 could not be reached: the request is queued again for ADMISSION_RETRY_MS later
      // (Admission.abandon), its caller answered so, and execute's pass sets the alarm for that time.
      return false;
    }
    this.start(admitted.rows, Date.now());
    this.calls.launchAll(admitted.rows, templates);
    this.health.saveCounters();
    if (admitted.rows.length === 0) this.host.passBy(admitted.retryAt ?? Date.now());
    return admitted.rows.length > 0;
  }

  /** Mark admitted requests running (one write), counted as dispatched for fairness and metrics. */
  private start(rows: Row[], now: number): void {
    this.store.start(rows, now);
    for (const row of rows) {
      this.ranking.noteDispatch(row, now);
      this.health.count(row.template, "dispatches");
    }
  }
}

/** A fixed list of ids read like the fair order (an execute's own request, a test's pick). */
function listed(ids: string[]): () => string | undefined {
  let i = 0;
  return () => ids[i++];
}
