import { abortAllDurableObjects, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { ADMIN, call, captureLog, enqueue, eventually, makeClient, makePool, makeTemplate, scheduler, settled, sleep, spendOf } from "../support/helpers";

/** What the settlement reaches for a client object (the fault is injected there: the client object unreachable). */
type ClientStubOf = { clientStub: (clientId: string) => { settle: (...args: unknown[]) => Promise<void> } };

/**
 * The next `failures` client-object settlements of the scheduler fail; later ones go through. "unreachable": the
 * call fails before the object sees it; "answer lost": the object applies it and the call throws after.
 */
async function faultClientSettlements(failures: number, fault: "unreachable" | "answer lost" = "unreachable"): Promise<void> {
  await runInDurableObject(scheduler(), (instance: SchedulerObject) => {
    const settlement = (instance as unknown as { settlement: ClientStubOf }).settlement;
    const real = Object.getPrototypeOf(settlement).clientStub.bind(settlement) as ClientStubOf["clientStub"];
    let left = failures;
    settlement.clientStub = (clientId: string) => {
      const stub = real(clientId);
      return {
        settle: async (...args: unknown[]) => {
          if (fault === "answer lost") await stub.settle(...args);
          if (left-- > 0) throw new Error(fault === "unreachable" ? "client object unreachable" : "the client object's answer was lost");
          if (fault === "unreachable") return stub.settle(...args);
        },
      };
    };
  });
}

/** What the settlement reaches for a pool object (the fault injected there: the pool object unreachable). */
type PoolStubOf = { poolStub: (pool: string) => { releaseMany: (...args: unknown[]) => Promise<unknown> } };

/** Every pool release of the scheduler's settlements fails until the objects restart, as when the pool cannot be reached. */
async function failPoolReleases(): Promise<void> {
  await runInDurableObject(scheduler(), (instance: SchedulerObject) => {
    const settlement = (instance as unknown as { settlement: PoolStubOf }).settlement;
    settlement.poolStub = () => ({ releaseMany: async () => { throw new Error("pool object unreachable"); } });
  });
}


describe("a settlement that fails (a client object unreachable)", () => {
  afterEach(() => vi.restoreAllMocks());

  it("is made again: the pools answer the repeated release as the first time, so the request completes once and its cost is counted once", async () => {
    const pool = await makePool({ capacity: 100, costPerUnitNano: 1000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 3 }], { timeoutMs: 2000 });
    const client = await makeClient("settle-retry");
    const lines = captureLog();
    await faultClientSettlements(1);
    const r = await enqueue({ template, queue: "fast" }, client.key);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const id: string = r.body.request.id;
    const done = await settled(id, ["completed", "failed"], 10_000, client.key);
    expect(done).toMatchObject({ status: "completed", attempts: 1 });
    const failed = lines.filter((l) => l.msg === "settle_failed");
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ level: "error", count: 1, error: "Error: client object unreachable", retry_in_ms: 200 });
    expect(failed[0]!.requests).toEqual([{ request_id: id, trace_id: r.body.trace_id }]);
    expect(lines.some((l) => l.msg === "release_refused")).toBe(false);
    // 3 units at 1,000 nano-dollars, once: the first release's usage event, answered again, counted once.
    await eventually(async () => {
      const s = await spendOf(client.id);
      return s.spent_nano === 3000 && s.in_flight_nano === 0 ? s : null;
    }, 5000, "the client's spend of one run");
    expect(await spendOf(client.id)).toMatchObject({ spent_nano: 3000, in_flight_nano: 0 });
  }, 30_000);

  it("applied by the client object but its answer lost is made again: the estimate left flight with the first, so the cost is counted once, with no counted id kept", async () => {
    const pool = await makePool({ capacity: 100, costPerUnitNano: 1000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 3 }], { timeoutMs: 2000 });
    const client = await makeClient("settle-lost");
    const lines = captureLog();
    await faultClientSettlements(1, "answer lost");
    const r = await enqueue({ template, queue: "fast" }, client.key);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const id: string = r.body.request.id;
    expect(await settled(id, ["completed", "failed"], 10_000, client.key)).toMatchObject({ status: "completed", attempts: 1 });
    // It was settled twice at the client: the first (applied, its answer lost) and the one made again.
    expect(lines.filter((l) => l.msg === "settle_failed")).toHaveLength(1);
    await sleep(300);
    expect(await spendOf(client.id)).toMatchObject({ spent_nano: 3000, in_flight_nano: 0 });
    const counted = await runInDurableObject(env.CLIENT.get(env.CLIENT.idFromName(client.id)), (_, state) => state.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM counted").one().n);
    expect(counted).toBe(0);
  }, 30_000);

  it("that keeps failing is owed: kept in the shard's storage, its request stays running past its lease (never run again), and after a restart it is made again: the request completes once, its cost counted once", async () => {
    const pool = await makePool({ capacity: 100, costPerUnitNano: 1000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }], { timeoutMs: 500 });
    const client = await makeClient("settle-owed");
    const lines = captureLog();
    await faultClientSettlements(1000); // every settlement fails until the objects restart
    const r = await enqueue({ template, queue: "fast" }, client.key);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const id: string = r.body.request.id;
    const third = await eventually(async () => lines.find((l) => l.msg === "settle_failed" && l.failures === 3), 8000, "the third settle_failed line");
    expect(lines.filter((l) => l.msg === "settle_failed").map((l) => [l.failures, l.retry_in_ms])).toEqual([[1, 200], [2, 1000], [3, 5000]]);
    expect(third).toMatchObject({ level: "error", count: 1, error: "Error: client object unreachable" });
    expect(third.requests).toEqual([{ request_id: id, trace_id: r.body.trace_id }]);
    // Past its lease (timeout 500 ms + LEASE_MARGIN_MS 1,000): it ran, so it is not sent back to its queue.
    await sleep(1600);
    await scheduler().pass("test");
    expect(((await scheduler().get(id, null)) as { status: string; attempts: number } | null)).toMatchObject({ status: "running", attempts: 1 });
    expect(lines.some((l) => l.msg === "lease_expired" && l.request_id === id)).toBe(false);
    expect((await call("GET", "/admin/scheduler/status", { token: ADMIN })).body).toMatchObject({ settlements_owed: 1 });
    expect((await call("GET", "/metrics", { token: ADMIN })).body as string).toMatch(/^rm_scheduler_settlements_owed 1$/m);
    // The shard restarts (and the fault with it): it reads what it owes and its alarm makes the settlement when due,
    // 5 s after the third failure; on a machine slow enough that a fourth failed before the restart, 30 s after that.
    const due = Math.max(...lines.filter((l) => l.msg === "settle_failed").map((l) => l.retry_in_ms as number));
    await abortAllDurableObjects();
    const done = await settled(id, ["completed", "failed"], due + 10_000, client.key);
    expect(done).toMatchObject({ status: "completed", attempts: 1 });
    expect((await call("GET", "/admin/scheduler/status", { token: ADMIN })).body).toMatchObject({ settlements_owed: 0 });
    // 1 unit at 1,000 nano-dollars, once: the pool answers the repeated release with its first usage event.
    await eventually(async () => {
      const s = await spendOf(client.id);
      return s.spent_nano === 1000 && s.in_flight_nano === 0 ? s : null;
    }, 5000, "the client's spend of one run");
    expect(lines.some((l) => l.msg === "release_refused")).toBe(false);
  }, 70_000);

  it("with its pool unreachable past the reservation's expiry: the late release is counted (use and cost, once), and the units that went back at expiry are not taken again", async () => {
    const pool = await makePool({ capacity: 100, refillPerSec: 0, costPerUnitNano: 1000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 4 }], { timeoutMs: 500 });
    const client = await makeClient("settle-late");
    const lines = captureLog();
    await failPoolReleases();
    const r = await enqueue({ template, queue: "fast" }, client.key);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const id: string = r.body.request.id;
    await eventually(async () => lines.find((l) => l.msg === "settle_failed" && l.failures === 2), 8000, "the second settle_failed line");
    expect(lines.find((l) => l.msg === "settle_failed")).toMatchObject({ error: "Error: pool object unreachable" });
    // Past the lease (timeout 500 ms + LEASE_MARGIN_MS 1,000): the pool expires the reservation and its 4 units go back.
    await sleep(1600);
    // A stub each time: stubs made before abortAllDurableObjects() cannot be used after it.
    const poolObject = () => env.POOL.get(env.POOL.idFromName(pool.id));
    expect(await poolObject().configure(pool)).toMatchObject({ level: 100, activeReservations: 0 });
    const reservationOf = () => runInDurableObject(poolObject(), (_: unknown, state: DurableObjectState) =>
      state.storage.sql.exec<{ status: string; consumed: number | null; cost_nano: number | null }>("SELECT status, consumed, cost_nano FROM reservations WHERE request_id = ?", id).one());
    expect(await reservationOf()).toMatchObject({ status: "expired" });
    // The pool is reachable again after the restart: the owed settlement releases late, and is counted.
    await abortAllDurableObjects();
    const done = await settled(id, ["completed", "failed"], 15_000, client.key);
    expect(done).toMatchObject({ status: "completed", attempts: 1 });
    // What the worker reported using of its 4 units (the sample worker reports its own figure), at 1,000 each.
    const used: number = done.actual[0].units;
    expect(used).toBeGreaterThan(0);
    expect(done.actual).toEqual([{ pool: pool.id, units: used, cost_nano: used * 1000 }]);
    expect(done.actual_nano).toBe(used * 1000);
    expect(await reservationOf()).toEqual({ status: "released", consumed: used, cost_nano: used * 1000 });
    await eventually(async () => {
      const s = await spendOf(client.id);
      return s.spent_nano === used * 1000 && s.in_flight_nano === 0 ? s : null;
    }, 5000, "the client's spend of one run, counted late");
    // The units went back at expiry and are not taken again; the overshoot is logged by the pool.
    expect(await poolObject().configure(pool)).toMatchObject({ level: 100, activeReservations: 0 });
    expect(lines.some((l) => l.msg === "release_refused")).toBe(false);
    expect(lines.find((l) => l.msg === "release_after_expiry")).toMatchObject({ level: "warn", pool: pool.id, request_id: id, units: used });
    // Settled again (a replay), it is answered as the first time: nothing more is counted.
    await scheduler().pass("test");
    expect(await spendOf(client.id)).toMatchObject({ spent_nano: used * 1000, in_flight_nano: 0 });
  }, 40_000);
});
