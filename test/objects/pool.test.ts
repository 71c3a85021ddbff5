import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { PoolObject } from "../../src/objects/pool";
import { migrate } from "../../src/objects/pool/schema";
import type { PoolConfig } from "../../src/domain/types";
import { clearConfigCache } from "../../src/storage/config";
import { listUsageEvents } from "../../src/storage/usage";
import { upsertPool } from "../../src/storage/pools";
import { call, consume, expectError, INTERNAL, KEYS, makePool, sleep } from "../support/helpers";

const stubOf = (pool: string) => env.POOL.get(env.POOL.idFromName(pool));

function reserve(pool: string, amount: number, extra: Record<string, unknown> = {}, clientId = "acme") {
  return call("POST", "/internal/reserve", { token: INTERNAL, json: { client_id: clientId, pool, amount, ...extra } });
}
function release(pool: string, reservationId: string, actualUsed?: number, clientId = "acme") {
  return call("POST", "/internal/release", {
    token: INTERNAL,
    json: { client_id: clientId, pool, reservation_id: reservationId, ...(actualUsed === undefined ? {} : { actual_used: actualUsed }) },
  });
}
async function level(pool: string): Promise<number> {
  const r = await call("POST", "/api/resources/check", { token: KEYS.acme, json: { pool, amount: 1 } });
  return r.body.results[0].available;
}

describe("token bucket at its boundary", () => {
  it("capacity N, N+5 consumes: exactly N granted, 5 denied with 429 and Retry-After; one refill interval later exactly the refilled amount", async () => {
    const pool = await makePool({ capacity: 20, refillPerSec: 1 });
    const results = [];
    for (let i = 0; i < 25; i++) results.push(await consume(pool.id, 1));
    expect(results.filter((r) => r.status === 200)).toHaveLength(20);
    const denied = results.filter((r) => r.status === 429);
    expect(denied).toHaveLength(5);
    for (const d of denied) {
      expectError(d, 429, "rate_limited");
      expect(Number(d.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
      expect(d.body.error.details).toMatchObject({ pool: pool.id, requested: 1, available: 0 });
      expect(d.body.error.details.retry_after_ms).toBeGreaterThan(0);
      expect(d.body.error.details.retry_after_ms).toBeLessThanOrEqual(1000);
    }
    // wait what the pool said, then exactly one unit (1/s) is there
    await sleep(denied.at(-1)!.body.error.details.retry_after_ms + 20);
    const after = [];
    for (let i = 0; i < 5; i++) after.push((await consume(pool.id, 1)).status);
    expect(after.filter((s) => s === 200)).toHaveLength(1);
    expect(after.filter((s) => s === 429)).toHaveLength(4);
  });

  it("a multi-unit request is all or nothing: 7 of 10 then 4 is denied without spending", async () => {
    const pool = await makePool({ capacity: 10 });
    expect((await consume(pool.id, 7)).body.remaining).toBe(3);
    const denied = await consume(pool.id, 4);
    expectError(denied, 429, "rate_limited");
    expect(denied.body.error.details.available).toBe(3);
    expect(denied.body.error.details.retry_after_ms).toBeNull(); // no refill: never
    expect(await level(pool.id)).toBe(3);
  });

  it("cost of a consume is units x the pool's price, in integer nano-dollars", async () => {
    const r = await consume("openai-gpt4", 2000);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ pool: "openai-gpt4", units: 2000, cost_nano: 60_000_000 });
    expect(r.body.event_id).toMatch(/^evt_/);
  });
});

