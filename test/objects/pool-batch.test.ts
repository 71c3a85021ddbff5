import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { PoolObject } from "../../src/objects/pool";
import type { BatchReserveItem, ReleaseResult, ReserveResult, Result } from "../../src/objects/pool/types";
import type { Caller } from "../../src/domain/types";
import { listUsageEvents } from "../../src/storage/usage";
import { makePool } from "../support/helpers";

const stubOf = (pool: string) => env.POOL.get(env.POOL.idFromName(pool));
const acme: Caller = { clientId: "acme", tier: "enterprise", via: "scheduler" };
const globex: Caller = { clientId: "globex", tier: "premium", via: "scheduler" };

function granted<T>(r: Result<T>): T {
  if (!r.ok) throw new Error(`expected success, got ${JSON.stringify(r.error)}`);
  return r.value;
}

describe("reserveMany", () => {
  it("70 reservations against capacity 50: exactly the first 50 granted in order, 20 rate_limited, all 50 held", async () => {
    const pool = await makePool({ capacity: 50, refillPerSec: 0 });
    const stub = stubOf(pool.id);
    // Later items expire sooner, so the alarm must be set for the last granted item's expiry.
    const items: BatchReserveItem[] = Array.from({ length: 70 }, (_, i) => ({
      caller: acme, amount: 1, ttlMs: 600_000 - i * 1000, requestId: `req_${i}`,
    }));
    const results = (await stub.reserveMany(pool, items)) as Result<ReserveResult>[];

    expect(results).toHaveLength(70);
    const grants = results.slice(0, 50).map(granted);
    expect(grants.map((g) => g.remaining)).toEqual(Array.from({ length: 50 }, (_, i) => 49 - i));
    expect(new Set(grants.map((g) => g.reservationId)).size).toBe(50);
    for (const g of grants) expect(g.reservationId).toMatch(/^res_[0-9a-f]{32}$/);
    for (const r of results.slice(50)) {
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error).toMatchObject({ code: "rate_limited", details: { pool: pool.id, requested: 1, available: 0, retry_after_ms: null } });
    }

    await runInDurableObject(stub, async (instance: PoolObject, state) => {
      const a = instance.availability(pool, null);
      expect(a).toMatchObject({ level: 0, reserved: 50, denials: 20 });
      expect(state.storage.sql.exec("SELECT value FROM counters WHERE name = 'denials'").one().value).toBe(20);
      const rows = state.storage.sql.exec(
        "SELECT id, client_id, request_id, via, amount, status, expires_at FROM reservations ORDER BY request_id",
      ).toArray();
      const expected = grants.map((g, i) => ({
        id: g.reservationId, client_id: "acme", request_id: `req_${i}`, via: "scheduler", amount: 1, status: "held", expires_at: g.expiresAt,
      }));
      expect(rows).toEqual(expected.sort((x, y) => x.request_id.localeCompare(y.request_id)));
      expect(await state.storage.getAlarm()).toBe(grants[49]!.expiresAt);
    });
  });

  it("a denied item does not stop later ones that fit", async () => {
    const pool = await makePool({ capacity: 50, refillPerSec: 0 });
    const amounts = [30, 30, 15, 5, 1];
    const results = (await stubOf(pool.id).reserveMany(pool, amounts.map((amount) => ({ caller: acme, amount, ttlMs: 60_000, requestId: null })))) as Result<ReserveResult>[];
    expect(results.map((r) => (r.ok ? r.value.remaining : r.error.code))).toEqual([20, "rate_limited", 5, 0, "rate_limited"]);
    await runInDurableObject(stubOf(pool.id), (instance: PoolObject, state) => {
      expect(instance.availability(pool, null)).toMatchObject({ level: 0, reserved: 50, denials: 2 });
      expect(state.storage.sql.exec("SELECT amount FROM reservations WHERE request_id IS NULL ORDER BY amount").toArray()).toEqual([
        { amount: 5 }, { amount: 15 }, { amount: 30 },
      ]);
    });
  });
});

