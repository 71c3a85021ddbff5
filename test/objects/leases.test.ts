import { runDurableObjectAlarm } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { flushDelay } from "../../src/domain/flush";
import { grantFor, newMeter, observe, rateOf, sliceWant, TOKEN_LEASE } from "../../src/domain/leases";
import type { PoolConfig } from "../../src/domain/types";
import type { LeaseAnswer, LeaseExchange, LeaseGrant } from "../../src/objects/pool/types";
import { listUsageEvents } from "../../src/storage/usage";
import { ADMIN, call, consume, eventually, expectError, makePool, sleep } from "../support/helpers";

const stubOf = (pool: string) => env.POOL.get(env.POOL.idFromName(pool));

describe("lease arithmetic (pure)", () => {
  it("a request gets at most its share of what is left (others, itself and one more), at least its need when there, never above want", () => {
    expect(grantFor(1000, 0, 5000)).toBe(500);
    expect(grantFor(1000, 1, 5000)).toBe(333);
    expect(grantFor(1000, 3, 100)).toBe(100);
    expect(grantFor(1000, 3, 5000)).toBe(200);
    expect(grantFor(1, 0, 10)).toBe(0);
    expect(grantFor(1, 0, 10, 1)).toBe(1);
    expect(grantFor(5, 9, 10, 4)).toBe(4);
    // A need that is not there is no floor (the pool answers such an exchange with nothing).
    expect(grantFor(3, 0, 10, 4)).toBe(1);
    expect(grantFor(0, 0, 10, 1)).toBe(0);
    expect(grantFor(1000, 0, 0)).toBe(0);
    expect(grantFor(10.7, 0, 100, 10)).toBe(10);
  });

  it("a slice follows the holder's rate over the window, at least the need, at most the cap", () => {
    expect(sliceWant(1000, 500, 1, 1e9)).toBe(500);
    expect(sliceWant(0, 500, 3, 1e9)).toBe(3);
    expect(sliceWant(1e6, 500, 1, 10_000)).toBe(10_000);
    expect(sliceWant(7, 500, 0, 100)).toBe(4);
  });

  it("a quiet outbox waits to gather a batch (up to the max), a busy one is delivered at the base delay", () => {
    expect(flushDelay(null, 1000, 10_000)).toBe(1000);
    expect(flushDelay(0, 1000, 10_000)).toBe(1000);
    expect(flushDelay(1000, 1000, 10_000)).toBe(1000);
    expect(flushDelay(100, 1000, 10_000)).toBe(2000);
    expect(flushDelay(5, 1000, 10_000)).toBe(10_000);
    expect(flushDelay(5, 1000, 500)).toBe(1000);
  });

  it("the rate meter weighs the last full second by how much of it the window still covers", () => {
    const m = newMeter(10_000);
    for (let i = 0; i < 40; i++) observe(m, 10_000 + i * 10);
    expect(rateOf(m, 10_999)).toBe(40);
    expect(rateOf(m, 11_250)).toBeCloseTo(30, 6);
    observe(m, 11_500, 10);
    expect(rateOf(m, 11_500)).toBeCloseTo(30, 6);
    expect(rateOf(m, 13_000)).toBe(0);
  });
});

/** A lease holder as an isolate would be one, driving the pool object's lease protocol directly. */
class Holder {
  units = 0;
  granted = 0;
  refused = 0;
  private report = 0;
  private grants: LeaseGrant[] = [];
  readonly answers: LeaseAnswer[] = [];

  constructor(readonly id: string, private readonly pool: PoolConfig, private readonly want: number) {}

  /** One consume of `amount`: from the slice, else after handing it back and asking for at least the amount. */
  async consume(amount = 1): Promise<boolean> {
    if (this.units < amount) {
      await this.exchange({ returned: this.units, need: amount, want: Math.max(amount, this.want) });
      if (this.units < amount) {
        this.refused += 1;
        return false;
      }
    }
    this.units -= amount;
    this.granted += amount;
    this.grants.push([`evt_${crypto.randomUUID().replaceAll("-", "")}`, "acme", "enterprise", "internal", amount, null, amount * this.pool.costPerUnitNano, Date.now()]);
    return true;
  }

