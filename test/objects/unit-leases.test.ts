import { runInDurableObject } from "cloudflare:test";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { SHARD_LEASE } from "../../src/domain/leases";
import type { PoolConfig } from "../../src/domain/types";
import type { BatchReserveItem, Result, ReserveResult } from "../../src/objects/pool/types";
import { UnitLeases } from "../../src/objects/scheduler/unit-leases";
import { listUsageEvents } from "../../src/storage/usage";
import { ADMIN, call, captureLog, eventually, makePool, readyToExecute, scheduler, settled, sleep, spendOf } from "../support/helpers";

/**
 * Units lent to scheduler shards by pools (decision 007; src/objects/scheduler/unit-leases.ts): a shard
 * that admits to a pool often takes its requests' units from a slice lent by the pool, not one
 * reservation each, and reports their use in one exchange per settlement, under event ids fixed when
 * the units were taken. These tests drive the shard's side against real pool objects.
 */

const stubOf = (pool: string) => env.POOL.get(env.POOL.idFromName(pool));
const levelOf = async (pool: PoolConfig) => (await stubOf(pool.id).availability(pool, null)) as { level: number; leased: number; reserved: number };
const busy = (n: number) => Array.from({ length: n }, () => 1);

/** A shard's leases with a slice of `pool` taken: a first chunk at the lending rate asks for it, the next gets it. */
async function leasedSlice(shard: string, pool: PoolConfig): Promise<UnitLeases> {
  const units = new UnitLeases(env, shard);
  expect(units.take(pool, busy(SHARD_LEASE.MIN_RATE), Date.now() + 60_000, Date.now(), true)).toEqual([]);
  await eventually(async () => units.held().free > 0 || null, 5000, "the pool lent the shard a slice");
  return units;
}

const use = (pool: PoolConfig, eventId: string, amount: number, used: number, requestId: string) => ({
  cfg: pool, eventId, clientId: "acme", tier: "enterprise" as const, requestId, amount, used, costNano: used * pool.costPerUnitNano, at: Date.now(),
});

