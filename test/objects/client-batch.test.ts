import { abortAllDurableObjects, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { BudgetLimit } from "../../src/domain/budget";
import { DAY_MS, monthKey } from "../../src/domain/calendar";
import { idFloor, newId } from "../../src/domain/ids";
import type { ResolvedQuota } from "../../src/domain/quota";
import type { ClientObject } from "../../src/objects/client";
import type { SpendEvent } from "../../src/objects/client/types";
import { addSpend } from "../support/helpers";

/** Batched quota and spend decisions against a real client object: exact counts, in order, once per id. */

let n = 0;
/** A fresh client object (unique name, so fresh storage); no D1 row is needed without budget alerts. */
function freshClient(): { id: string; stub: DurableObjectStub<ClientObject> } {
  n += 1;
  const id = `cb-${crypto.randomUUID().slice(0, 8)}-${n}`;
  return { id, stub: env.CLIENT.get(env.CLIENT.idFromName(id)) };
}

const quota = (over: Partial<ResolvedQuota> = {}): ResolvedQuota => ({ maxConcurrent: 10, cpuMillicores: null, memoryMb: null, poolDaily: {}, ...over });
const expires = Date.now() + 600_000;
const job = (jobId: string, over: Record<string, unknown> = {}) => ({ jobId, kind: "request" as const, expiresAt: expires, ...over });
const event = (eventId: string, costNano: number, over: Partial<SpendEvent> = {}): SpendEvent => ({ eventId, costNano, at: Date.now(), ...over });
const UNLIMITED: BudgetLimit = { limitNano: null, source: "unlimited" };

/** The jobs table as stored, by id. */
async function jobRows(stub: DurableObjectStub<ClientObject>): Promise<Record<string, { kind: string; expires_at: number; cpu_millicores: number; memory_mb: number; pools: string }>> {
  return runInDurableObject(stub, (_: ClientObject, state) => {
    const rows = state.storage.sql.exec<{ job_id: string; kind: string; expires_at: number; cpu_millicores: number; memory_mb: number; pools: string }>(
      "SELECT job_id, kind, expires_at, cpu_millicores, memory_mb, pools FROM jobs",
    ).toArray();
    return Object.fromEntries(rows.map(({ job_id, ...rest }) => [job_id, rest]));
  });
}

describe("acquireJobs decides a batch in order", () => {
  it("70 new jobs under a limit of 50: the first 50 are admitted, the last 20 refused with the shortfall", async () => {
    const { stub } = freshClient();
    const q = quota({ maxConcurrent: 50 });
    const decisions = await stub.acquireJobs(q, Array.from({ length: 70 }, (_, i) => job(`j${i}`)));
    expect(decisions.slice(0, 50)).toEqual(Array.from({ length: 50 }, () => ({ ok: true })));
    expect(decisions.slice(50)).toEqual(Array.from({ length: 20 }, () => ({ ok: false, shortfall: { limit: "concurrent", limit_value: 50, in_use: 50, requested: 1, shortfall: 1 } })));
    expect(await stub.inUse()).toBe(50);
    const rows = await jobRows(stub);
    expect(Object.keys(rows).sort()).toEqual(Array.from({ length: 50 }, (_, i) => `j${i}`).sort());
    expect(rows.j0).toEqual({ kind: "request", expires_at: expires, cpu_millicores: 0, memory_mb: 0, pools: "{}" });
    // asked again, the held 50 keep their places and the other 20 are still refused
    const again = await stub.acquireJobs(q, Array.from({ length: 70 }, (_, i) => job(`j${i}`)));
    expect(again.map((d) => d.ok)).toEqual([...Array(50).fill(true), ...Array(20).fill(false)]);
    expect(await stub.inUse()).toBe(50);
  });

  it("a job already held and a job named twice are admitted without counting twice; expiries are the last asked", async () => {
    const { stub } = freshClient();
    const q = quota({ maxConcurrent: 3, cpuMillicores: 1000 });
    const alloc = { kind: "allocation" as const, cpuMillicores: 300, memoryMb: 64, pools: { p: 2 } };
    expect(await stub.acquireJobs(q, [job("held", alloc)])).toEqual([{ ok: true }]);
    const decisions = await stub.acquireJobs(q, [
      job("held", { ...alloc, expiresAt: expires + 1 }),
      job("dup", { ...alloc, expiresAt: expires + 2 }),
      job("dup", { ...alloc, expiresAt: expires + 3 }),
      job("held", { ...alloc, expiresAt: expires + 4 }),
      job("last", alloc),
      job("over", alloc),
    ]);
    expect(decisions.slice(0, 5)).toEqual(Array.from({ length: 5 }, () => ({ ok: true })));
    expect(decisions[5]).toEqual({ ok: false, shortfall: { limit: "concurrent", limit_value: 3, in_use: 3, requested: 1, shortfall: 1 } });
    const state = await stub.quotaState(q);
    expect(state.use).toEqual({ jobs: 3, cpuMillicores: 900, memoryMb: 192, poolToday: { p: 6 }, requests: 0, allocations: 3, leased: 0 });
    const rows = await jobRows(stub);
    expect(Object.keys(rows).sort()).toEqual(["dup", "held", "last"]);
    expect([rows.held!.expires_at, rows.dup!.expires_at, rows.last!.expires_at]).toEqual([expires + 4, expires + 3, expires]);
    expect(rows.dup).toMatchObject({ kind: "allocation", cpu_millicores: 300, memory_mb: 64, pools: JSON.stringify({ p: 2 }) });
  });

  it("a daily cap per pool is counted exactly across a batch, on top of today's spend", async () => {
    const { stub } = freshClient();
    const q = quota({ maxConcurrent: 100, poolDaily: { p: 10 } });
    await addSpend(stub, UNLIMITED, [event("ev-today", 0, { pool: "p", units: 3 })]);
    const decisions = await stub.acquireJobs(q, [
      job("a", { pools: { p: 2 } }),
      job("free", { pools: { other: 50 } }),
      job("b", { pools: { p: 2 } }),
      job("c", { pools: { p: 2 } }),
      job("d", { pools: { p: 2 } }),
      job("e", { pools: { p: 1 } }),
      job("f", { pools: { p: 1 } }),
    ]);
    expect(decisions.map((d) => d.ok)).toEqual([true, true, true, true, false, true, false]);
    expect(decisions[4]).toEqual({ ok: false, shortfall: { limit: "pool_daily", pool: "p", limit_value: 10, in_use: 9, requested: 2, shortfall: 1 } });
    expect(decisions[6]).toEqual({ ok: false, shortfall: { limit: "pool_daily", pool: "p", limit_value: 10, in_use: 10, requested: 1, shortfall: 1 } });
    expect((await stub.quotaState(q)).use).toMatchObject({ jobs: 5, poolToday: { p: 10, other: 50 } });
  });
});

describe("held jobs kept in memory stay in step with the table", () => {
  it("across releases, settlements, expiry and a restart: the same counts, CPU, memory and daily units as the table", async () => {
    const { id, stub } = freshClient();
    const q = quota({ maxConcurrent: 6, cpuMillicores: 1000, memoryMb: 1000, poolDaily: { p: 100 } });
    const soon = Date.now() + 300;
    expect(await stub.acquireJobs(q, [
      job("a", { cpuMillicores: 200, memoryMb: 100, pools: { p: 30 } }),
      job("b", { cpuMillicores: 300, memoryMb: 100, pools: { p: 30 } }),
      job("short", { expiresAt: soon, cpuMillicores: 400, pools: { p: 30 } }),
    ])).toEqual([{ ok: true }, { ok: true }, { ok: true }]);
    // 90 units held of 100 today: 11 more do not fit, 10 do.
    expect((await stub.checkJob(q, { kind: "request", pools: { p: 11 } })).ok).toBe(false);
    expect((await stub.checkJob(q, { kind: "request", pools: { p: 10 } })).ok).toBe(true);
    // CPU: 900 of 1000 held.
    expect(await stub.checkJob(q, { kind: "request", cpuMillicores: 101 })).toMatchObject({ ok: false, shortfall: { limit: "cpu", in_use: 900 } });
    expect(await stub.releaseJobs(["b", "nope"])).toBe(1);
    expect(await stub.checkJob(q, { kind: "request", cpuMillicores: 101 })).toEqual({ ok: true });
    await stub.settle(null, [{ requestId: "a", events: [] }]);
    // The short hold ends by its expiry; afterwards nothing is held.
    await new Promise((r) => setTimeout(r, 350));
    const state = await stub.quotaState(q);
    expect(state.use).toMatchObject({ jobs: 0, cpuMillicores: 0, memoryMb: 0, requests: 0 });
    expect(state.use.poolToday.p ?? 0).toBe(0);
    expect(await jobRows(stub)).toEqual({});

    // New holds, then the object restarts: it reads them back from the table.
    expect(await stub.acquireJobs(q, Array.from({ length: 5 }, (_, i) => job(`r${i}`, { cpuMillicores: 100, pools: { p: 20 } })))).toHaveLength(5);
    await abortAllDurableObjects();
    const after = env.CLIENT.get(env.CLIENT.idFromName(id));
    expect(await after.quotaState(q)).toMatchObject({ use: { jobs: 5, cpuMillicores: 500, requests: 5, poolToday: { p: 100 } } });
    const decisions = await after.acquireJobs(q, [job("r0"), job("x1"), job("x2", { pools: { p: 1 } })]);
    expect(decisions[0]).toEqual({ ok: true }); // already held: kept, not counted twice
    expect(decisions[1]).toEqual({ ok: true }); // the sixth job
    expect(decisions[2]).toMatchObject({ ok: false, shortfall: { limit: "concurrent" } });
    expect(Object.keys(await jobRows(after)).sort()).toEqual(["r0", "r1", "r2", "r3", "r4", "x1"]);
  });
});

describe("settle counts each event once", () => {
  it("a finished request's events count with its estimate leaving flight, once however often it is settled; a retry's by event id; slots and estimates are freed as asked", async () => {
    const { stub } = freshClient();
    const q = quota();
    const limit: BudgetLimit = { limitNano: 1_000_000, source: "client" };
    await addSpend(stub, null, [event("e0", 100, { pool: "p", units: 1 })]);
    expect(await stub.acquireJobs(q, [job("r1"), job("r2")])).toEqual([{ ok: true }, { ok: true }]);
    expect(await stub.admit(limit, [{ requestId: "r1", estimateNano: 1000 }, { requestId: "r2", estimateNano: 2000 }])).toEqual([{ ok: true }, { ok: true }]);
    const lastMonth = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), 1) - 5 * DAY_MS;
    const r1 = {
      requestId: "r1",
      events: [
        event("e1", 200, { pool: "p", units: 2 }),
        // The same event twice in a settlement counts once.
        event("e1", 999, { pool: "p", units: 50 }),
        event("e-free", 0, { pool: "q", units: 7 }),
        event("e-old", 5000, { at: lastMonth }),
      ],
    };
    const r2 = { requestId: "r2", events: [event("e2", 300, { pool: "q", units: 4 })], keepInFlight: true };
    await stub.settle(null, [r1, r2]);
    const view = await stub.budget(limit);
    expect(view).toMatchObject({ month: monthKey(Date.now()), spent_nano: 600, in_flight_nano: 2000, concurrency_in_use: 0 });
    expect((await stub.quotaState(q)).use.poolToday).toEqual({ p: 3, q: 11 });
    const old = await runInDurableObject(stub, (_: ClientObject, state) =>
      state.storage.sql.exec<{ n: number }>("SELECT spent_nano AS n FROM spend WHERE month = ?", monthKey(lastMonth)).one().n);
    expect(old).toBe(5000);
    // The finished request's events kept no row each: its estimate leaving flight was the mark.
    const ids = await runInDurableObject(stub, (_: ClientObject, state) => state.storage.sql.exec<{ event_id: string }>("SELECT event_id FROM counted ORDER BY event_id").toArray().map((r) => r.event_id));
    expect(ids).toEqual(["e0", "e2"]);
    // The whole batch settled again (a settlement made again after its answer was lost) changes nothing.
    await stub.settle(null, [r1, r2]);
    expect(await stub.budget(limit)).toMatchObject({ spent_nano: 600, in_flight_nano: 2000 });
    expect((await stub.quotaState(q)).use.poolToday).toEqual({ p: 3, q: 11 });
    // The retried request finishes: its last attempt's events count once, and its estimate leaves flight.
    const last = { requestId: "r2", events: [event("e3", 50, { pool: "q", units: 1 })] };
    await stub.settle(null, [last]);
    await stub.settle(null, [last]);
    expect(await stub.budget(limit)).toMatchObject({ spent_nano: 650, in_flight_nano: 0 });
    expect((await stub.quotaState(q)).use.poolToday).toEqual({ p: 3, q: 12 });
  });

  it("a pool outbox's deliveries count each seq once: repeats, overlapping retries and other sources, with no row per event", async () => {
    const { stub } = freshClient();
    const q = quota();
    const now = Date.now();
    await stub.recordPoolSpend(UNLIMITED, "pool-a:e1", "pool-a", [[1, 100, now, 1], [2, 200, now, 2], [3, 300, now, 3]]);
    expect((await stub.budget(UNLIMITED)).spent_nano).toBe(600);
    // A retried delivery: the same batch plus what came after it. Only seqs 4 and 5 are new.
    await stub.recordPoolSpend(UNLIMITED, "pool-a:e1", "pool-a", [[1, 100, now, 1], [2, 200, now, 2], [3, 300, now, 3], [4, 400, now, 4], [5, 500, now, 5]]);
    expect((await stub.budget(UNLIMITED)).spent_nano).toBe(1500);
    // The same delivered again, and an older prefix: nothing.
    await stub.recordPoolSpend(UNLIMITED, "pool-a:e1", "pool-a", [[4, 400, now, 4], [5, 500, now, 5]]);
    await stub.recordPoolSpend(UNLIMITED, "pool-a:e1", "pool-a", [[2, 200, now, 2]]);
    expect((await stub.budget(UNLIMITED)).spent_nano).toBe(1500);
    // Another pool, and the same pool's storage started over under a new epoch: counted from their own seq 1.
    await stub.recordPoolSpend(UNLIMITED, "pool-b:e1", "pool-b", [[1, 10, now, 7]]);
    await stub.recordPoolSpend(UNLIMITED, "pool-a:e2", "pool-a", [[1, 1, now, 1]]);
    expect((await stub.budget(UNLIMITED)).spent_nano).toBe(1511);
    expect((await stub.quotaState(q)).use.poolToday).toEqual({ "pool-a": 16, "pool-b": 7 });
    const rows = await runInDurableObject(stub, (_: ClientObject, state) => ({
      counted: state.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM counted").one().n,
      delivered: state.storage.sql.exec<{ source: string; seq: number }>("SELECT source, seq FROM delivered ORDER BY source").toArray(),
    }));
    expect(rows.counted).toBe(0);
    expect(rows.delivered).toEqual([{ source: "pool-a:e1", seq: 5 }, { source: "pool-a:e2", seq: 1 }, { source: "pool-b:e1", seq: 1 }]);
  });

  it("counted event ids are kept two days by event time: older ids are forgotten by the cleanup (a range of the key), newer ones still count once", async () => {
    const { stub } = freshClient();
    const now = Date.now();
    const [old, dayOld, fresh] = [newId("event", now - 3 * DAY_MS), newId("event", now - DAY_MS), newId("event", now)];
    // Rows as the 40-day horizon left them: one past two days, one inside; and an id of another shape (not an event id) as old.
    await runInDurableObject(stub, (_: ClientObject, state) => {
      state.storage.sql.exec("INSERT INTO counted (event_id, cost_nano, at) VALUES (?, 1, ?), (?, 1, ?), ('e-other', 1, ?)", old, now - 3 * DAY_MS, dayOld, now - DAY_MS, now - 3 * DAY_MS);
    });
    // The object's first spend runs the cleanup; the event a day old is still known, so not counted again.
    await addSpend(stub, UNLIMITED, [event(fresh, 10), event(dayOld, 1000, { at: now - DAY_MS })]);
    expect((await stub.budget(UNLIMITED)).spent_nano).toBe(10);
    const { ids, plan } = await runInDurableObject(stub, (_: ClientObject, state) => ({
      ids: state.storage.sql.exec<{ event_id: string }>("SELECT event_id FROM counted ORDER BY event_id").toArray().map((r) => r.event_id),
      plan: state.storage.sql.exec<{ detail: string }>(
        "EXPLAIN QUERY PLAN SELECT event_id FROM counted WHERE event_id >= 'evt_' AND event_id < ? ORDER BY event_id LIMIT 10", idFloor("event", now),
      ).toArray().map((r) => r.detail).join("; "),
    }));
    // Only ids of the event kind are swept by range: another shape is left to the one-time sweep of an upgrade (below).
    expect(ids).toEqual(["e-other", dayOld, fresh]);
    expect(plan).toMatch(/SEARCH counted USING PRIMARY KEY \(event_id>\? AND event_id<\?\)/);
  });

  it("an object made before keyed tables keeps its jobs, money in flight and spend; its counted ids are set aside, still deduplicate, and are emptied by event time, then dropped", async () => {
    const { id, stub } = freshClient();
    const now = Date.now();
    const uuid = `evt_${crypto.randomUUID().replaceAll("-", "")}`; // an event id as made before ids were time-ordered
    const recent = newId("event", now - DAY_MS);
    await runInDurableObject(stub, (_: ClientObject, state) => {
      // The tables as the earlier version made them: rowid tables, counted ids kept 40 days.
      const sql = state.storage.sql;
      sql.exec("DROP TABLE jobs; DROP TABLE in_flight; DROP TABLE counted; DROP TABLE spend");
      sql.exec(`CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY, kind TEXT NOT NULL, acquired_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
        cpu_millicores INTEGER NOT NULL DEFAULT 0, memory_mb INTEGER NOT NULL DEFAULT 0, pools TEXT NOT NULL DEFAULT '{}')`);
      sql.exec("CREATE TABLE in_flight (request_id TEXT PRIMARY KEY, estimate_nano INTEGER NOT NULL, admitted_at INTEGER NOT NULL)");
      sql.exec("CREATE TABLE counted (event_id TEXT PRIMARY KEY, cost_nano INTEGER NOT NULL, at INTEGER NOT NULL)");
      sql.exec("CREATE TABLE spend (month TEXT PRIMARY KEY, spent_nano INTEGER NOT NULL)");
      sql.exec("INSERT INTO jobs (job_id, kind, acquired_at, expires_at) VALUES ('j1', 'request', ?, ?)", now, now + 600_000);
      sql.exec("INSERT INTO in_flight (request_id, estimate_nano, admitted_at) VALUES ('r1', 700, ?)", now);
      sql.exec("INSERT INTO spend (month, spent_nano) VALUES (?, 1234)", monthKey(now));
      sql.exec("INSERT INTO counted (event_id, cost_nano, at) VALUES (?, 1, ?), (?, 1, ?)", uuid, now - 20 * DAY_MS, recent, now - DAY_MS);
    });
    await abortAllDurableObjects(); // the next call constructs the object again: the upgrade runs then
    const after = env.CLIENT.get(env.CLIENT.idFromName(id));
    expect(await after.budget(UNLIMITED)).toMatchObject({ spent_nano: 1234, in_flight_nano: 700, concurrency_in_use: 1 });
    // The event a day old is still known (in the table set aside): delivered again, it counts nothing.
    // This first spend of the object's life also runs the cleanup: the 20-day-old id goes.
    await addSpend(after, UNLIMITED, [event(recent, 1000, { at: now - DAY_MS })]);
    expect((await after.budget(UNLIMITED)).spent_nano).toBe(1234);
    const tables = (o: DurableObjectStub<ClientObject>) => runInDurableObject(o, (_: ClientObject, state) => {
      const sql = state.storage.sql;
      const before = sql.exec("SELECT 1 FROM sqlite_master WHERE name = 'counted_before'").toArray().length
        ? sql.exec<{ event_id: string }>("SELECT event_id FROM counted_before").toArray().map((r) => r.event_id) : null;
      return {
        before,
        counted: sql.exec<{ event_id: string }>("SELECT event_id FROM counted").toArray().map((r) => r.event_id),
        rowidTables: sql.exec<{ name: string }>(
          "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('jobs', 'in_flight', 'counted', 'spend', 'pool_day', 'delivered') AND sql NOT LIKE '%WITHOUT ROWID%'",
        ).toArray().map((r) => r.name),
      };
    });
    expect(await tables(after)).toEqual({ before: [recent], counted: [], rowidTables: [] });
    // Once its last id is past the keep, a cleanup empties the table set aside and drops it.
    await runInDurableObject(after, (_: ClientObject, state) => {
      state.storage.sql.exec("UPDATE counted_before SET at = ?", now - 3 * DAY_MS);
    });
    await abortAllDurableObjects();
    const later = env.CLIENT.get(env.CLIENT.idFromName(id));
    const fresh = newId("event", now);
    await addSpend(later, UNLIMITED, [event(fresh, 5)]);
    expect((await later.budget(UNLIMITED)).spent_nano).toBe(1239);
    expect(await tables(later)).toEqual({ before: null, counted: [fresh], rowidTables: [] });
  });

  it("spend counted by id (a retried attempt's settlement) with a budget: totals exact and the budget alert raised once the line is crossed", async () => {
    const { id, stub } = freshClient();
    const limit: BudgetLimit = { limitNano: 1000, source: "client" };
    await addSpend(stub, limit, [event("a", 300), event("b", 300), event("a", 300)]);
    expect((await stub.budget(limit)).spent_nano).toBe(600);
    const open = () => env.DB.prepare("SELECT kind FROM alerts WHERE subject = ?1 AND state = 'open' ORDER BY kind").bind(id).all<{ kind: string }>();
    expect((await open()).results).toEqual([]);
    await addSpend(stub, limit, [event("b", 300), event("c", 250), event("c", 250)]);
    expect((await stub.budget(limit)).spent_nano).toBe(850);
    expect((await open()).results.map((r) => r.kind)).toEqual(["budget_80"]);
  });
});