describe("races", () => {
  it("200 concurrent reserves against capacity 50: exactly 50 granted, level never negative", async () => {
    const pool = await makePool({ capacity: 50 });
    const results = await Promise.all(Array.from({ length: 200 }, () => reserve(pool.id, 1)));
    expect(results.filter((r) => r.status === 200)).toHaveLength(50);
    expect(results.filter((r) => r.status === 429)).toHaveLength(150);
    const ids = new Set(results.filter((r) => r.status === 200).map((r) => r.body.reservation_id));
    expect(ids.size).toBe(50);
    await runInDurableObject(stubOf(pool.id), (instance: PoolObject) => {
      const a = instance.availability(pool, null);
      expect(a.level).toBe(0);
      expect(a.reserved).toBe(50);
    });
  });

  it("concurrent mixed consumes never overspend: 100 calls of 3 units against 100 grant exactly 33", async () => {
    const pool = await makePool({ capacity: 100 });
    const results = await Promise.all(Array.from({ length: 100 }, () => consume(pool.id, 3)));
    expect(results.filter((r) => r.status === 200)).toHaveLength(33);
    expect(await level(pool.id)).toBe(1);
  });
});

describe("reservations", () => {
  it("release with actual < reserved consumes the actual and refunds the difference", async () => {
    const pool = await makePool({ capacity: 100, costPerUnitNano: 250 });
    const held = await reserve(pool.id, 40);
    expect(held.status).toBe(200);
    expect(held.body.remaining).toBe(60);
    const r = await release(pool.id, held.body.reservation_id, 15);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ consumed: 15, refunded: 25, cost_nano: 3750 });
    expect(await level(pool.id)).toBe(85);
  });

  it("release without actual_used refunds everything and records no usage", async () => {
    const pool = await makePool({ capacity: 10 });
    const held = await reserve(pool.id, 10);
    const r = await release(pool.id, held.body.reservation_id);
    expect(r.body).toMatchObject({ consumed: 0, refunded: 10, cost_nano: 0, event_id: null });
    expect(await level(pool.id)).toBe(10);
  });

  it("a reservation settles once: a second release is 409, another client's release is 404", async () => {
    const pool = await makePool({ capacity: 10 });
    const held = await reserve(pool.id, 5);
    expectError(await release(pool.id, held.body.reservation_id, 1, "globex"), 404, "reservation_not_found");
    expect((await release(pool.id, held.body.reservation_id, 1)).status).toBe(200);
    const again = await release(pool.id, held.body.reservation_id, 1);
    expectError(again, 409, "reservation_closed");
    expect(await level(pool.id)).toBe(9);
  });

  it("actual_used above the reserved amount is refused and changes nothing", async () => {
    const pool = await makePool({ capacity: 10 });
    const held = await reserve(pool.id, 5);
    expectError(await release(pool.id, held.body.reservation_id, 6), 400, "validation_failed");
    expect(await level(pool.id)).toBe(5);
    expect((await release(pool.id, held.body.reservation_id, 5)).status).toBe(200);
  });

  it("an expired reservation is released by the alarm exactly once", async () => {
    const pool = await makePool({ capacity: 10 });
    const held = await reserve(pool.id, 6, { ttl_ms: 1000 });
    expect(held.status).toBe(200);
    expect(await level(pool.id)).toBe(4);
    await sleep(1100);
    const stub = stubOf(pool.id);
    await runDurableObjectAlarm(stub);
    await runDurableObjectAlarm(stub);
    expect(await level(pool.id)).toBe(10);
    await runInDurableObject(stub, (_i, state) => {
      const rows = state.storage.sql.exec("SELECT status FROM reservations").toArray();
      expect(rows).toEqual([{ status: "expired" }]);
    });
    expectError(await release(pool.id, held.body.reservation_id, 1), 409, "reservation_closed");
    expect(await level(pool.id)).toBe(10);
  });
});