  async exchange(o: { returned?: number; need?: number; want?: number; close?: boolean } = {}): Promise<LeaseAnswer> {
    const returned = o.returned ?? 0;
    this.units -= returned;
    const x: LeaseExchange = {
      holder: this.id, report: ++this.report, grants: this.grants.splice(0), returned, want: o.want ?? this.want, need: o.need ?? 0, close: o.close ?? false,
    };
    const answer = (await stubOf(this.pool.id).lease(this.pool, x))!;
    if (o.close) this.units = 0;
    this.units += answer.added;
    this.answers.push(answer);
    return answer;
  }

  close(): Promise<LeaseAnswer> {
    return this.exchange({ returned: this.units, want: 0, close: true });
  }
}

const levelOf = async (pool: PoolConfig) => (await stubOf(pool.id).availability(pool, null)) as { level: number; leased: number; available: number };

describe("token leases: the pool object lends slices to several holders", () => {
  it("10,000 consumes from 5 holders against capacity 700: exactly 700 granted, the ledger holds exactly 700, nothing left out", async () => {
    const pool = await makePool({ capacity: 700, refillPerSec: 0, costPerUnitNano: 3 });
    const holders = Array.from({ length: 5 }, (_, i) => new Holder(`iso-${i}`, pool, 40 + i * 30));
    // Each holder takes its 2,000 consumes in turns with the others (its calls interleave with theirs).
    await Promise.all(holders.map(async (h) => {
      for (let i = 0; i < 2_000; i++) {
        await h.consume();
        if (i % 50 === 0) await sleep(0);
      }
      await h.close();
    }));
    const granted = holders.reduce((n, h) => n + h.granted, 0);
    expect(granted).toBe(700);
    expect(holders.reduce((n, h) => n + h.refused, 0)).toBe(10_000 - 700);
    expect(holders.every((h) => h.granted > 0)).toBe(true);
    expect(await levelOf(pool)).toMatchObject({ level: 0, leased: 0 });
    await stubOf(pool.id).flush();
    const events = await listUsageEvents(env.DB, { poolId: pool.id });
    expect(events).toHaveLength(700);
    expect(events.reduce((n, e) => n + e.units, 0)).toBe(700);
    expect(events.reduce((n, e) => n + e.cost_nano, 0)).toBe(2100);
  }, 60_000);

  it("an exchange seen before is answered again and applied once", async () => {
    const pool = await makePool({ capacity: 100 });
    const stub = stubOf(pool.id);
    const grant: LeaseGrant = ["evt_" + "a".repeat(32), "acme", "enterprise", "internal", 5, null, 5000, Date.now()];
    const first = (await stub.lease(pool, { holder: "iso-r", report: 1, grants: [], returned: 0, want: 20, need: 0, close: false }))!;
    expect(first).toMatchObject({ added: 20, level: 80, stop: false, ttlMs: TOKEN_LEASE.TTL_MS });
    const x: LeaseExchange = { holder: "iso-r", report: 2, grants: [grant], returned: 0, want: 10, need: 0, close: false };
    const second = (await stub.lease(pool.version, x))!;
    expect(await stub.lease(pool.version, x)).toEqual(second);
    expect((await levelOf(pool)).leased).toBe(15 + second.added);
    await stub.lease(pool.version, { ...x, report: 3, grants: [], returned: 15 + second.added, want: 0, close: true });
    expect(await levelOf(pool)).toMatchObject({ level: 95, leased: 0 });
    await stub.flush();
    expect((await listUsageEvents(env.DB, { poolId: pool.id })).map((e) => e.units)).toEqual([5]);
  });

  it("a holder that vanishes: its slice is out of the bucket until the lease's TTL and grace pass, then back; a late report is still recorded and charged", async () => {
    const pool = await makePool({ capacity: 100, refillPerSec: 0 });
    const h = new Holder("iso-gone", pool, 40);
    await h.exchange();
    expect(h.units).toBe(40);
    for (let i = 0; i < 10; i++) await h.consume();
    await h.exchange({ want: 0 });
    // Its 10 grants are reported: 30 still out on its lease, not in the bucket.
    expect(await levelOf(pool)).toMatchObject({ level: 60, leased: 30, available: 60 });
    // It grants 5 more, then is never heard of again.
    for (let i = 0; i < 5; i++) await h.consume();
    await sleep(TOKEN_LEASE.TTL_MS - 500);
    expect(await levelOf(pool)).toMatchObject({ level: 60, leased: 30 });
    await sleep(500 + TOKEN_LEASE.GRACE_MS + 100);
    await runDurableObjectAlarm(stubOf(pool.id));
    // The 30 it held come back (the 5 it never reported included: the bucket cannot know of them).
    expect(await levelOf(pool)).toMatchObject({ level: 90, leased: 0 });
    // Its report arrives after all: recorded, and the units taken from the bucket again.
    await h.exchange({ want: 0 });
    expect(await levelOf(pool)).toMatchObject({ level: 85, leased: 0 });
    await stubOf(pool.id).flush();
    expect((await listUsageEvents(env.DB, { poolId: pool.id })).length).toBe(15);
  }, 20_000);

  it("a slow holder and a fast one both get served: however often the fast one asks, it never takes the last units", async () => {
    const pool = await makePool({ capacity: 100, refillPerSec: 100 });
    const fast = new Holder("iso-fast", pool, 100_000);
    const slow = new Holder("iso-slow", pool, 5);
    let slowServed = 0;
    for (let round = 0; round < 30; round++) {
      // The fast holder asks ten times for as much as it can get, and spends all of it at once.
      for (let i = 0; i < 10; i++) {
        await fast.exchange();
        while (fast.units > 0) await fast.consume();
      }
      // The slow one needs one unit now and then.
      if (await slow.consume()) slowServed += 1;
      await sleep(20);
    }
    await fast.close();
    await slow.close();
    expect(slowServed).toBe(30);
    expect(fast.granted).toBeGreaterThan(100);
    // The first answer to the fast holder, alone then, took half of what was there; none took more.
    expect(fast.answers[0]!.added).toBe(50);
    expect(Math.max(...fast.answers.map((a) => a.added))).toBe(50);
  });

  it("refill while leases are out: total grants never pass capacity plus the refill over the period", async () => {
    const pool = await makePool({ capacity: 50, refillPerSec: 200 });
    const holders = Array.from({ length: 3 }, (_, i) => new Holder(`iso-r${i}`, pool, 20));
    const started = Date.now();
    await Promise.all(holders.map(async (h) => {
      while (Date.now() - started < 1_500) {
        await h.consume();
        await sleep(1);
      }
      await h.close();
    }));
    const elapsed = Date.now() - started;
    const granted = holders.reduce((n, h) => n + h.granted, 0);
    expect(granted).toBeLessThanOrEqual(50 + Math.ceil((200 * elapsed) / 1000));
    // The refill was granted too (the bucket did not sit idle behind the leases).
    expect(granted).toBeGreaterThan(50 + 100);
    expect((await levelOf(pool)).leased).toBe(0);
    await stubOf(pool.id).flush();
    expect(await listUsageEvents(env.DB, { poolId: pool.id })).toHaveLength(granted);
  }, 20_000);

  it("a pool whose leases are turned off lends nothing more and asks holders to give back what they hold", async () => {
    const pool = await makePool({ capacity: 100 });
    const h = new Holder("iso-off", pool, 30);
    await h.exchange();
    expect(h.units).toBe(30);
    const off = { ...pool, leases: "off" as const, version: pool.version + 1 };
    const answer = (await stubOf(pool.id).lease(off, { holder: "iso-off", report: 99, grants: [], returned: 0, want: 30, need: 0, close: false }))!;
    expect(answer).toMatchObject({ added: 0, stop: true });
    // What it holds stays out until it says so: it may be granting from it right now.
    expect((await stubOf(pool.id).availability(off, null)).leased).toBe(30);
    await stubOf(pool.id).lease(off, { holder: "iso-off", report: 100, grants: [], returned: 30, want: 0, need: 0, close: true });
    expect(await stubOf(pool.id).availability(off, null)).toMatchObject({ level: 100, leased: 0 });
  });
});