describe("units lent to a scheduler shard", () => {
  it("a chunk takes its units from the slice; what each request used is recorded once, under the id fixed at admission; the rest goes back", async () => {
    const pool = await makePool({ capacity: 100_000, refillPerSec: 0, costPerUnitNano: 7 });
    // Below the lending rate a shard reserves per request: no slice is asked for.
    const quiet = new UnitLeases(env, "scheduler-quiet");
    expect(quiet.take(pool, [5, 5], Date.now() + 60_000, Date.now(), true)).toEqual([]);
    // Nor at the lending rate with nothing left queued (a shard keeping up with its arrivals).
    const keepingUp = new UnitLeases(env, "scheduler-keeping-up");
    expect(keepingUp.take(pool, busy(SHARD_LEASE.MIN_RATE), Date.now() + 60_000, Date.now(), false)).toEqual([]);
    await sleep(100);
    expect(quiet.held()).toEqual({ free: 0, inUse: 0 });
    expect(keepingUp.held()).toEqual({ free: 0, inUse: 0 });
    expect(await levelOf(pool)).toMatchObject({ level: 100_000, leased: 0 });

    const units = await leasedSlice("scheduler-a", pool);
    const lent = units.held().free;
    // Lent from plenty only: the pool keeps PLENTY times as much.
    expect(lent).toBeGreaterThanOrEqual(2 * SHARD_LEASE.MIN_RATE);
    expect(await levelOf(pool)).toMatchObject({ level: 100_000 - lent, leased: lent, reserved: 0 });

    const ids = units.take(pool, [5, 5], Date.now() + 60_000, Date.now(), true);
    expect(ids).toHaveLength(2);
    expect(new Set(ids).size).toBe(2);
    expect(units.held()).toEqual({ free: lent - 10, inUse: 10 });
    // A request whose lease would outlive the slice's takes nothing from it.
    expect(units.take(pool, [1], Date.now() + SHARD_LEASE.TTL_MS + 60_000, Date.now(), true)).toEqual([]);

    expect(units.settle(use(pool, ids[0]!, 5, 3, "req_a"))).toEqual({ used: 3, costNano: 21 });
    // Settled again (a settlement made again after a failure, or a cancel after it, which reports no use):
    // nothing changes, and the first settlement's use is the answer.
    expect(units.settle(use(pool, ids[0]!, 5, 0, "req_a"))).toEqual({ used: 3, costNano: 21 });
    units.settle(use(pool, ids[1]!, 5, 5, "req_b"));
    expect(units.held()).toEqual({ free: lent - 8, inUse: 0 });
    // A request whose call was dropped (its lease ended) frees its units in the slice, as its reservation would have expired.
    const [dropped] = units.take(pool, [4], Date.now() + 60_000, Date.now(), true);
    expect(units.held()).toEqual({ free: lent - 12, inUse: 4 });
    units.forget(dropped!, 4);
    expect(units.held()).toEqual({ free: lent - 8, inUse: 0 });
    await units.report([pool.id]);
    // Reported: the 8 used are out of the lease, the rest still lent.
    expect(await levelOf(pool)).toMatchObject({ level: 100_000 - lent, leased: lent - 8 });
    await units.close();
    expect(await levelOf(pool)).toMatchObject({ level: 100_000 - 8, leased: 0, reserved: 0 });
    await stubOf(pool.id).flush();
    const events = await listUsageEvents(env.DB, { poolId: pool.id });
    expect(events.map((e) => [e.event_id, e.units, e.cost_nano, e.kind, e.via, e.request_id]).sort()).toEqual([
      [ids[0], 3, 21, "reservation", "scheduler", "req_a"],
      [ids[1], 5, 35, "reservation", "scheduler", "req_b"],
    ].sort());
  });

  it("a chunk takes what the slice has, in order, and the rest reserve; a slice is topped up before it runs dry", async () => {
    const pool = await makePool({ capacity: 100_000, refillPerSec: 0 });
    const units = await leasedSlice("scheduler-part", pool);
    // Chunks of 10 while a backlog waits: the slice is topped up in the background at half of what it aims at
    // (a second of this shard's use), so no chunk comes back short while the answer is on its way.
    let free = units.held().free;
    let taken = 0;
    for (;;) {
      const ids = units.take(pool, busy(10), Date.now() + 60_000, Date.now(), true);
      expect(ids, `a chunk came back short with ${free} free`).toHaveLength(10);
      taken += 10;
      await sleep(10);
      const now = units.held().free;
      if (now > free - 10) break; // the top-up came
      free = now;
    }
    // It came while two chunks' worth and more were left (before, it was asked for only once the next chunk no
    // longer fitted: here at 0 free, and on a loaded machine the chunks until its answer reserved one by one).
    expect(free).toBeGreaterThanOrEqual(20);
    expect(units.held().inUse).toBe(taken);
    // A chunk larger than what is free: its first requests take an event id each, in order, the rest none (they reserve).
    const left = units.held().free;
    const part = units.take(pool, busy(left + 3), Date.now() + 60_000, Date.now(), true);
    expect(part).toHaveLength(left);
    expect(units.held()).toEqual({ free: 0, inUse: taken + left });
    // Short: it asks for more at once.
    await eventually(async () => units.held().free > 0 || null, 5000, "the slice topped up");
    await units.close();
  });

  it("while another shard waits for units there, the pool stops lending and the slice's free units go back at the next exchange", async () => {
    const pool = await makePool({ capacity: 4000, refillPerSec: 0 });
    const units = await leasedSlice("scheduler-a", pool);
    const lent = units.held().free;
    const [id] = units.take(pool, [2], Date.now() + 60_000, Date.now(), true);
    // Another shard's request asks for more than is left in the bucket: refused, it waits.
    const wait = { clientId: "other", shard: "scheduler-b", priority: 10, weight: 1 };
    const ask: BatchReserveItem = { caller: { clientId: "other", tier: "enterprise", via: "scheduler" }, amount: 4000 - lent + 1, ttlMs: 60_000, requestId: "req_w", wait };
    const refused = (await stubOf(pool.id).reserveMany(pool, [ask])) as Result<ReserveResult>[];
    expect(refused[0]!.ok).toBe(false);
    // The shard reports a use: the answer says stop, and it hands back what it does not use.
    units.settle(use(pool, id!, 2, 1, "req_x"));
    await units.report([pool.id]);
    expect(units.held()).toEqual({ free: 0, inUse: 0 });
    expect(await levelOf(pool)).toMatchObject({ level: 3999, leased: 0 });
    // The waiting request gets its units now.
    const granted = (await stubOf(pool.id).reserveMany(pool, [ask])) as Result<ReserveResult>[];
    expect(granted[0]!.ok).toBe(true);
    // Paused: the shard asks for no slice while the pause lasts.
    expect(units.take(pool, busy(SHARD_LEASE.MIN_RATE), Date.now() + 60_000, Date.now(), true)).toEqual([]);
    await sleep(50);
    expect(units.held().free).toBe(0);
  });

  it("a pool with units lent to a shard is busy: deleting or disabling it is refused (409 pool_busy) until they are back", async () => {
    const pool = await makePool({ capacity: 100_000, refillPerSec: 0 });
    const units = await leasedSlice("scheduler-busy", pool);
    const [id] = units.take(pool, [3], Date.now() + 60_000, Date.now(), true);
    const lent = units.held().free + 3;
    expect((await call("PATCH", `/admin/pools/${pool.id}`, { token: ADMIN, json: { status: "draining" } })).status).toBe(200);
    const view = await call("GET", `/admin/pools/${pool.id}`, { token: ADMIN });
    expect(view.body.live).toMatchObject({ status: "draining", active_reservations: 0, leased_units: lent, drained: false });
    const disable = await call("PATCH", `/admin/pools/${pool.id}`, { token: ADMIN, json: { status: "disabled" } });
    expect(disable.status).toBe(409);
    expect(disable.body.error).toMatchObject({ code: "pool_busy", details: { active_reservations: 0, shard_leased_units: lent } });
    const del = await call("DELETE", `/admin/pools/${pool.id}`, { token: ADMIN });
    expect(del.status).toBe(409);
    expect(del.body.error.code).toBe("pool_busy");
    // Its request settles, the shard hands its slice back (the pool, draining, lends no more): free to go.
    units.settle(use(pool, id!, 3, 3, "req_busy"));
    await units.report([pool.id]);
    await units.close();
    expect((await call("GET", `/admin/pools/${pool.id}`, { token: ADMIN })).body.live).toMatchObject({ leased_units: 0, drained: true });
    expect((await call("DELETE", `/admin/pools/${pool.id}`, { token: ADMIN })).status).toBe(200);
  });

  it("a use settled by a later life of the shard (after a restart) is recorded and taken from the bucket; the old slice lapses on its own", async () => {
    const pool = await makePool({ capacity: 100_000, refillPerSec: 0 });
    const first = await leasedSlice("scheduler-r", pool);
    const lent = first.held().free;
    const [id] = first.take(pool, [4], Date.now() + 60_000, Date.now(), true);
    // The object restarts: its memory is gone; the request's row still names the event id.
    const second = new UnitLeases(env, "scheduler-r");
    second.settle(use(pool, id!, 4, 4, "req_r"));
    second.settle(use(pool, id!, 4, 4, "req_r"));
    await second.report([pool.id]);
    // The old slice is still lent (until it lapses); the use came out of the bucket.
    expect(await levelOf(pool)).toMatchObject({ level: 100_000 - lent - 4, leased: lent });
    await stubOf(pool.id).flush();
    const events = await listUsageEvents(env.DB, { poolId: pool.id });
    expect(events.map((e) => [e.event_id, e.units])).toEqual([[id, 4]]);
  });
});

