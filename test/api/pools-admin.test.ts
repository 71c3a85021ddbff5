import { runDurableObjectAlarm } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { PoolConfig } from "../../src/domain/types";
import type { SpendItem } from "../../src/objects/pool/types";
import { checkAlerts } from "../../src/services/alerts";
import { ADMIN, call, consume, eventually, expectError, INTERNAL, KEYS, makeClient, makePool, makeTemplate, requestOf, settled, sleep } from "../support/helpers";

let seq = 0;
function newId(): string {
  seq += 1;
  return `pa-${crypto.randomUUID().slice(0, 8)}-${seq}`;
}

const BASE = { name: "GPU minutes", unit: "minutes", capacity: 100, refill_per_sec: 0, cost_per_unit_nano: 1000 };

function create(json: Record<string, unknown>) {
  return call("POST", "/admin/pools", { token: ADMIN, json });
}

async function created(extra: Record<string, unknown> = {}): Promise<string> {
  const id = newId();
  const r = await create({ id, ...BASE, ...extra });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return id;
}

const get = (id: string) => call("GET", `/admin/pools/${id}`, { token: ADMIN });
const patch = (id: string, json: unknown) => call("PATCH", `/admin/pools/${id}`, { token: ADMIN, json });
const remove = (id: string) => call("DELETE", `/admin/pools/${id}`, { token: ADMIN });

function reserve(pool: string, amount: number, clientId = "acme") {
  return call("POST", "/internal/reserve", { token: INTERNAL, json: { client_id: clientId, pool, amount, ttl_ms: 60_000 } });
}

function release(pool: string, reservationId: string, actualUsed = 0, clientId = "acme") {
  return call("POST", "/internal/release", { token: INTERNAL, json: { client_id: clientId, pool, reservation_id: reservationId, actual_used: actualUsed } });
}

/** The field paths a 400 names. */
function fieldsOf(r: { body: any }): string[] {
  return r.body.error.details.fields.map((f: { path: string }) => f.path).sort();
}

describe("authorization", () => {
  it("only the admin token manages pools: 401 without a credential, 403 for API keys and the internal token", async () => {
    const id = await created();
    const routes: Array<[string, string, unknown?]> = [
      ["POST", "/admin/pools", { id: newId(), ...BASE }],
      ["GET", "/admin/pools"],
      ["GET", `/admin/pools/${id}`],
      ["PATCH", `/admin/pools/${id}`, { capacity: 1 }],
      ["DELETE", `/admin/pools/${id}`],
    ];
    for (const [method, path, json] of routes) {
      expectError(await call(method, path, { json }), 401, "unauthorized");
      expectError(await call(method, path, { json, token: KEYS.acme }), 403, "forbidden");
      expectError(await call(method, path, { json, token: INTERNAL }), 403, "forbidden");
    }
    // none of that changed anything
    expect((await get(id)).body.pool).toMatchObject({ capacity: 100, version: 1 });
  });
});