describe("idempotency", () => {
  it("the same key twice spends once and answers the same", async () => {
    const pool = await makePool({ capacity: 10 });
    const a = await consume(pool.id, 4, { idempotency_key: "k-1" });
    const b = await consume(pool.id, 4, { idempotency_key: "k-1" });
    expect(a.status).toBe(200);
    expect(b.status).toBe(200);
    expect(b.body.event_id).toBe(a.body.event_id);
    expect(b.body.remaining).toBe(a.body.remaining);
    expect(await level(pool.id)).toBe(6);
  });

  it("the Idempotency-Key header works as well, for reserve", async () => {
    const pool = await makePool({ capacity: 10 });
    const send = () => call("POST", "/internal/reserve", {
      token: INTERNAL, headers: { "idempotency-key": "r-1" }, json: { client_id: "acme", pool: pool.id, amount: 3 },
    });
    const [a, b] = await Promise.all([send(), send()]);
    expect(b.body.reservation_id).toBe(a.body.reservation_id);
    expect(await level(pool.id)).toBe(7);
  });

  it("a key reused with other parameters is 409 and spends nothing", async () => {
    const pool = await makePool({ capacity: 10 });
    await consume(pool.id, 4, { idempotency_key: "k-2" });
    expectError(await consume(pool.id, 5, { idempotency_key: "k-2" }), 409, "idempotency_conflict");
    expect(await level(pool.id)).toBe(6);
  });

  it("keys are per client: the same key from two clients spends twice", async () => {
    const pool = await makePool({ capacity: 10 });
    await consume(pool.id, 1, { idempotency_key: "shared-key" }, "acme");
    await consume(pool.id, 1, { idempotency_key: "shared-key" }, "globex");
    expect(await level(pool.id)).toBe(8);
  });
});

