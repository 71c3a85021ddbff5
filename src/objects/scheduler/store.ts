/**
 * The queue store: the `requests` table, its only writer, and its exact copies in memory (the live
 * rows, the queued index, the parsed plans), so that the dispatch path reads no rows back from SQLite.
 * Every change of a request's status goes through here, with its outbox entry in the same write.
 */
import type { QueueName } from "../../domain/priority";
import { ReadyIndex } from "../../domain/ready-index";
import type { Tier } from "../../domain/types";
import { EndWaiters } from "./end-waiters";
import { END_JOIN, Ends, withoutEnd, type EndEntry, type RowWithEnd } from "./ends";
import { Launches, type LaunchEntry } from "./launches";
import { FLOOR_KEY, floorFrom, LoadFloor } from "./load-floor";
import { purgeFinished } from "./purge";
import { hasOptimizerRecords } from "./outbox";
import { appendTo } from "../../domain/groups";
import { poolNeedsOf, readyAtOf, specConflict, view, type Finished, type Queued, type Row } from "./rows";
import { SharedTexts } from "./shared-texts";
import { newRequestId, type NewRequest, type RequestView, type StoredPlan } from "./types";

/** What the store asks of ranking: the numbers a request is indexed and first scored with. */
export interface StoreHost {
  /** A tier's priority points (the tier rows as last loaded; the defaults before). */
  tierPointsOf(tier: Tier): number;
  /** The priority score a new request is stored with. */
  enqueueScore(clientId: string, tier: Tier, queue: QueueName, now: number): number;
}

/**
 * A request's row with its body (plan, estimate and `params`, an expression over request_bodies b), as
 * Row has them, and the end record that holds its end if one does (`end_seq`: Ends.overlay reads it).
 * The end record's join first: a restart's read skips a row an end record holds before reading its body.
 */
const rowWith = (params: string) =>
  `SELECT r.*, ${params} AS params, b.plan, b.estimate_detail, e.seq AS end_seq FROM requests r ${END_JOIN} LEFT JOIN request_bodies b ON b.id = r.id`;
const FULL_ROW = rowWith("b.params");
/**
 * Params longer than this are not kept in the copies in memory: a prompt's kilobytes per queued request
 * would bound a shard's backlog by its isolate's memory; they are read at launch (loadParams). Shorter
 * ones are kept, so the usual small params cost no read at launch (a first drain read them from a cold
 * page cache: ~15% slower).
 */
const KEEP_PARAMS_CHARS = 256;
/** FULL_ROW as the copies in memory keep it (long params left out). */
const LIVE_ROW = rowWith(`CASE WHEN length(b.params) <= ${KEEP_PARAMS_CHARS} THEN b.params END`);

export class QueueStore {
  /** The queued requests: the index a pass ranks and claims from. */
  readonly queued = new Map<string, Queued>();
  /** The same requests, each client's in its own order, held-back ones apart (domain/ready-index.ts): what a pass reads. */
  readonly ready = new ReadyIndex<Queued>();
  /**
   * Every request not yet finished (queued, dispatching, running), as stored. This store is the only
   * writer of its table, so the copy stays exact.
   */
  readonly live = new Map<string, Row>();
  /** The optimizer's plan of each live request that has one (parsed once; requests with the same plan share one object). */
  readonly plans = new Map<string, StoredPlan>();
  /** The one copy of texts and plans that live requests share (./shared-texts.ts). */
  private readonly shared = new SharedTexts();
  /** Requests claimed by a pass and still being admitted. */
  readonly admitting = new Set<string>();
  /**
   * The live requests dispatching or running (claimed, and not yet finished or back in their queue):
   * what the lease sweep and the in-flight cache keys walk at every pass, not the whole backlog.
   */
  readonly active = new Set<string>();
  /** Bumped by every change of the queued index that a cached ranking must not outlive. */
  epoch = 0;
  /** The last dispatch sequence number given. */
  seq = 0;
  /** The request the last change of the queued index added, the epoch it made, and how many were added so far (Ranking.splice). */
  lastIndexed: { id: string; epoch: number; added: number } | null = null;
  /** Callers waiting for a request's attempt to end (an execute). */
  readonly waiters = new EndWaiters();
  /**
   * Inserts held back until their request's next write (insert's `defer`): an execute's row goes into
   * SQLite with its start, in one commit where it took two, and the calls that admit it go out with no
   * write in front of them. Every writer of `requests` writes these first.
   */
  private unwritten = new Map<string, () => void>();
  /** The launch records (./launches.ts): a launched chunk's one write. */
  private readonly launches: Launches;
  /** The end records (./ends.ts): the ends of requests completed the usual way, a settlement batch's in one record. */
  readonly ends: Ends;
  /** What a restart reads (./load-floor.ts). */
  private readonly floor: LoadFloor;