describe("create, read, list", () => {
  it("creates with defaults, shows the object's live state, and lists with filters", async () => {
    const id = newId();
    const r = await create({ id, ...BASE });
    expect(r.status).toBe(201);
    expect(r.body.pool).toEqual({
      id, ...BASE, sharing: { mode: "shared" }, status: "active", sizing: "static", min_capacity: null, max_capacity: null,
      low_water_percent: 10, leases: "auto", version: 1, updated_at: expect.any(Number),
    });
    expect(r.body.live).toMatchObject({ version: 1, level: 100, capacity: 100, active_reservations: 0, reserved_units: 0, drained: false, leased_units: 0, lease_holders: 0 });
    // it serves at once
    expect((await consume(id, 30)).status).toBe(200);
    expect((await get(id)).body.live).toMatchObject({ level: 70, capacity: 100 });

    const dyn = await created({ sizing: "dynamic", min_capacity: 50, max_capacity: 500, status: "draining", low_water_percent: 25 });
    const all = (await call("GET", "/admin/pools", { token: ADMIN })).body.pools.map((p: any) => p.id);
    expect(all).toEqual(expect.arrayContaining([id, dyn, "openai-gpt4"]));
    expect(all).toEqual([...all].sort());
    const dynamic = (await call("GET", "/admin/pools?sizing=dynamic", { token: ADMIN })).body.pools;
    expect(dynamic.map((p: any) => p.id)).toContain(dyn);
    expect(dynamic.every((p: any) => p.sizing === "dynamic")).toBe(true);
    expect(dynamic.find((p: any) => p.id === dyn)).toMatchObject({ min_capacity: 50, max_capacity: 500, low_water_percent: 25, status: "draining" });
    const active = (await call("GET", "/admin/pools?status=active&sizing=dynamic", { token: ADMIN })).body.pools.map((p: any) => p.id);
    expect(active).not.toContain(dyn);
    expectError(await call("GET", "/admin/pools?status=paused", { token: ADMIN }), 400, "validation_failed");
    expectError(await call("GET", "/admin/pools?colour=red", { token: ADMIN }), 400, "validation_failed");
  });

  it("409 pool_exists for a taken id, leaving the pool as it was", async () => {
    const id = await created();
    expectError(await create({ id, ...BASE, capacity: 5 }), 409, "pool_exists");
    expectError(await create({ id: "openai-gpt4", ...BASE }), 409, "pool_exists");
    expect((await get(id)).body.pool).toMatchObject({ capacity: 100, version: 1 });
  });

  it("bad input is 400 naming each field, and creates nothing", async () => {
    const bad = async (json: Record<string, unknown>, fields: string[]) => {
      const r = await create(json);
      expectError(r, 400, "validation_failed");
      expect(fieldsOf(r)).toEqual(fields);
    };
    const id = newId();
    await bad({ id }, ["capacity", "cost_per_unit_nano", "name", "refill_per_sec", "unit"]);
    await bad({ id: "Not_A_Pool", ...BASE }, ["id"]);
    await bad({ id, ...BASE, capacity: 0, refill_per_sec: -1, cost_per_unit_nano: 1.5 }, ["capacity", "cost_per_unit_nano", "refill_per_sec"]);
    await bad({ id, ...BASE, status: "paused", sizing: "elastic", low_water_percent: 101 }, ["low_water_percent", "sizing", "status"]);
    await bad({ id, ...BASE, sizing: "dynamic" }, ["max_capacity", "min_capacity"]);
    await bad({ id, ...BASE, sizing: "dynamic", min_capacity: 150, max_capacity: 300 }, ["capacity"]);
    await bad({ id, ...BASE, sizing: "dynamic", min_capacity: 80, max_capacity: 90 }, ["capacity"]);
    await bad({ id, ...BASE, sizing: "dynamic", min_capacity: 300, max_capacity: 200 }, ["min_capacity"]);
    await bad({ id, ...BASE, min_capacity: 10 }, ["min_capacity"]);
    await bad({ id, ...BASE, sharing: { mode: "reserved", shares: [{ tier: "enterprise", fraction: 0.7 }, { client_id: "globex", fraction: 0.4 }] } }, ["sharing.shares"]);
    await bad({ id, ...BASE, sharing: { mode: "reserved", shares: [{ tier: "enterprise", fraction: 0.2 }, { tier: "enterprise", fraction: 0.2 }] } }, ["sharing.shares.1"]);
    await bad({ id, ...BASE, sharing: { mode: "reserved", shares: [{ tier: "enterprise", client_id: "acme", fraction: 0.2 }] } }, ["sharing.shares.0.tier"]);
    await bad({ id, ...BASE, sharing: { mode: "reserved", shares: [] } }, ["sharing.shares"]);
    await bad({ id, ...BASE, sharing: { mode: "dedicated" } }, ["sharing.client_id"]);
    await bad({ id, ...BASE, sharing: { mode: "pooled" } }, ["sharing.mode"]);
    await bad({ id, ...BASE, version: 7 }, [""]);
    expectError(await call("POST", "/admin/pools", { token: ADMIN, body: "{", headers: { "content-type": "application/json" } }), 400, "bad_request");
    const unknownClient = await create({ id, ...BASE, sharing: { mode: "dedicated", client_id: "no-such-client" } });
    expectError(unknownClient, 404, "client_not_found");
    expectError(await get(id), 404, "pool_not_found");
  });

  it("404 pool_not_found for an unknown pool; 400 for an id that cannot be one", async () => {
    expectError(await get("no-such-pool"), 404, "pool_not_found");
    expectError(await patch("no-such-pool", { capacity: 5 }), 404, "pool_not_found");
    expectError(await remove("no-such-pool"), 404, "pool_not_found");
    expectError(await get("NO_SUCH"), 400, "validation_failed");
  });
});