/**
 * Enqueue n requests of one unit each (dispatch stopped), run `beforeStart` if given, start dispatch, and
 * wait until every one has completed.
 */
async function drain(template: string, client: { id: string; key: string }, n: number, beforeStart?: () => Promise<void>): Promise<string[]> {
  expect((await call("PUT", `/admin/clients/${client.id}/quota`, { token: ADMIN, json: { max_concurrent: 1000, cpu_millicores: null, memory_mb: null } })).status).toBe(200);
  expect((await call("POST", "/admin/scheduler/stop", { token: ADMIN })).status).toBe(200);
  const ids: string[] = [];
  for (let left = n; left > 0; left -= 100) {
    const requests = Array.from({ length: Math.min(100, left) }, () => ({ template, params: { tokens_used: 1 } }));
    const res = await call("POST", "/api/queue/enqueue", { token: client.key, json: { requests } });
    expect(res.status).toBe(200);
    ids.push(...(res.body.results as Array<{ request: { id: string } }>).map((r) => r.request.id));
  }
  await beforeStart?.();
  expect((await call("POST", "/admin/scheduler/start", { token: ADMIN })).status).toBe(200);
  await eventually(async () => {
    const { scheduler } = (await call("GET", "/api/queue/status", { token: client.key })).body as { scheduler: { queued: number; in_flight: number } };
    return scheduler.queued + scheduler.in_flight === 0 || null;
  }, 20_000, "the backlog drained");
  for (const id of [ids[0]!, ids[n - 1]!]) await settled(id, ["completed"], 5000, client.key);
  return ids;
}

/** The pool's usage events in D1, after its outbox is delivered. */
async function eventsOf(pool: PoolConfig) {
  await stubOf(pool.id).flush();
  return listUsageEvents(env.DB, { poolId: pool.id });
}