describe("releaseMany", () => {
  it("settles a mixed batch item by item, with one refund each, the level exact and one usage event per unit-using release", async () => {
    const pool = await makePool({ capacity: 100, refillPerSec: 0, costPerUnitNano: 7 });
    const stub = stubOf(pool.id);
    const names = ["partial", "full", "other", "over", "expired", "unused"];
    const held = ((await stub.reserveMany(pool, names.map((name) => ({
      caller: name === "other" ? globex : acme, amount: 10, ttlMs: 600_000, requestId: `req_${name}`,
    })))) as Result<ReserveResult>[]).map(granted);
    const id = Object.fromEntries(names.map((name, i) => [name, held[i]!.reservationId]));
    await runInDurableObject(stub, (_i, state) => {
      state.storage.sql.exec("UPDATE reservations SET expires_at = ? WHERE id = ?", Date.now() - 1, id.expired!);
    });

    const results = (await stub.releaseMany(pool, [
      { caller: acme, reservationId: id.partial!, actualUsed: 4 },
      { caller: acme, reservationId: id.full!, actualUsed: 10 },
      { caller: acme, reservationId: "res_unknown", actualUsed: 1 },
      { caller: acme, reservationId: id.other!, actualUsed: 1 },
      { caller: acme, reservationId: id.partial!, actualUsed: 1 },
      { caller: acme, reservationId: id.over!, actualUsed: 11 },
      { caller: acme, reservationId: id.expired!, actualUsed: 3 },
      { caller: acme, reservationId: id.unused!, actualUsed: 0 },
    ])) as Result<ReleaseResult>[];

    const [partial, full, unknown, other, again, over, expired, unused] = results;
    expect(granted(partial!)).toMatchObject({ reservationId: id.partial, consumed: 4, refunded: 6, costNano: 28 });
    expect(granted(full!)).toMatchObject({ reservationId: id.full, consumed: 10, refunded: 0, costNano: 70 });
    expect(granted(unused!)).toMatchObject({ reservationId: id.unused, consumed: 0, refunded: 10, costNano: 0, eventId: null });
    expect(unknown).toEqual({ ok: false, error: { code: "reservation_not_found", message: `no reservation res_unknown in pool ${pool.id}` } });
    expect(other).toEqual({ ok: false, error: { code: "reservation_not_found", message: `no reservation ${id.other} in pool ${pool.id}` } });
    expect(again).toEqual({ ok: false, error: { code: "reservation_closed", message: `reservation ${id.partial} is released`, details: { status: "released" } } });
    expect(over).toEqual({
      ok: false,
      error: { code: "validation_failed", message: "actual_used exceeds the reserved amount", details: { fields: [{ path: "actual_used", message: "must be at most 10" }] } },
    });
    expect(expired).toEqual({ ok: false, error: { code: "reservation_closed", message: `reservation ${id.expired} is expired`, details: { status: "expired" } } });

    // 100 - 60 reserved, then refunds: partial 6, full 0, expired 10, unused 10. Other and over stay held.
    await runInDurableObject(stub, (instance: PoolObject, state) => {
      expect(instance.availability(pool, null)).toMatchObject({ level: 66, reserved: 20 });
      const rows = state.storage.sql.exec("SELECT id, status, consumed FROM reservations").toArray();
      expect(Object.fromEntries(rows.map((r) => [r.id, [r.status, r.consumed]]))).toEqual({
        [id.partial!]: ["released", 4],
        [id.full!]: ["released", 10],
        [id.other!]: ["held", null],
        [id.over!]: ["held", null],
        [id.expired!]: ["expired", 0],
        [id.unused!]: ["released", 0],
      });
    });

    await stub.flush();
    await runDurableObjectAlarm(stub);
    expect(await stub.flush()).toBe(0);
    const events = await listUsageEvents(env.DB, { poolId: pool.id });
    expect(events.map((e) => ({ event_id: e.event_id, request_id: e.request_id, client_id: e.client_id, via: e.via, kind: e.kind, units: e.units, cost_nano: e.cost_nano, at: e.at })).sort((a, b) => a.units - b.units)).toEqual([
      { event_id: granted(partial!).eventId, request_id: "req_partial", client_id: "acme", via: "scheduler", kind: "reservation", units: 4, cost_nano: 28, at: granted(partial!).at },
      { event_id: granted(full!).eventId, request_id: "req_full", client_id: "acme", via: "scheduler", kind: "reservation", units: 10, cost_nano: 70, at: granted(full!).at },
    ]);

    // The refused over-use changed nothing: the reservation still settles in full.
    const [overAgain] = (await stub.releaseMany(pool, [{ caller: acme, reservationId: id.over!, actualUsed: 10 }])) as Result<ReleaseResult>[];
    expect(granted(overAgain!)).toMatchObject({ consumed: 10, refunded: 0, costNano: 70 });
  });

  it("an empty batch answers nothing and changes nothing", async () => {
    const pool = await makePool({ capacity: 10, refillPerSec: 0 });
    const stub = stubOf(pool.id);
    expect(await stub.releaseMany(pool, [])).toEqual([]);
    expect(await stub.reserveMany(pool, [])).toEqual([]);
    await runInDurableObject(stub, (instance: PoolObject) => {
      expect(instance.availability(pool, null)).toMatchObject({ level: 10, reserved: 0, outbox: 0 });
    });
  });
});