describe("usage outbox", () => {
  it("every spend reaches D1 exactly once with its cost", async () => {
    const pool = await makePool({ capacity: 1000, costPerUnitNano: 7 });
    await consume(pool.id, 1, { request_id: "req_1" });
    // Not on the hot path: the event waits in the object's outbox (the flush comes USAGE_FLUSH_DELAY_MS later).
    expect(await listUsageEvents(env.DB, { poolId: pool.id })).toHaveLength(0);
    for (let i = 2; i <= 5; i++) await consume(pool.id, i, { request_id: `req_${i}` });
    const held = await reserve(pool.id, 50);
    await release(pool.id, held.body.reservation_id, 20);
    // The alarm may have delivered some already on a slow machine; together they deliver each event once.
    await stubOf(pool.id).flush();
    await runDurableObjectAlarm(stubOf(pool.id));
    expect(await stubOf(pool.id).flush()).toBe(0);
    const rows = await listUsageEvents(env.DB, { poolId: pool.id });
    expect(rows).toHaveLength(6);
    expect(rows.reduce((s, r) => s + r.units, 0)).toBe(35);
    expect(rows.reduce((s, r) => s + r.cost_nano, 0)).toBe(245);
    expect(rows.map((r) => r.kind).sort()).toEqual(["consume", "consume", "consume", "consume", "consume", "reservation"]);
  });

  it("when D1 fails mid-flush nothing is lost and nothing is doubled, in D1 nor in the client's spend", async () => {
    const pool = await makePool({ capacity: 1000, costPerUnitNano: 3 });
    const client = env.CLIENT.get(env.CLIENT.idFromName("acme"));
    // What the client's object counted today against this pool (other tests spend as acme too).
    const unitsCounted = async () =>
      (await client.quotaState({ maxConcurrent: 10, cpuMillicores: null, memoryMb: null, poolDaily: {} })).use.poolToday[pool.id] ?? 0;
    for (let i = 0; i < 3; i++) await consume(pool.id, 10);
    const stub = stubOf(pool.id);
    // Fault 1: D1 refuses the write. Fault 2: D1 commits but the answer is lost, so the batch is re-sent.
    await runInDurableObject(stub, async (instance: PoolObject) => {
      const real = env.DB;
      // The outbox delivers (src/objects/pool/outbox.ts): its env is the one to fault.
      const target = (instance as unknown as { outbox: { env: Env } }).outbox;
      target.env = { ...env, DB: { prepare: real.prepare.bind(real), batch: async () => { throw new Error("D1 down"); } } as unknown as D1Database };
      expect(await instance.flush()).toBe(0);
      target.env = { ...env, DB: { prepare: real.prepare.bind(real), batch: async (s: D1PreparedStatement[]) => { await real.batch(s); throw new Error("connection reset"); } } as unknown as D1Database };
      expect(await instance.flush()).toBe(0);
      target.env = env;
    });
    expect(await listUsageEvents(env.DB, { poolId: pool.id })).toHaveLength(3); // committed by fault 2
    await consume(pool.id, 10);
    expect(await stub.flush()).toBe(4);
    const rows = await listUsageEvents(env.DB, { poolId: pool.id });
    expect(rows).toHaveLength(4);
    expect(new Set(rows.map((r) => r.event_id)).size).toBe(4);
    // The client's object was told three times about the first three events (each failed flush reported
    // them before D1 failed) and counted each once: 4 events x 10 units.
    expect(await unitsCounted()).toBe(40);
    await runInDurableObject(stub, (_i, state) => {
      expect(state.storage.sql.exec("SELECT COUNT(*) AS n FROM usage_outbox").one().n).toBe(0);
    });
  });

  it("events spent while a flush waits for D1 are delivered by the same flush, each once, in order", async () => {
    const pool = await makePool({ capacity: 1000 });
    for (let i = 1; i <= 3; i++) await consume(pool.id, i);
    const stub = stubOf(pool.id);
    await runInDurableObject(stub, async (instance: PoolObject) => {
      const real = env.DB;
      // The outbox delivers (src/objects/pool/outbox.ts): its env is the one to fault.
      const target = (instance as unknown as { outbox: { env: Env } }).outbox;
      let first = true;
      // While D1 takes the first batch, two more spends land in the outbox behind it.
      target.env = {
        ...env,
        DB: {
          prepare: real.prepare.bind(real),
          batch: async (s: D1PreparedStatement[]) => {
            if (first) {
              first = false;
              const granted = instance.spend(pool, [["acme", "enterprise", "internal", 10, null, null], ["acme", "enterprise", "internal", 20, null, null]]);
              expect(granted!.map((r) => Array.isArray(r))).toEqual([true, true]);
            }
            return real.batch(s);
          },
        } as unknown as D1Database,
      };
      expect(await instance.flush()).toBe(5);
      target.env = env;
    });
    const rows = await listUsageEvents(env.DB, { poolId: pool.id });
    expect(rows.map((r) => r.units)).toEqual([1, 2, 3, 10, 20]);
    // Event ids sort as the events happened.
    expect([...rows].sort((a, b) => (a.event_id < b.event_id ? -1 : 1)).map((r) => r.units)).toEqual([1, 2, 3, 10, 20]);
    await runInDurableObject(stub, (_i, state) => {
      expect(state.storage.sql.exec("SELECT COUNT(*) AS n FROM usage_outbox").one().n).toBe(0);
    });
  });

  it("an object made before usage_outbox keeps what its old outbox held and delivers it once", async () => {
    const pool = await makePool({ capacity: 1000 });
    await consume(pool.id, 1);
    const stub = stubOf(pool.id);
    await stub.flush();
    const events = [2, 3].map((units, i) => ({
      eventId: `evt_old${i}`, poolId: pool.id, clientId: "acme", requestId: null, via: "internal", kind: "consume", units, costNano: units * 1000, at: Date.now() + i,
    }));
    await runInDurableObject(stub, (_i: PoolObject, state) => {
      // The old shape, as objects of earlier versions have it, with two events waiting.
      state.storage.sql.exec("CREATE TABLE outbox (event_id TEXT PRIMARY KEY, payload TEXT NOT NULL, created_at INTEGER NOT NULL)");
      for (const e of events) state.storage.sql.exec("INSERT INTO outbox VALUES (?, ?, ?)", e.eventId, JSON.stringify(e), e.at);
      migrate(state.storage.sql);
      expect(state.storage.sql.exec("SELECT COUNT(*) AS n FROM sqlite_master WHERE name = 'outbox'").one().n).toBe(0);
      expect(state.storage.sql.exec("SELECT COUNT(*) AS n FROM usage_outbox").one().n).toBe(2);
    });
    expect(await stub.flush()).toBe(2);
    expect(await stub.flush()).toBe(0);
    const rows = await listUsageEvents(env.DB, { poolId: pool.id });
    expect(rows.map((r) => r.units).sort()).toEqual([1, 2, 3]);
    expect(rows.filter((r) => r.event_id.startsWith("evt_old"))).toHaveLength(2);
  });

  it("a consume writes one row: the bucket's level rides on its outbox row and survives a restart, before and after delivery", async () => {
    // Every consume decided by the object (not from an isolate's token lease), whose rows this reads.
    const pool = await makePool({ capacity: 100, leases: "off" });
    await consume(pool.id, 7);
    await consume(pool.id, 5);
    const stub = stubOf(pool.id);
    /** The level a freshly constructed object (a restart) reads from this object's storage. */
    const levelAfterRestart = () => runInDurableObject(stub, (_i: PoolObject, state) => {
      const fresh = new PoolObject(state, env) as unknown as { store: { bucket: { level: number } } };
      return fresh.store.bucket.level;
    });
    await runInDurableObject(stub, (_i: PoolObject, state) => {
      // The bucket row still holds the level of the first write (the configuration's full bucket)...
      expect(state.storage.sql.exec("SELECT level FROM bucket").one().level).toBe(100);
      // ...and each event row the level it left.
      expect(state.storage.sql.exec("SELECT level FROM usage_outbox ORDER BY seq").toArray().map((r) => r.level)).toEqual([93, 88]);
    });
    expect(await levelAfterRestart()).toBe(88);
    // A reservation writes the bucket row, which then supersedes the levels on the outbox rows.
    const r = await reserve(pool.id, 10);
    expect(r.status).toBe(200);
    expect(await levelAfterRestart()).toBe(78);
    await consume(pool.id, 3);
    expect(await levelAfterRestart()).toBe(75);
    // Delivery deletes the rows that carried the level: the bucket row is written first.
    expect(await stub.flush()).toBe(3);
    await runInDurableObject(stub, (_i: PoolObject, state) => {
      expect(state.storage.sql.exec("SELECT COUNT(*) AS n FROM usage_outbox").one().n).toBe(0);
      expect(state.storage.sql.exec("SELECT level FROM bucket").one().level).toBe(75);
    });
    expect(await levelAfterRestart()).toBe(75);
    // Sequence numbers keep growing after delivery (a restart does not reuse them).
    await consume(pool.id, 1);
    await runInDurableObject(stub, (_i: PoolObject, state) => {
      expect(state.storage.sql.exec("SELECT seq FROM usage_outbox").one().seq).toBe(4);
    });
    expect(await levelAfterRestart()).toBe(74);
    // The live object agrees (the reservation is still held: its units are out of the bucket).
    expect(await level(pool.id)).toBe(74);
  });

  it("an object made before outbox rows carried the level gets the columns and keeps its level and waiting events", async () => {
    const pool = await makePool({ capacity: 100 });
    await consume(pool.id, 1);
    await stubOf(pool.id).flush();
    const stub = stubOf(pool.id);
    const level = await runInDurableObject(stub, (_i: PoolObject, state) => {
      const sql = state.storage.sql;
      // The earlier shape: no level on outbox rows, no outbox_seq on the bucket row; one event waiting.
      sql.exec("DROP TABLE usage_outbox");
      sql.exec("CREATE TABLE usage_outbox (seq INTEGER PRIMARY KEY, payload TEXT NOT NULL)");
      sql.exec("ALTER TABLE bucket DROP COLUMN outbox_seq");
      sql.exec("UPDATE bucket SET level = 60");
      const e = { eventId: "evt_oldshape", poolId: pool.id, clientId: "acme", requestId: null, via: "internal", kind: "consume", units: 2, costNano: 2000, at: Date.now() };
      sql.exec("INSERT INTO usage_outbox (payload) VALUES (?)", JSON.stringify(e));
      const fresh = (new PoolObject(state, env) as unknown as { store: { bucket: { level: number }; lastSeq: number } }).store;
      expect(sql.exec("SELECT COUNT(*) AS n FROM pragma_table_info('usage_outbox') WHERE name IN ('level', 'updated_at')").one().n).toBe(2);
      expect(sql.exec("SELECT outbox_seq FROM bucket").one().outbox_seq).toBe(0);
      expect(fresh.lastSeq).toBe(1);
      return fresh.bucket.level;
    });
    expect(level).toBe(60);
  });

  it("the alarm flushes on its own after the flush delay, with nobody calling", async () => {
    const pool = await makePool({ capacity: 1000 });
    await consume(pool.id, 5);
    let rows = await listUsageEvents(env.DB, { poolId: pool.id });
    for (let waited = 0; rows.length === 0 && waited < 5000; waited += 100) {
      await sleep(100);
      rows = await listUsageEvents(env.DB, { poolId: pool.id });
    }
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ units: 5, client_id: "acme", via: "internal" });
  });
});