  constructor(readonly sql: SqlStorage, private readonly host: StoreHost) {
    this.launches = new Launches(sql);
    this.ends = new Ends(sql);
    this.floor = new LoadFloor(sql);
  }

  /** Save the load floor (at most every 30 s): a restart reads the rows from the oldest live request's creation on. */
  saveLoadFloor(now: number): void {
    const floor = this.floor.next(this.live.values(), this.seq, now);
    if (floor !== null) this.writeState(FLOOR_KEY, floor);
  }

  /** Read the unfinished requests into memory: once, when the object starts. */
  load(): void {
    // Only the rows created from the load floor on (./load-floor.ts): every one before it had ended.
    const floor = floorFrom(this.readState().get(FLOOR_KEY));
    const launched = this.launches.begin();
    for (const read of this.floor.liveRows(floor, LIVE_ROW)) {
      const row = this.shared.row(withoutEnd(read));
      this.launches.resume(row);
      this.live.set(row.id, row);
      if (row.plan) this.plans.set(row.id, this.shared.plan(row.plan));
      if (row.status === "queued") this.index(row);
      else this.active.add(row.id);
    }
    this.seq = Math.max(launched, this.floor.lastSeq(floor, this.ends, this.live.values()));
    this.launches.prune();
  }

  /** The `state` table: small settings and counters the object keeps across restarts. */
  readState(): Map<string, string> {
    return new Map(this.sql.exec<{ k: string; v: string }>("SELECT k, v FROM state").toArray().map((r) => [r.k, r.v]));
  }

  writeState(key: string, value: string): void {
    this.sql.exec("INSERT INTO state (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v", key, value);
  }