describe("settled reservations", () => {
  it("are kept a day past their expiry (a late release is reservation_closed), then the alarm deletes them; held ones stay", async () => {
    const pool = await makePool({ capacity: 100, refillPerSec: 0 });
    const stub = stubOf(pool.id);
    const [old, recent, held] = ((await stub.reserveMany(pool, [
      { caller: acme, amount: 1, ttlMs: 600_000, requestId: "old" },
      { caller: acme, amount: 1, ttlMs: 600_000, requestId: "recent" },
      { caller: acme, amount: 1, ttlMs: 600_000, requestId: "held" },
    ])) as Result<ReserveResult>[]).map(granted);
    await stub.releaseMany(pool, [old!, recent!].map((r) => ({ caller: acme, reservationId: r.reservationId, actualUsed: 0 })));
    // Age the first settlement past the retention (its expiry a day and a minute ago).
    await runInDurableObject(stub, (_instance: PoolObject, state) => {
      const dayAgo = Date.now() - 24 * 60 * 60 * 1000 - 60_000;
      state.storage.sql.exec("UPDATE reservations SET expires_at = ? WHERE id = ?", dayAgo, old!.reservationId);
    });
    const late = (await stub.release(pool, acme, recent!.reservationId, 0)) as Result<ReleaseResult>;
    expect(late).toMatchObject({ ok: false, error: { code: "reservation_closed", details: { status: "released" } } });
    // The scheduler's settlement made again gets the first answer within the keep, and is refused past
    // it while the row is still stored (the alarm has not deleted it): a client object keeps counted
    // event ids only two days (src/domain/retention.ts), so no answer may repeat an event after that.
    const replays = (await stub.releaseMany(pool, [old!, recent!].map((r, i) => ({
      caller: acme, reservationId: r.reservationId, actualUsed: 0, replay: true, requestId: i === 0 ? "old" : "recent",
    })))) as Result<ReleaseResult>[];
    expect(replays[0]).toMatchObject({ ok: false, error: { code: "reservation_not_found" } });
    expect(replays[1]).toMatchObject({ ok: true, value: { reservationId: recent!.reservationId, consumed: 0, refunded: 1 } });
    await runInDurableObject(stub, (_instance: PoolObject, state) => {
      expect(state.storage.sql.exec("SELECT status FROM reservations WHERE id = ?", old!.reservationId).one().status).toBe("released");
    });

    expect(await runDurableObjectAlarm(stub)).toBe(true);
    await runInDurableObject(stub, (_instance: PoolObject, state) => {
      const rows = state.storage.sql.exec<{ id: string; status: string }>("SELECT id, status FROM reservations ORDER BY created_at, id").toArray();
      expect(new Map(rows.map((r) => [r.id, r.status]))).toEqual(new Map([[recent!.reservationId, "released"], [held!.reservationId, "held"]]));
    });
    const forgotten = (await stub.release(pool, acme, old!.reservationId, 0)) as Result<ReleaseResult>;
    expect(forgotten).toMatchObject({ ok: false, error: { code: "reservation_not_found" } });
  });
});