describe("configuration", () => {
  it("a config change in D1 reaches the object: capacity and price", async () => {
    const pool = await makePool({ capacity: 10, costPerUnitNano: 1 });
    expect((await consume(pool.id, 2)).body.cost_nano).toBe(2);
    await upsertPool(env.DB, { ...pool, capacity: 5, costPerUnitNano: 100 });
    clearConfigCache();
    const r = await consume(pool.id, 2);
    expect(r.body.cost_nano).toBe(200);
    expect(r.body.remaining).toBe(3); // level 8 clamped to the new capacity 5, minus 2
    expectError(await consume(pool.id, 6), 400, "amount_exceeds_capacity");
  });

  it("a draining pool takes no new spending", async () => {
    const pool = await makePool({ capacity: 10 });
    await upsertPool(env.DB, { ...pool, status: "draining" });
    clearConfigCache();
    expectError(await consume(pool.id, 1), 409, "pool_inactive");
  });
});

describe("spend: consume as the hot path calls it, with the configuration's version in place of the configuration", () => {
  const acme = ["acme", "enterprise", "internal"] as const;
  /** One consume in a call of its own: its answer, or null when the object asks for the configuration. */
  const one = async (stub: ReturnType<typeof stubOf>, config: PoolConfig | number, amount: number, requestId: string | null = null, key: string | null = null) => {
    const answers = await stub.spend(config, [[...acme, amount, requestId, key]]);
    if (answers === null) return null;
    expect(answers).toHaveLength(1);
    return answers[0];
  };

  it("an object without that version answers null and changes nothing; handed the configuration, it spends and then takes the version alone", async () => {
    const pool = await makePool({ capacity: 10, costPerUnitNano: 7 });
    const stub = stubOf(pool.id);
    expect(await one(stub, pool.version, 3)).toBeNull();
    const first = await one(stub, pool, 3);
    // The event's outbox seq and source ride along: a client's object counts delivered spend by them.
    const source = expect.stringMatching(new RegExp(`^${pool.id}:[0-9a-f-]{36}$`));
    expect(first).toEqual([expect.stringMatching(/^evt_/), 21, 7, 1, source]);
    expect(await one(stub, pool.version, 4)).toEqual([expect.stringMatching(/^evt_/), 28, 3, 2, source]);
    // An older version than the one held is answered with the one held; a newer one is asked for.
    expect(await one(stub, pool.version - 1, 1)).toEqual([expect.any(String), 7, 2, 3, source]);
    expect(await one(stub, pool.version + 1, 1)).toBeNull();
    expect(await level(pool.id)).toBe(2);
    await stub.flush();
    const events = await listUsageEvents(env.DB, { poolId: pool.id });
    expect(events.map((e) => e.units).sort()).toEqual([1, 3, 4]);
  });

  it("a denial is the same failure consume answers; an idempotency key replays the same tuple and spends once", async () => {
    const pool = await makePool({ capacity: 5 });
    const stub = stubOf(pool.id);
    expect(await one(stub, pool, 6)).toMatchObject({ ok: false, error: { code: "amount_exceeds_capacity" } });
    const once = (await one(stub, pool.version, 2, "req-1", "key-1")) as unknown as unknown[];
    // The replay is the same answer, with seq 0: it wrote no event (nothing new to count).
    expect(once[3]).toBe(1);
    expect(await one(stub, pool.version, 2, "req-1", "key-1")).toEqual([once[0], once[1], once[2], 0, once[4]]);
    expect(await one(stub, pool.version, 2, "req-2", "key-1")).toMatchObject({ ok: false, error: { code: "idempotency_conflict" } });
    expect(await one(stub, pool.version, 4)).toMatchObject({ ok: false, error: { code: "rate_limited" } });
    expect(await level(pool.id)).toBe(3);
  });

  it("consumeAt hands the configuration again to an object that no longer holds it, and spends exactly once", async () => {
    const pool = await makePool({ capacity: 100 });
    expect((await consume(pool.id, 5)).status).toBe(200); // this isolate has handed version 1
    await runInDurableObject(stubOf(pool.id), async (instance: PoolObject) => {
      // As an object whose storage started over would be (its level starts full again).
      (instance as unknown as { store: { config: PoolConfig | null } }).store.config = null;
    });
    const r = await consume(pool.id, 5);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ pool: pool.id, units: 5, cost_nano: 5000, remaining: 95 });
    await stubOf(pool.id).flush();
    expect((await listUsageEvents(env.DB, { poolId: pool.id })).map((e) => e.units)).toEqual([5, 5]);
  });
});