  /**
   * Add a request (completed at once when it is a cache hit); a repeated idempotency key returns the first.
   * `defer`: hold the row's write back until its next one (see `unwritten`; not for a cache hit, nor for a
   * request with an idempotency key, which a concurrent call must find in the table). Until then it
   * exists in memory only: an object that dies meanwhile loses it, and its caller's call fails with it.
   */
  insert(item: NewRequest, now: number, defer = false): { request: RequestView; duplicate: boolean; conflict?: boolean } {
    if (item.idempotencyKey) {
      const prior = this.read("r.client_id = ? AND r.idempotency_key = ?", item.clientId, item.idempotencyKey)[0];
      if (prior) return { request: view(prior), duplicate: true, ...(specConflict(prior, item.specHash ?? null) ? { conflict: true } : {}) };
    }
    const id = item.id ?? newRequestId();
    const notBefore = Math.max(now, item.notBefore ?? now);
    const priority = this.host.enqueueScore(item.clientId, item.tier, item.queue, now);
    const params = item.paramsStored ?? JSON.stringify(item.params ?? null);
    const plan = item.plan ? { ...item.plan } : null;
    if (item.cached && plan) {
      // A cache hit: completed now, no dispatch, no pool units, no cost.
      plan.cached = true;
      plan.strategies = [...plan.strategies, { strategy: "caching", saved_nano: item.cached.costNano, detail: "answered from the result cache" }];
    }
    const planText = this.shared.text(plan ? JSON.stringify(plan) : null);
    const cached = item.cached ?? null;
    const estimateText = this.shared.text(JSON.stringify(item.estimate));
    const write = () => {
      this.sql.exec(
        `INSERT INTO requests (id, client_id, tier, max_concurrent, template, queue, status, priority, attempts, max_attempts,
           idempotency_key, estimate_nano, created_at, updated_at, not_before, ready_at,
           result, actual_nano, actual_detail, first_started_at, started_at, finished_at, spec_hash, trace_id, money_lease)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        id, item.clientId, item.tier, item.maxConcurrent, item.template, item.queue, cached ? "completed" : "queued", priority,
        item.maxAttempts, item.idempotencyKey, item.estimateNano, now, now, notBefore, notBefore,
        cached ? JSON.stringify(cached.result ?? null) : null, cached ? 0 : null, cached ? "[]" : null, cached ? now : null, cached ? now : null, cached ? now : null,
        item.specHash ?? null, item.traceId ?? null, item.moneyLeased ? 1 : null,
      );
      this.sql.exec("INSERT INTO request_bodies (id, params, plan, estimate_detail) VALUES (?, ?, ?, ?)", id, params, planText, estimateText);
    };
    if (defer && !cached && !item.idempotencyKey) this.unwritten.set(id, write);
    else write();
    const row: Row = {
      id, client_id: this.shared.text(item.clientId), tier: item.tier, max_concurrent: item.maxConcurrent, template: this.shared.text(item.template),
      params: params.length <= KEEP_PARAMS_CHARS ? params : null, queue: item.queue, status: cached ? "completed" : "queued", priority, attempts: 0,
      max_attempts: item.maxAttempts, idempotency_key: item.idempotencyKey, estimate_nano: item.estimateNano,
      actual_nano: cached ? 0 : null, result: cached ? JSON.stringify(cached.result ?? null) : null, error: null, created_at: now, updated_at: now, not_before: notBefore,
      lease_until: null, started_at: cached ? now : null, finished_at: cached ? now : null, dispatch_seq: null, reservations: null,
      ready_at: notBefore, first_started_at: cached ? now : null, plan: planText,
      estimate_detail: estimateText, actual_detail: cached ? "[]" : null, trace_id: item.traceId ?? null,
    };
    if (cached) {
      this.sql.exec("INSERT INTO finished_outbox (id, optimizer) VALUES (?, ?) ON CONFLICT (id) DO NOTHING", id, plan && hasOptimizerRecords(plan) ? 1 : 0);
      return { request: view(row), duplicate: false };
    }
    this.live.set(id, row);
    if (plan) this.plans.set(id, this.shared.plan(planText!, plan));
    this.index(row);
    return { request: view(row), duplicate: false };
  }

  /**
   * Write the inserts held back (`defer`): all of them before any other write of the table, or one
   * (`id`) when its execute is done with it. Each leaves the list before it is written, so one that
   * fails fails its own caller once and never stands in front of the next write.
   */
  writeHeldBack(id?: string): void {
    for (const key of id === undefined ? [...this.unwritten.keys()] : [id]) {
      const write = this.unwritten.get(key);
      if (!write) continue;
      this.unwritten.delete(key);
      write();
    }
  }

  index(row: Row): void {
    const q: Queued = {
      id: row.id, clientId: row.client_id, tier: row.tier, tierPoints: this.host.tierPointsOf(row.tier), queue: row.queue, createdAt: row.created_at,
      readyAt: readyAtOf(row), notBefore: row.not_before, recentShare: 0, pools: poolNeedsOf(row),
    };
    this.queued.set(row.id, q);
    this.ready.add(q, Date.now());
    this.epoch += 1;
    this.lastIndexed = { id: row.id, epoch: this.epoch, added: (this.lastIndexed?.added ?? 0) + 1 };
  }

  /**
   * Read the params of the rows about to be launched that do not hold them (the copies in memory leave
   * them out: a queued request's prompt stays in SQLite until it runs), one query for the lot.
   */
  loadParams(rows: Row[]): void {
    const missing = rows.filter((r) => r.params === null);
    if (missing.length === 0) return;
    const found = new Map(this.sql.exec<{ id: string; params: string }>(
      "SELECT id, params FROM request_bodies WHERE id IN (SELECT value FROM json_each(?))", JSON.stringify(missing.map((r) => r.id)),
    ).toArray().map((b) => [b.id, b.params]));
    for (const row of missing) row.params = found.get(row.id) ?? "null";
  }

  rowOf(id: string): Row | undefined {
    return this.live.get(id) ?? this.read("r.id = ?", id)[0];
  }

  /** Stored rows (FULL_ROW where `where`), each with its end when an end record holds it (./ends.ts). */
  private read(where: string, ...args: SqlStorageValue[]): Row[] {
    return this.ends.overlay(this.sql.exec<RowWithEnd>(`${FULL_ROW} WHERE ${where}`, ...args).toArray());
  }

  /**
   * Take requests out of their queues under a lease (synchronous: no other pass can take them too).
   * `leases`: request id and lease end. In memory only: until start() writes them running, their rows
   * still say queued, so an object that dies while admitting them queues them again when it restarts
   * (nothing ran yet; a slot or reservation they got meanwhile expires at the lease's end, and a client
   * object holds a job id once). Writing the claim cost a SQLite commit per chunk: a write and an fsync
   * on the runtime's thread, ~a tenth of a drain's CPU with the row rewrite (docs/benchmarks.md).
   */
  claim(leases: Array<readonly [string, number]>, now: number): Row[] {
    this.epoch += 1;
    return leases.map(([id, leaseUntil]) => {
      this.unqueue(id);
      this.admitting.add(id);
      this.active.add(id);
      return Object.assign(this.live.get(id)!, { status: "dispatching", lease_until: leaseUntil, updated_at: now });
    });
  }

  /**
   * Mark requests running under a new attempt (one dispatch, one sequence number each) with their lease,
   * in one write: the chunk's launch record (./launches.ts; their rows are written when each attempt ends).
   */
  start(rows: Row[], now: number): void {
    if (rows.length === 0) return;
    this.writeHeldBack();
    const launch = this.seq + 1;
    this.launches.record(launch, rows.map((row): LaunchEntry => {
      this.seq += 1;
      Object.assign(row, { status: "running", attempts: row.attempts + 1, started_at: now, first_started_at: row.first_started_at ?? now, updated_at: now, dispatch_seq: this.seq });
      return [row.id, this.seq, row.attempts, now, row.first_started_at, row.reservations, row.lease_until];
    }));
  }

  /**
   * Return a claimed or running request to its queue, to run from `notBefore`; a failed attempt keeps its
   * error. Its ready time stays: a retry's backoff (or a wait for the next day's cap) does not reset its
   * wait, so it keeps the wait points it earned and its SLA wait runs on from when it could first run.
   */
  requeue(row: Row, now: number, notBefore: number, failedAttempt: boolean, error?: string): void {
    this.writeHeldBack();
    const live = this.live.get(row.id) ?? row;
    // Its attempt, if one was launched, is written with it (a claim that was not admitted launched none).
    this.sql.exec(
      `UPDATE requests SET status = 'queued', lease_until = NULL, reservations = NULL, not_before = ?, updated_at = ?, error = COALESCE(?, error),
         attempts = ?, started_at = ?, first_started_at = ?, dispatch_seq = ? WHERE id = ?`,
      notBefore, now, failedAttempt ? (error ?? null) : null, live.attempts, live.started_at, live.first_started_at, live.dispatch_seq, row.id,
    );
    this.launches.ended([row.id]);
    this.active.delete(row.id);
    Object.assign(live, {
      status: "queued", lease_until: null, reservations: null, not_before: notBefore, updated_at: now,
      error: (failedAttempt ? (error ?? null) : null) ?? live.error,
    });
    this.live.set(live.id, live);
    this.index(live);
    if (failedAttempt) this.waiters.wake(row.id);
  }

  finish(id: string, status: Finished["status"], now: number, fields: Omit<Finished, "id" | "status">): void {
    this.finishAll([{ id, status, ...fields }], now);
  }

  /**
   * Record requests' end (and queue them for the request log), then update the copies in memory and
   * answer whoever waits on them. The usual ones (completed after running, no plan to replace, no
   * optimizer records) go into one end record (./ends.ts), their rows left as they are; the rest are
   * written into their rows (writeEnds). A plan given replaces the stored one; `startedAt` marks
   * requests that never ran (coalesced) as started now.
   */
  finishAll(items: Finished[], now: number): void {
    if (items.length === 0) return;
    this.writeHeldBack();
    const direct: Finished[] = [];
    const entries: EndEntry[] = [];
    const recorded: Row[] = [];
    for (const f of items) {
      const live = this.live.get(f.id);
      if (live && f.status === "completed" && f.error === undefined && f.plan === undefined && f.startedAt === undefined && !hasOptimizerRecords(this.plans.get(f.id))) {
        entries.push([f.id, f.result ?? null, f.actual ?? null, f.actualDetail ?? null, live.attempts, live.started_at, live.first_started_at, live.dispatch_seq]);
        recorded.push(live);
      } else direct.push(f);
    }
    if (direct.length) this.writeEnds(direct, now);
    this.launches.ended(items.map((f) => f.id));
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
      this.unqueue(f.id);
      this.active.delete(f.id);
      this.waiters.wake(f.id);
      this.live.delete(f.id);
      this.plans.delete(f.id);
    }
    // The copies, as they ended, give the request-log entries (a woken waiter reads only after this returns).
    this.ends.record(entries, recorded, now);
  }

  /** Write requests' ends into their rows now, with their outbox entries: one UPDATE over a JSON list. */
  private writeEnds(items: Finished[], now: number): void {
    // Positional arrays: each `->> n` parses its element again. Each row's attempt (launched: see
    // ./launches.ts) from its copy in memory, which is exact; `startedAt` marks a request that never
    // ran (coalesced) as started now.
    const json = JSON.stringify(items.map((f) => {
      const live = this.live.get(f.id);
      return [
        f.id, f.status, f.result ?? null, f.actual ?? null, f.actualDetail ?? null, f.error ?? null, live?.attempts ?? null,
        f.startedAt ?? live?.started_at ?? null, f.startedAt ?? live?.first_started_at ?? null, live?.dispatch_seq ?? null,
      ];
    }));
    this.sql.exec(
      `UPDATE requests SET status = j.value ->> 1, result = j.value ->> 2, actual_nano = j.value ->> 3, actual_detail = j.value ->> 4,
         error = j.value ->> 5, attempts = COALESCE(j.value ->> 6, attempts), started_at = j.value ->> 7, first_started_at = j.value ->> 8,
         dispatch_seq = j.value ->> 9, finished_at = ?1, updated_at = ?1, lease_until = NULL
       FROM json_each(?2) AS j WHERE requests.id = j.value ->> 0`,
      now, json,
    );
    const plans = items.filter((f) => f.plan !== undefined).map((f) => [f.id, JSON.stringify(f.plan)]);
    if (plans.length) this.sql.exec("UPDATE request_bodies SET plan = j.value ->> 1 FROM json_each(?) AS j WHERE request_bodies.id = j.value ->> 0", JSON.stringify(plans));
    // The outbox gets its own short list: json_each over the item list would parse every result again.
    const outbox = JSON.stringify(items.map((f) => [f.id, f.status === "completed" && hasOptimizerRecords(f.plan ?? this.plans.get(f.id)) ? 1 : 0]));
    this.sql.exec("INSERT INTO finished_outbox (id, optimizer) SELECT value ->> 0, value ->> 1 FROM json_each(?) WHERE true ON CONFLICT (id) DO NOTHING", outbox);
  }

  /** Record a caller's cancel of a live request (one that finishes without running), in its copy too. */
  cancel(row: Row, now: number): void {
    const id = row.id;
    this.writeHeldBack();
    this.unqueue(id);
    this.epoch += 1;
    this.sql.exec(
      `UPDATE requests SET status = 'cancelled', error = 'cancelled by caller', finished_at = ?, updated_at = ?, lease_until = NULL,
         attempts = ?, started_at = ?, first_started_at = ?, dispatch_seq = ? WHERE id = ?`,
      now, now, row.attempts, row.started_at, row.first_started_at, row.dispatch_seq, id,
    );
    this.sql.exec("INSERT INTO finished_outbox (id, optimizer) VALUES (?, 0) ON CONFLICT (id) DO NOTHING", id);
    this.launches.ended([id]);
    Object.assign(row, { status: "cancelled", error: "cancelled by caller", finished_at: now, updated_at: now, lease_until: null });
    this.active.delete(id);
    this.live.delete(id);
    this.plans.delete(id);
  }

  /** Forget about `limit` requests finished before `cutoff` whose request-log entry reached D1 (./purge.ts). */
  purgeFinished(cutoff: number, limit: number): number {
    return purgeFinished(this.sql, this.ends, cutoff, limit);
  }

  /** The id of the request a client made with this idempotency key, if any, and whether `specHash` conflicts with its spec. */
  findByKey(clientId: string, key: string, specHash: string | null): { id: string; conflict: boolean } | null {
    const row = this.sql.exec<Row>("SELECT id, spec_hash FROM requests WHERE client_id = ? AND idempotency_key = ?", clientId, key).toArray()[0];
    return row ? { id: row.id, conflict: specConflict(row, specHash) } : null;
  }

  /** Queued requests that may run now. */
  readyCount(now: number): number {
    return this.ready.readyCount(now);
  }

  /** The earliest not-before time still in the future (deferred or backing-off work), if any. */
  nextNotBefore(now: number): number | null {
    return this.ready.nextNotBefore(now);
  }

  /** A request leaves the queued index (claimed, finished, cancelled). */
  private unqueue(id: string): void {
    this.queued.delete(id);
    this.ready.remove(id);
  }

  /** Queued requests with one of these cache keys, by key: one scan of the plans for a settlement's leaders. */
  queuedByCacheKey(keys: Set<string>): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const [id, plan] of this.plans) {
      if (!plan.cache_key || !keys.has(plan.cache_key) || this.live.get(id)?.status !== "queued") continue;
      appendTo(out, plan.cache_key, id);
    }
    return out;
  }
}