describe("a drain through a shard's slice", () => {
  afterEach(() => vi.restoreAllMocks());

  it("1,000 requests run on units from the slice: no reservation each, every use recorded once with its cost, the client charged exactly, the slice back when idle", async () => {
    const { pool, template, client } = await readyToExecute("unit-lease", { capacity: 1_000_000, refillPerSec: 0, costPerUnitNano: 3 });
    const before = (await spendOf(client.id)).spent_nano as number;
    const ids = await drain(template, client, 1000);
    // The slice goes back once the shard is idle; then the bucket holds exactly what was not used.
    await eventually(async () => ((await levelOf(pool)).leased === 0 ? true : null), 10_000, "the slice went back");
    expect(await levelOf(pool)).toMatchObject({ level: 1_000_000 - 1000, leased: 0, reserved: 0 });
    const events = await eventsOf(pool);
    expect(events).toHaveLength(1000);
    expect(new Set(events.map((e) => e.request_id))).toEqual(new Set(ids));
    expect(events.every((e) => e.units === 1 && e.cost_nano === 3 && e.kind === "reservation" && e.via === "scheduler")).toBe(true);
    // The first chunks, below the lending rate (SHARD_LEASE.MIN_RATE, 200 a second), reserved one by one: the
    // slow start's passes of 16, 32, 64, 128 (240 alone; on a loaded machine the rate may come a pass later,
    // 256 more). Every chunk after took its units from the slice, topped up before it ran dry (before, a
    // chunk that no longer fitted reserved, as did those until the top-up came: 472 of 600 once).
    const reservations = await runInDurableObject(stubOf(pool.id), (_, state) => state.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM reservations").one().n);
    expect(reservations).toBeGreaterThan(0);
    expect(reservations).toBeLessThanOrEqual(16 + 32 + 64 + 128 + 256);
    await eventually(async () => ((await spendOf(client.id)).spent_nano === before + 3000 ? true : null), 5000, "the client was charged 3,000");
  }, 60_000);

  it("a settlement whose report to the pool fails is made again: each request completes once, its use is recorded and charged once", async () => {
    const { pool, template, client } = await readyToExecute("unit-lease-fail", { capacity: 1_000_000, refillPerSec: 0, costPerUnitNano: 5 });
    const before = (await spendOf(client.id)).spent_nano as number;
    const lines = captureLog();
    // Before dispatch starts, the shard's first report of leased use to a pool is made to fail (as when the
    // pool cannot be reached), and the shard takes a slice of the pool, so the drain's requests take their
    // units from it whatever the machine's pace (left to the drain, the slice may come after its last chunk).
    const unitsOf = (instance: SchedulerObject) => (instance as unknown as { settlement: { units: UnitLeases } }).settlement.units;
    let failed = 0;
    const ids = await drain(template, client, 600, async () => {
      await runInDurableObject(scheduler(), (instance: SchedulerObject) => {
        const units = unitsOf(instance);
        const real = units.report.bind(units);
        // Only a report that carries use fails: one with none (an admission giving back units it took) goes through.
        const slices = (units as unknown as { slices: Map<string, { grants: unknown[] }> }).slices;
        units.report = async (pools: Iterable<string>) => {
          const named = [...pools];
          if (named.some((p) => (slices.get(p)?.grants.length ?? 0) > 0) && failed++ === 0) throw new Error("pool object unreachable");
          return real(named);
        };
        expect(units.take(pool, busy(1000), Date.now() + 60_000, Date.now(), true)).toEqual([]);
      });
      await eventually(() => runInDurableObject(scheduler(), (instance: SchedulerObject) => unitsOf(instance).held().free >= 600 || null), 5000, "the pool lent the shard a slice");
    });
    expect(failed).toBeGreaterThan(0);
    expect(lines.filter((l) => l.msg === "settle_failed")).toHaveLength(1);
    const views = await Promise.all(ids.slice(0, 50).map(async (id) => (await call("GET", `/api/execution/${id}`, { token: client.key })).body.request));
    expect(views.every((v) => v.status === "completed" && v.attempts === 1)).toBe(true);
    await eventually(async () => ((await levelOf(pool)).leased === 0 ? true : null), 10_000, "the slice went back");
    expect(await levelOf(pool)).toMatchObject({ level: 1_000_000 - 600, leased: 0 });
    const events = await eventsOf(pool);
    expect(events).toHaveLength(600);
    expect(new Set(events.map((e) => e.request_id)).size).toBe(600);
    await eventually(async () => ((await spendOf(client.id)).spent_nano === before + 3000 ? true : null), 10_000, "the client was charged 3,000");
  }, 60_000);
});