describe("token leases in the isolate: POST /internal/consume on a hot pool", () => {
  it("400 consumes at once against capacity 250: exactly 250 granted (most from this isolate's lease), 150 rate_limited, the ledger holds 250", async () => {
    const pool = await makePool({ capacity: 250, refillPerSec: 0 });
    const results = await Promise.all(Array.from({ length: 400 }, () => consume(pool.id, 1)));
    expect(results.filter((r) => r.status === 200)).toHaveLength(250);
    const refused = results.filter((r) => r.status !== 200);
    expect(refused).toHaveLength(150);
    for (const r of refused) expectError(r, 429, "rate_limited");
    expect(new Set(results.filter((r) => r.status === 200).map((r) => r.body.event_id)).size).toBe(250);
    // Every grant reaches the ledger once: the lease's reports go through the pool's outbox.
    await eventually(async () => {
      await stubOf(pool.id).flush();
      return (await listUsageEvents(env.DB, { poolId: pool.id })).length === 250;
    }, 10_000, "250 ledger rows");
    const metrics = await call("GET", "/metrics", { token: ADMIN });
    const leased = new RegExp(`rm_pool_consumes_total\\{pool="${pool.id}",path="lease",outcome="granted"\\} (\\d+)`).exec(metrics.body)?.[1];
    expect(Number(leased)).toBeGreaterThan(100);
    // Idle, the isolate hands its (empty) lease back: nothing stays out.
    await eventually(async () => (await levelOf(pool)).leased === 0 && (await levelOf(pool)).level === 0, 10_000, "the lease closed");
  });

  it("availability and check say what is leased out; a consume with an idempotency key goes to the object and replays", async () => {
    const pool = await makePool({ capacity: 1000, refillPerSec: 0 });
    await Promise.all(Array.from({ length: 50 }, () => consume(pool.id, 1)));
    const a = await call("GET", "/api/resources/availability", { token: ADMIN });
    const row = a.body.pools.find((p: { pool: string }) => p.pool === pool.id);
    // Lent to this isolate (less the grants it has already reported), not in the bucket.
    expect(row.leased).toBeGreaterThan(0);
    expect(row.available + row.leased).toBeGreaterThanOrEqual(950);
    expect(row.available + row.leased).toBeLessThanOrEqual(1000);
    const check = await call("POST", "/api/resources/check", { token: ADMIN, json: { client_id: "acme", pool: pool.id, amount: 1 } });
    expect(check.body.results[0]).toMatchObject({ allowed: true, available: expect.any(Number), leased: expect.any(Number) });
    const once = await consume(pool.id, 7, { idempotency_key: "lease-key-1" });
    const again = await consume(pool.id, 7, { idempotency_key: "lease-key-1" });
    expect(again.body.event_id).toBe(once.body.event_id);
    await eventually(async () => (await levelOf(pool)).leased === 0, 10_000, "the lease closed");
    expect((await levelOf(pool)).level).toBe(943);
  });

  it("PATCH leases: off: consumes are decided by the pool's object only", async () => {
    const id = `lease-off-${crypto.randomUUID().slice(0, 8)}`;
    const created = await call("POST", "/admin/pools", {
      token: ADMIN, json: { id, name: "no leases", unit: "units", capacity: 500, refill_per_sec: 0, cost_per_unit_nano: 1, leases: "off" },
    });
    expect(created.status).toBe(201);
    expect(created.body.pool.leases).toBe("off");
    expectError(await call("PATCH", `/admin/pools/${id}`, { token: ADMIN, json: { leases: "sometimes" } }), 400, "validation_failed");
    const results = await Promise.all(Array.from({ length: 60 }, () => consume(id, 1)));
    expect(results.every((r) => r.status === 200)).toBe(true);
    const metrics = (await call("GET", "/metrics", { token: ADMIN })).body as string;
    expect(metrics).toContain(`rm_pool_consumes_total{pool="${id}",path="object",outcome="granted"} 60`);
    expect(metrics).toContain(`rm_pool_consumes_total{pool="${id}",path="lease",outcome="granted"} 0`);
    expect((await call("GET", `/admin/pools/${id}`, { token: ADMIN })).body.live).toMatchObject({ leased_units: 0, lease_holders: 0, level: 440 });
  });
});