describe("changes reach the pool's object at once", () => {
  it("a capacity raise lets a bigger reserve through immediately, even for a caller holding the old configuration", async () => {
    const id = await created({ capacity: 10 });
    expectError(await reserve(id, 15), 400, "amount_exceeds_capacity");
    const r = await patch(id, { capacity: 20 });
    expect(r.status).toBe(200);
    expect(r.body.pool).toMatchObject({ capacity: 20, version: 2 });
    // the object adopted version 2: the 10 units added are there now
    expect(r.body.live).toMatchObject({ version: 2, capacity: 20, level: 20 });
    expect((await reserve(id, 15)).status).toBe(200);

    // a caller in another isolate may still cache version 1: the object keeps the newer one
    const stale: PoolConfig = { id, name: BASE.name, unit: BASE.unit, capacity: 10, refillPerSec: 0, costPerUnitNano: 1000, sharing: { mode: "shared" }, status: "active", version: 1 };
    const stub = env.POOL.get(env.POOL.idFromName(id));
    const got = await stub.reserve(stale, { clientId: "acme", tier: "enterprise", via: "internal" }, { amount: 5, ttlMs: 60_000 });
    expect(got.ok).toBe(true);
    expect((await get(id)).body.live).toMatchObject({ capacity: 20, level: 0, active_reservations: 2, reserved_units: 20 });
  });

  it("a capacity cut clamps the level; price, sharing and bounds apply to the next spend", async () => {
    const id = await created({ capacity: 10, cost_per_unit_nano: 1 });
    expect((await consume(id, 2)).body.cost_nano).toBe(2);
    const cut = await patch(id, { capacity: 5, cost_per_unit_nano: 100 });
    expect(cut.body.live).toMatchObject({ capacity: 5, level: 5 });
    expect((await consume(id, 2)).body).toMatchObject({ cost_nano: 200, remaining: 3 });

    expect((await patch(id, { sharing: { mode: "dedicated", client_id: "globex" } })).body.pool.sharing).toEqual({ mode: "dedicated", client_id: "globex" });
    expectError(await consume(id, 1, {}, "acme"), 403, "pool_forbidden");
    expect((await consume(id, 1, {}, "globex")).status).toBe(200);
    const reserved = await patch(id, { sharing: { mode: "reserved", shares: [{ client_id: "globex", fraction: 0.5 }, { tier: "basic", fraction: 0.25 }] } });
    expect(reserved.body.pool.sharing).toEqual({ mode: "reserved", shares: [{ client_id: "globex", fraction: 0.5 }, { tier: "basic", fraction: 0.25 }] });
    expectError(await patch(id, { sharing: { mode: "dedicated", client_id: "nobody-here" } }), 404, "client_not_found");

    expectError(await patch(id, {}), 400, "validation_failed");
    expectError(await patch(id, { id: "other" }), 400, "validation_failed");
    const dyn = await patch(id, { sizing: "dynamic" });
    expectError(dyn, 400, "validation_failed");
    expect(fieldsOf(dyn)).toEqual(["max_capacity", "min_capacity"]);
    expect((await patch(id, { sizing: "dynamic", min_capacity: 5, max_capacity: 50 })).body.pool).toMatchObject({ sizing: "dynamic", min_capacity: 5, max_capacity: 50 });
    const over = await patch(id, { capacity: 51 });
    expectError(over, 400, "validation_failed");
    expect(fieldsOf(over)).toEqual(["capacity"]);
    const d = (await get(id)).body.pool;
    expect(d).toMatchObject({ capacity: 5, cost_per_unit_nano: 100, sizing: "dynamic", version: 5 });
  });

  it("concurrent changes are each applied once, on top of each other", async () => {
    const id = await created();
    const names = Array.from({ length: 8 }, (_, i) => `name-${i}`);
    const results = await Promise.all([...names.map((name) => patch(id, { name })), patch(id, { capacity: 77 }), patch(id, { low_water_percent: 33 })]);
    expect(results.map((r) => r.status)).toEqual(Array(10).fill(200));
    const p = (await get(id)).body;
    expect(p.pool.version).toBe(11);
    expect(p.pool).toMatchObject({ capacity: 77, low_water_percent: 33 });
    expect(names).toContain(p.pool.name);
    expect(p.live).toMatchObject({ version: 11, capacity: 77 });
  });

  it("the low-water threshold is per pool: pool_low fires below it (strictly), from the object's alarm and the cron's check", async () => {
    const high = await created({ low_water_percent: 50 });
    const normal = await created();
    for (const id of [high, normal]) expect((await consume(id, 51)).status).toBe(200); // 49% left
    for (const id of [high, normal]) await runDurableObjectAlarm(env.POOL.get(env.POOL.idFromName(id)));
    const open = async (id: string) => {
      const r = await call("GET", "/admin/alerts?kind=pool_low&state=open", { token: ADMIN });
      return r.body.alerts.filter((a: any) => a.subject === id);
    };
    const [alert] = await open(high);
    expect(alert).toMatchObject({ details: { level: 49, capacity: 100, threshold_percent: 50 } });
    expect(await open(normal)).toEqual([]);

    expect((await patch(high, { low_water_percent: 49 })).status).toBe(200);
    await checkAlerts(env, Date.now());
    expect(await open(high)).toEqual([]);
    expect((await patch(normal, { low_water_percent: 50 })).status).toBe(200);
    await checkAlerts(env, Date.now());
    expect(await open(normal)).toHaveLength(1);
  });

  it("queued work the pool refused runs as soon as a change makes room, not at its retry hint (a minute for a pool with no refill)", async () => {
    const pool = await makePool({ capacity: 1, refillPerSec: 0, leases: "off" });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    const client = await makeClient("pool-raise");
    expect((await call("POST", "/admin/scheduler/start", { token: ADMIN })).status).toBe(200);
    expect((await consume(pool.id, 1)).status).toBe(200); // the one unit, gone for good
    const res = await call("POST", "/api/execute", { token: client.key, json: { template, params: { tokens_used: 1 } } });
    expect(res.status).toBe(202);
    // Refused again by the passes that follow (its retry hint: a minute), then the operator raises the pool.
    // A pass may be admitting it at any moment (its status "dispatching" meanwhile): wait until one has
    // given it back, 300 ms on; it has not run.
    await sleep(300);
    const waiting = await eventually(async () => {
      const r = await requestOf(res.body.request.id, client.key);
      return r.status === "queued" ? r : null;
    }, 3000, "the refused request back in its queue");
    expect(waiting.attempts).toBe(0);
    expect((await patch(pool.id, { capacity: 5, refill_per_sec: 0 })).status).toBe(200);
    const done = await settled(res.body.request.id, ["completed"], 3000, client.key);
    expect(done.attempts).toBe(1);
  });
});