describe("sharing", () => {
  it("a dedicated pool is refused to other clients with 403 and serves its owner", async () => {
    const pool = await makePool({ capacity: 10, sharing: { mode: "dedicated", clientId: "globex" } });
    expectError(await consume(pool.id, 1, {}, "acme"), 403, "pool_forbidden");
    expectError(await reserve(pool.id, 1, {}, "acme"), 403, "pool_forbidden");
    expect((await consume(pool.id, 1, {}, "globex")).status).toBe(200);
    const check = await call("POST", "/api/resources/check", { token: KEYS.acme, json: { pool: pool.id, amount: 1 } });
    expectError(check, 403, "pool_forbidden");
    const avail = await call("GET", "/api/resources/availability", { token: KEYS.acme });
    expect(avail.body.pools.map((p: any) => p.pool)).not.toContain(pool.id);
    const own = await call("GET", "/api/resources/availability", { token: KEYS.globex });
    expect(own.body.pools.find((p: any) => p.pool === pool.id).available).toBe(9);
  });

  it("a reserved pool keeps its enterprise share from other tiers", async () => {
    const pool = await makePool({ capacity: 100, sharing: { mode: "reserved", shares: [{ tier: "enterprise", fraction: 0.4 }] } });
    // hooli (basic) may take only the 60 not kept for enterprise
    expectError(await consume(pool.id, 61, {}, "hooli"), 400, "amount_exceeds_capacity");
    expect((await consume(pool.id, 60, {}, "hooli")).status).toBe(200);
    expectError(await consume(pool.id, 1, {}, "hooli"), 429, "rate_limited");
    // acme (enterprise) still gets the 40 kept for it
    expect((await consume(pool.id, 40, {}, "acme")).status).toBe(200);
  });
});
