import { abortAllDurableObjects, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { BudgetLimit } from "../../src/domain/budget";
import type { ClientObject } from "../../src/objects/client";
import type { BudgetDecision } from "../../src/objects/client/types";
import { MONEY_LEASE } from "../../src/domain/leases";

/**
 * The client object keeps the sum of money in flight in memory (src/objects/client/ledger.ts) instead of
 * summing its `in_flight` table on every admission. These tests prove the kept sum equals the table's
 * SUM, exactly, after concurrent admits, settles and drops, a restart of the object and a wipe.
 */

let n = 0;
function freshClient(): { id: string; stub: DurableObjectStub<ClientObject> } {
  n += 1;
  const id = `cif-${crypto.randomUUID().slice(0, 8)}-${n}`;
  return { id, stub: env.CLIENT.get(env.CLIENT.idFromName(id)) };
}

const limit = (limitNano: number | null): BudgetLimit => ({ limitNano, source: limitNano === null ? "unlimited" : "client" });
const oks = (decisions: BudgetDecision[][]) => decisions.filter(([d]) => d!.ok).length;

/** The table's truth: SUM(estimate_nano) as exact text, the row count, and the kept sum as the object reports it. */
async function sums(stub: DurableObjectStub<ClientObject>): Promise<{ table: string; rows: number; kept: string; holds: number }> {
  return runInDurableObject(stub, (instance: ClientObject, state) => {
    const sql = state.storage.sql;
    const t = sql.exec<{ s: string; c: number }>("SELECT CAST(COALESCE(SUM(estimate_nano), 0) AS TEXT) AS s, COUNT(*) AS c FROM in_flight").one();
    const holds = sql.exec<{ c: number }>("SELECT COUNT(*) AS c FROM money_holds").one().c;
    // The ledger's own figure (private): exact as a bigint, so it is compared as text.
    const ledger = (instance as unknown as { ledger: { flyingNano(): bigint } }).ledger;
    return { table: t.s, rows: t.c, kept: ledger.flyingNano().toString(), holds };
  });
}

describe("money in flight is kept in memory, exactly", () => {
  it("concurrent admits at a budget boundary admit an exact count; concurrent settles and drops keep the sum equal to the table", async () => {
    const { stub } = freshClient();
    const L = limit(100_000);
    const E = 3_000;

    // 50 concurrent admissions of 3,000 against 100,000: exactly 33 fit.
    const first = await Promise.all(Array.from({ length: 50 }, (_, i) => stub.admit(L, [{ requestId: `a${i}`, estimateNano: E }])));
    expect(oks(first)).toBe(33);
    const admitted = first.flatMap(([d], i) => (d!.ok ? [`a${i}`] : []));
    for (const [d] of first) if (!d!.ok) expect(d).toMatchObject({ ok: false, budget: { spent_nano: 0, in_flight_nano: 99_000, remaining_nano: 1_000 } });
    expect(await sums(stub)).toEqual({ table: "99000", rows: 33, kept: "99000", holds: 0 });
    expect((await stub.budget(L)).in_flight_nano).toBe(99_000);

    // At once: 10 settle (1,000 spent each), 3 settle but stay in flight (a retry), 5 are dropped, the
    // same 5 are dropped again and settled again (each estimate leaves once), 2 unknown ids are dropped,
    // and 20 new admissions race them. Whatever the interleaving, the sum must equal the table.
    const settled = admitted.slice(0, 10);
    const retried = admitted.slice(10, 13);
    const dropped = admitted.slice(13, 18);
    const racing = Promise.all(Array.from({ length: 20 }, (_, i) => stub.admit(L, [{ requestId: `b${i}`, estimateNano: E }])));
    await Promise.all([
      ...settled.map((id) => stub.settle(null, [{ requestId: id, events: [{ eventId: `ev-${id}`, costNano: 1_000, at: Date.now() }] }])),
      ...retried.map((id) => stub.settle(null, [{ requestId: id, events: [], keepInFlight: true }])),
      ...dropped.map((id) => stub.drop([id])),
      stub.drop(dropped),
      stub.settle(null, dropped.map((id) => ({ requestId: id, events: [] }))),
      stub.drop(["nope-1", "nope-2"]),
    ]);
    const raced = oks(await racing);
    const mid = await sums(stub);
    expect(mid.rows).toBe(33 - 15 + raced);
    expect(mid).toEqual({ table: String(mid.rows * E), rows: mid.rows, kept: String(mid.rows * E), holds: 0 });
    expect(10_000 + mid.rows * E).toBeLessThanOrEqual(100_000);

    // With the frees done, 20 more concurrent admissions take exactly what is left: (100,000 - 10,000 spent - in flight) / 3,000.
    const left = 100_000 - 10_000 - mid.rows * E;
    const last = await Promise.all(Array.from({ length: 20 }, (_, i) => stub.admit(L, [{ requestId: `c${i}`, estimateNano: E }])));
    expect(oks(last)).toBe(Math.floor(left / E));
    const end = await sums(stub);
    expect(end.rows).toBe(mid.rows + Math.floor(left / E));
    expect(end).toEqual({ table: String(end.rows * E), rows: end.rows, kept: String(end.rows * E), holds: 0 });
    expect(await stub.budget(L)).toMatchObject({ spent_nano: 10_000, in_flight_nano: end.rows * E, remaining_nano: left % E });
  });

  it("stays exact past 2^53 nano-dollars, where adding and subtracting doubles would drift", async () => {
    const { stub } = freshClient();
    const big = 4_000_000_000_000_001; // a safe integer; three of them are not
    const decisions = await stub.admit(limit(null), [0, 1, 2].map((i) => ({ requestId: `big${i}`, estimateNano: big })));
    expect(decisions).toEqual([{ ok: true }, { ok: true }, { ok: true }]);
    expect(await sums(stub)).toEqual({ table: "12000000000000003", rows: 3, kept: "12000000000000003", holds: 0 });
    await stub.drop(["big0"]);
    await stub.settle(null, [{ requestId: "big1", events: [] }]);
    // 4,000,000,000,000,001 exactly: with doubles, 12,000,000,000,000,003 rounds on the way up and stays off.
    expect(await sums(stub)).toEqual({ table: "4000000000000001", rows: 1, kept: "4000000000000001", holds: 0 });
    expect((await stub.budget(limit(null))).in_flight_nano).toBe(big);
  });

  it("a restarted object loads the sum from its table once; a wiped client starts again from zero", async () => {
    const { id, stub } = freshClient();
    const L = limit(10_000);
    expect(await stub.admit(L, [{ requestId: "r1", estimateNano: 4_000 }, { requestId: "r2", estimateNano: 5_000 }])).toEqual([{ ok: true }, { ok: true }]);

    await abortAllDurableObjects();
    const after = env.CLIENT.get(env.CLIENT.idFromName(id));
    // Loaded from the table, and r1 admitted again is not counted twice: 1,000 is all that is left.
    expect(await after.admit(L, [{ requestId: "r1", estimateNano: 4_000 }, { requestId: "r3", estimateNano: 1_001 }, { requestId: "r4", estimateNano: 1_000 }])).toEqual([
      { ok: true },
      { ok: false, budget: expect.objectContaining({ in_flight_nano: 9_000, remaining_nano: 1_000 }) },
      { ok: true },
    ]);
    expect(await sums(after)).toEqual({ table: "10000", rows: 3, kept: "10000", holds: 0 });

    await after.forget();
    expect(await sums(after)).toEqual({ table: "0", rows: 0, kept: "0", holds: 0 });
    expect(await after.admit(L, [{ requestId: "r5", estimateNano: 10_000 }])).toEqual([{ ok: true }]);
    expect(await sums(after)).toEqual({ table: "10000", rows: 1, kept: "10000", holds: 0 });
  });
});

describe("money held outside requests and this month's spend are kept too, never stale", () => {
  const quota = { maxConcurrent: 100, cpuMillicores: null, memoryMb: null, poolDaily: {} };

  it("a hold counts until its drop time with no write in between, and stops counting then; a settled hold stops at once", async () => {
    const { stub } = freshClient();
    const L = limit(10_000);
    const now = Date.now();
    // Dropped 600 ms from now (its expiry + the grace), another much later.
    expect(await stub.holdReservation(L, quota, { id: "soon", nano: 3_000, expiresAt: now + 600 - MONEY_LEASE.GRACE_MS, pool: "p", units: 1 })).toEqual({ ok: true });
    expect(await stub.holdReservation(L, quota, { id: "late", nano: 2_000, expiresAt: now + 60_000, pool: "p", units: 1 })).toEqual({ ok: true });
    expect((await stub.budget(L)).in_flight_nano).toBe(5_000);
    // 5,000 left: an admission of 5,001 is refused, of 5,000 admitted (the kept sum is read, not the table).
    expect(await stub.admit(L, [{ requestId: "x", estimateNano: 5_001 }])).toEqual([{ ok: false, budget: expect.objectContaining({ in_flight_nano: 5_000 }) }]);
    await new Promise((r) => setTimeout(r, 700));
    // Nothing was written since: the drop time alone takes "soon" out.
    expect((await stub.budget(L)).in_flight_nano).toBe(2_000);
    expect(await stub.admit(L, [{ requestId: "y", estimateNano: 8_000 }])).toEqual([{ ok: true }]);
    expect((await sums(stub)).holds).toBe(1);
    // A settled hold leaves at once.
    await stub.settleReservation("late", null);
    expect((await stub.budget(L)).in_flight_nano).toBe(8_000);
    expect(await stub.admit(L, [{ requestId: "z", estimateNano: 2_000 }])).toEqual([{ ok: true }]);
  });

  it("spend booked after an admission read the month's spend counts for the next admission", async () => {
    const { stub } = freshClient();
    const L = limit(10_000);
    expect(await stub.admit(L, [{ requestId: "a", estimateNano: 1_000 }])).toEqual([{ ok: true }]);
    await stub.settle(null, [{ requestId: "a", events: [{ eventId: "ev-a", costNano: 6_000, at: Date.now() }] }]);
    // 6,000 spent, nothing in flight: 4,000 left exactly.
    expect(await stub.admit(L, [{ requestId: "b", estimateNano: 4_001 }])).toEqual([{ ok: false, budget: expect.objectContaining({ spent_nano: 6_000, in_flight_nano: 0 }) }]);
    expect(await stub.admit(L, [{ requestId: "c", estimateNano: 4_000 }])).toEqual([{ ok: true }]);
    // A wipe forgets the kept spend with the table.
    await stub.forget();
    expect(await stub.admit(L, [{ requestId: "d", estimateNano: 10_000 }])).toEqual([{ ok: true }]);
  });
});