describe("lifecycle", () => {
  it("draining refuses new reservations and consumes with 409 pool_inactive; held reservations still settle; disabling waits until drained", async () => {
    const id = await created({ capacity: 10 });
    const held = await reserve(id, 4);
    const other = await reserve(id, 2);
    expect([held.status, other.status]).toEqual([200, 200]);

    const draining = await patch(id, { status: "draining" });
    expect(draining.body.live).toMatchObject({ status: "draining", active_reservations: 2, reserved_units: 6, drained: false });
    expectError(await reserve(id, 1), 409, "pool_inactive");
    expectError(await consume(id, 1), 409, "pool_inactive");
    const check = await call("POST", "/api/resources/check", { token: KEYS.acme, json: { pool: id, amount: 1 } });
    expect(check.body.results[0]).toMatchObject({ allowed: false, available: 0 });

    expectError(await patch(id, { status: "disabled" }), 409, "pool_busy");
    // the holder consumes part of its reservation and gives the rest back
    const settled = await release(id, held.body.reservation_id, 3);
    expect(settled.body).toMatchObject({ consumed: 3, refunded: 1 });
    expectError(await patch(id, { status: "disabled" }), 409, "pool_busy");
    expect((await release(id, other.body.reservation_id)).status).toBe(200);
    expect((await get(id)).body.live).toMatchObject({ active_reservations: 0, drained: true, level: 7 });

    const disabled = await patch(id, { status: "disabled" });
    expect(disabled.body.pool.status).toBe("disabled");
    expectError(await reserve(id, 1), 409, "pool_inactive");
    // back to service
    expect((await patch(id, { status: "active" })).body.live.status).toBe("active");
    expect((await reserve(id, 7)).status).toBe(200);
  });

  it("delete: 409 pool_busy while a reservation is active; then gone, refused to stale callers, and the id can be reused", async () => {
    const id = await created({ capacity: 10 });
    const held = await reserve(id, 3);
    expect(held.status).toBe(200);
    const busy = await remove(id);
    expectError(busy, 409, "pool_busy");
    expect(busy.body.error.details).toMatchObject({ active_reservations: 1, reserved_units: 3 });
    expect((await reserve(id, 1)).status).toBe(200); // still in service

    const list = (await call("GET", `/admin/pools`, { token: ADMIN })).body.pools;
    expect(list.map((p: any) => p.id)).toContain(id);
    const r2 = (await get(id)).body.live;
    expect(r2.active_reservations).toBe(2);
  });

  it("delete after the reservations settle; the deleted pool's object refuses stale callers and raises no pool_low; re-creating starts fresh", async () => {
    const id = await created({ capacity: 10, low_water_percent: 50 });
    const held = await reserve(id, 3);
    expect((await release(id, held.body.reservation_id, 2)).status).toBe(200);
    expect((await consume(id, 6)).status).toBe(200);
    const deleted = await remove(id);
    expect(deleted.body).toMatchObject({ pool: id, deleted: true });
    expectError(await get(id), 404, "pool_not_found");
    expectError(await remove(id), 404, "pool_not_found");
    expectError(await consume(id, 1), 404, "pool_not_found");
    expect((await call("GET", "/admin/pools", { token: ADMIN })).body.pools.map((p: any) => p.id)).not.toContain(id);
    // its usage was delivered before it went
    const usage = await env.DB.prepare("SELECT COALESCE(SUM(units), 0) AS n FROM usage_events WHERE pool_id = ?1").bind(id).first<{ n: number }>();
    expect(usage!.n).toBe(8);

    const stub = env.POOL.get(env.POOL.idFromName(id));
    // 2 of 10 left is below its 50% low water, but a deleted pool's alarm leaves no pool_low open
    await runDurableObjectAlarm(stub);
    const lows = await call("GET", "/admin/alerts?kind=pool_low&state=open", { token: ADMIN });
    expect(lows.body.alerts.filter((a: any) => a.subject === id)).toEqual([]);
    const stale: PoolConfig = { id, name: BASE.name, unit: BASE.unit, capacity: 10, refillPerSec: 0, costPerUnitNano: 1000, sharing: { mode: "shared" }, status: "active", version: 1 };
    const one: SpendItem = ["acme", "enterprise", "internal", 1, null, null];
    const refused = ((await stub.spend(stale, [one])) as unknown as unknown[])[0];
    expect(refused).toMatchObject({ ok: false, error: { code: "pool_inactive" } });

    const again = await create({ id, ...BASE, capacity: 4 });
    expect(again.status).toBe(201);
    expect(again.body.pool.version).toBeGreaterThan(1);
    expect(again.body.live).toMatchObject({ version: again.body.pool.version, capacity: 4, level: 4, status: "active" });
    expect((await get(id)).body.pool.version).toBe(again.body.pool.version);
    expect((await consume(id, 4)).status).toBe(200);
    expect(((await stub.spend(stale, [one])) as unknown as unknown[])[0]).toMatchObject({ ok: false });
  });

  it("delete racing reservations: the pool is never deleted while one of them holds units", async () => {
    const id = await created({ capacity: 100 });
    const results = await Promise.all([remove(id), ...Array.from({ length: 8 }, () => reserve(id, 1))]);
    const [deleted, ...reserves] = results;
    const held = reserves.filter((r) => r.status === 200);
    if (deleted!.status === 200) {
      expect(held).toHaveLength(0);
      for (const r of reserves) expect([404, 409]).toContain(r.status);
    } else {
      expectError(deleted!, 409, "pool_busy");
      expect(held.length).toBeGreaterThan(0);
      expect((await get(id)).body.live.active_reservations).toBe(held.length);
    }
  });

  it("a pool made by the test helpers (no settings row) reads as static with the default low water", async () => {
    const pool = await makePool({ capacity: 12 });
    expect((await get(pool.id)).body.pool).toMatchObject({ sizing: "static", min_capacity: null, max_capacity: null, low_water_percent: 10, capacity: 12 });
    expect((await patch(pool.id, { low_water_percent: 20 })).body.pool).toMatchObject({ low_water_percent: 20, version: 2 });
  });
});
