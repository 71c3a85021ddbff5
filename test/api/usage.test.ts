import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { DAY_MS, dayKey, monthStart } from "../../src/domain/calendar";
import { sha256Hex } from "../../src/http/auth";
import type { PoolObject } from "../../src/objects/pool";
import { clearConfigCache } from "../../src/storage/config";
import { insertUsageEvents, type UsageEvent } from "../../src/storage/usage";
import { ADMIN, call, consume, documentedResponse, eventually, expectError, INTERNAL, KEYS, makePool, mulberry32 } from "../support/helpers";

const stubOf = (pool: string) => env.POOL.get(env.POOL.idFromName(pool));

let cseq = 0;
/** A fresh client with its own API key, so that no other test's usage is mixed into its history. */
async function makeClient(scopes = ["resources:read", "execute", "usage:read"], tier = "standard"): Promise<{ id: string; key: string }> {
  cseq += 1;
  const id = `c-${crypto.randomUUID().slice(0, 8)}-${cseq}`;
  const key = `rmk_test_${crypto.randomUUID().replace(/-/g, "")}`;
  await env.DB.batch([
    env.DB.prepare(
      `INSERT INTO clients (id, name, email, tier, monthly_budget_nano, status, created_at, updated_at)
       VALUES (?1, ?1, 'ops@example.com', ?2, NULL, 'active', 0, 0)`,
    ).bind(id, tier),
    env.DB.prepare(`INSERT INTO api_keys (id, client_id, key_hash, prefix, scopes, created_at) VALUES (?1, ?2, ?3, 'rmk_test', ?4, 0)`)
      .bind(`key_${id}`, id, await sha256Hex(key), JSON.stringify(scopes)),
  ]);
  clearConfigCache();
  return { id, key };
}

let eseq = 0;
function event(clientId: string, poolId: string, at: number, units: number, costPerUnitNano: number): UsageEvent {
  eseq += 1;
  return { eventId: `evt_t${eseq}_${crypto.randomUUID().slice(0, 8)}`, poolId, clientId, requestId: null, via: "internal", kind: "consume", units, costNano: units * costPerUnitNano, at };
}

/** Ledger and rollups of some clients, grouped by client, pool and day; sums as exact decimal strings. */
async function ledgerAndRollups(clients: string[]) {
  const list = JSON.stringify(clients);
  const ledger = await env.DB.prepare(
    `SELECT client_id, pool_id, strftime('%Y-%m-%d', at / 1000, 'unixepoch') AS day,
            CAST(SUM(units) AS TEXT) AS units, CAST(SUM(cost_nano) AS TEXT) AS cost_nano, COUNT(*) AS events
     FROM usage_events WHERE client_id IN (SELECT value FROM json_each(?1))
     GROUP BY client_id, pool_id, day ORDER BY client_id, pool_id, day`,
  ).bind(list).all();
  const rollups = await env.DB.prepare(
    `SELECT client_id, pool_id, day, CAST(units AS TEXT) AS units, CAST(cost_nano AS TEXT) AS cost_nano, events
     FROM usage_daily WHERE client_id IN (SELECT value FROM json_each(?1)) ORDER BY client_id, pool_id, day`,
  ).bind(list).all();
  return { ledger: ledger.results, rollups: rollups.results };
}

async function rowCounts(): Promise<{ ledger: number; rollups: number }> {
  const row = await env.DB.prepare("SELECT (SELECT COUNT(*) FROM usage_events) AS ledger, (SELECT COUNT(*) FROM usage_daily) AS rollups")
    .first<{ ledger: number; rollups: number }>();
  return row!;
}

function history(clientId: string, query: Record<string, string | number> = {}, token: string = ADMIN) {
  const qs = new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)])).toString();
  return call("GET", `/api/usage/${clientId}${qs ? `?${qs}` : ""}`, { token });
}

describe("ledger and rollups are written together", () => {
  it("a redelivered batch, a batch mixing new and delivered events, and a repeat inside one batch each count once", async () => {
    const { id } = await makeClient();
    const at = Date.UTC(2026, 10, 23, 12);
    const [e1, e2, e3, e4] = [event(id, "p-a", at, 10, 7), event(id, "p-a", at + 1, 20, 7), event(id, "p-a", at + 2, 30, 7), event(id, "p-a", at + 3, 40, 7)];
    const rollup = async () => (await ledgerAndRollups([id])).rollups;

    await insertUsageEvents(env.DB, [e1!, e2!]);
    expect(await rollup()).toEqual([{ client_id: id, pool_id: "p-a", day: "2026-11-23", units: "30", cost_nano: "210", events: 2 }]);
    await insertUsageEvents(env.DB, [e1!, e2!]);
    expect(await rollup()).toEqual([{ client_id: id, pool_id: "p-a", day: "2026-11-23", units: "30", cost_nano: "210", events: 2 }]);
    await insertUsageEvents(env.DB, [e2!, e3!]);
    expect(await rollup()).toEqual([{ client_id: id, pool_id: "p-a", day: "2026-11-23", units: "60", cost_nano: "420", events: 3 }]);
    await insertUsageEvents(env.DB, [e4!, e1!, e4!]);
    expect(await rollup()).toEqual([{ client_id: id, pool_id: "p-a", day: "2026-11-23", units: "100", cost_nano: "700", events: 4 }]);
    const { ledger } = await ledgerAndRollups([id]);
    expect(ledger).toEqual(await rollup());
  });

  it("more events than one D1 batch holds, delivered twice, count once", async () => {
    const { id } = await makeClient();
    const events = Array.from({ length: 173 }, (_, i) => event(id, i % 2 ? "p-a" : "p-b", Date.UTC(2026, 10, 1 + (i % 3), 5), 1 + i, 3));
    await insertUsageEvents(env.DB, events);
    await insertUsageEvents(env.DB, events.slice(40, 140));
    const { ledger, rollups } = await ledgerAndRollups([id]);
    expect(ledger).toHaveLength(6);
    expect(rollups).toEqual(ledger);
    expect(rollups.reduce((s, r) => s + (r.events as number), 0)).toBe(173);
    expect(rollups.reduce((s, r) => s + BigInt(r.cost_nano as string), 0n)).toBe(BigInt(3 * (173 * 174) / 2));
  });

  it("a batch that fails leaves neither ledger rows nor rollups: they are one transaction", async () => {
    const { id } = await makeClient();
    const good = event(id, "p-a", Date.UTC(2026, 10, 23), 5, 100);
    const bad = { ...event(id, "p-a", Date.UTC(2026, 10, 23), 1, 100), units: -1 }; // refused by the ledger's CHECK
    await expect(insertUsageEvents(env.DB, [good, bad])).rejects.toThrow();
    expect(await ledgerAndRollups([id])).toEqual({ ledger: [], rollups: [] });
    await insertUsageEvents(env.DB, [good]);
    expect((await ledgerAndRollups([id])).rollups).toMatchObject([{ units: "5", cost_nano: "500", events: 1 }]);
  });

  it("sums stay exact: 10,000 charges of $0.10 are exactly $1,000 (a float in dollars would drift)", async () => {
    const { id } = await makeClient();
    const tenCents = 100_000_000;
    const events = Array.from({ length: 10_000 }, (_, i) => event(id, "p-a", Date.UTC(2026, 10, 23, 0, 0, 0, i), 1, tenCents));
    await insertUsageEvents(env.DB, events);
    const { rollups } = await ledgerAndRollups([id]);
    expect(rollups).toMatchObject([{ cost_nano: "1000000000000", events: 10_000 }]);
    let dollars = 0;
    for (let i = 0; i < 10_000; i++) dollars += 0.1;
    expect(dollars).not.toBe(1000); // why money is never a float here
    const r = await history(id, { from: "2026-11-23", to: "2026-11-23" });
    expect(r.body.totals.cost_nano).toBe(1_000_000_000_000);
  });
});

describe("thousands of random settlements", () => {
  it("3,000 events in random batches with redeliveries and overlaps: ledger = rollups = the expected sums, exactly", async () => {
    const seed = 20261123;
    const random = mulberry32(seed);
    const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)]!;
    const clients = await Promise.all([makeClient(), makeClient(), makeClient()]).then((cs) => cs.map((c) => c.id));
    const pools = ["r-gpt4", "r-gpt35", "r-email", "r-sms", "r-free"];
    // Prices change over time: an event carries the price of its moment.
    const prices: Record<string, number[]> = {
      "r-gpt4": [30_000, 28_000], "r-gpt35": [1_500, 1_499], "r-email": [100_000], "r-sms": [7_500_000, 7_900_001], "r-free": [0],
    };
    const start = Date.UTC(2026, 9, 25); // 25 October: the events cross two month ends and a year end
    const span = 75 * DAY_MS;
    const events: UsageEvent[] = [];
    // The expected sums, kept here on their own: BigInt, and the day from the ISO string.
    const expected = new Map<string, { units: bigint; cost: bigint; events: number }>();
    for (let i = 0; i < 3000; i++) {
      // One in ten lands on the first or last millisecond of a UTC day.
      const day = start + Math.floor(random() * 75) * DAY_MS;
      const at = random() < 0.1 ? (random() < 0.5 ? day : day + DAY_MS - 1) : start + Math.floor(random() * span);
      const [client, pool, units] = [pick(clients), pick(pools), 1 + Math.floor(random() * 100_000)];
      const price = pick(prices[pool]!);
      events.push(event(client, pool, at, units, price));
      const key = `${client}|${pool}|${new Date(at).toISOString().slice(0, 10)}`;
      const sum = expected.get(key) ?? { units: 0n, cost: 0n, events: 0 };
      expected.set(key, { units: sum.units + BigInt(units), cost: sum.cost + BigInt(units) * BigInt(price), events: sum.events + 1 });
    }

    // Deliver in random order and random batch sizes; some batches twice, some overlapping the previous one.
    const order = [...events].sort(() => random() - 0.5);
    let delivered = 0;
    let deliveries = 0;
    let previous: UsageEvent[] = [];
    for (let i = 0; i < order.length;) {
      const batch = order.slice(i, i + 1 + Math.floor(random() * 180));
      i += batch.length;
      await insertUsageEvents(env.DB, batch);
      deliveries += batch.length;
      if (random() < 0.2) {
        await insertUsageEvents(env.DB, batch);
        deliveries += batch.length;
      }
      if (random() < 0.2 && previous.length > 0) {
        const overlap = [...previous.slice(Math.floor(previous.length / 2)), ...batch.slice(0, Math.ceil(batch.length / 2))];
        await insertUsageEvents(env.DB, overlap);
        deliveries += overlap.length;
      }
      previous = batch;
      delivered += batch.length;
    }
    // A last redelivery of a random sample, repeats included.
    const sample = Array.from({ length: 400 }, () => pick(events));
    await insertUsageEvents(env.DB, sample);
    deliveries += sample.length;
    expect(delivered).toBe(3000);
    expect(deliveries).toBeGreaterThan(3400);

    const { ledger, rollups } = await ledgerAndRollups(clients);
    const keyed = (rows: Record<string, unknown>[]) =>
      Object.fromEntries(rows.map((r) => [`${r.client_id}|${r.pool_id}|${r.day}`, { units: BigInt(r.units as string), cost: BigInt(r.cost_nano as string), events: r.events }]));
    expect(keyed(rollups), `seed ${seed}`).toEqual(keyed(ledger));
    expect(keyed(rollups), `seed ${seed}`).toEqual(Object.fromEntries(expected));
    expect(rollups.length).toBe(expected.size);
    expect(rollups.reduce((s, r) => s + (r.events as number), 0)).toBe(3000);

    // And the history API, per client over the whole span, answers the same totals.
    for (const client of clients) {
      const mine = [...expected].filter(([k]) => k.startsWith(`${client}|`)).map(([, v]) => v);
      const r = await history(client, { from: dayKey(start), to: dayKey(start + span), granularity: "month" });
      expect(r.status).toBe(200);
      expect(BigInt(r.body.totals.cost_nano)).toBe(mine.reduce((s, v) => s + v.cost, 0n));
      expect(r.body.totals.events).toBe(mine.reduce((s, v) => s + v.events, 0));
      expect(r.body.periods.map((p: any) => p.period)).toEqual(["2026-10", "2026-11", "2026-12", "2027-01"]);
      expect(BigInt(r.body.periods.reduce((s: number, p: any) => s + p.cost_nano, 0))).toBe(BigInt(r.body.totals.cost_nano));
    }
  });
});

describe("end to end: consume, outbox flush, history", () => {
  it("what was consumed through /internal/consume is exactly what GET /api/usage shows, per pool and in total", async () => {
    const client = await makeClient();
    const gpt = await makePool({ capacity: 100_000, costPerUnitNano: 30_000 });
    const sms = await makePool({ capacity: 1_000, costPerUnitNano: 7_500_000 });
    const gptAmounts = [2000, 1, 777, 12_345];
    const smsAmounts = [1, 3, 2];
    for (const a of gptAmounts) expect((await consume(gpt.id, a, {}, client.id)).status).toBe(200);
    for (const a of smsAmounts) expect((await consume(sms.id, a, {}, client.id)).status).toBe(200);
    const now = Date.now();
    expect(await stubOf(gpt.id).flush()).toBe(gptAmounts.length);
    expect(await stubOf(sms.id).flush()).toBe(smsAmounts.length);

    const gptUnits = 2000 + 1 + 777 + 12_345;
    const smsUnits = 6;
    const query = { from: dayKey(now - DAY_MS), to: dayKey(now + DAY_MS), granularity: "month" };
    const r = await eventually(async () => {
      const h = await history(client.id, query, client.key);
      return h.body.totals?.events === 7 ? h : null;
    }, 5000, "usage to reach D1");
    expect(r.status).toBe(200);
    expect(r.body.client_id).toBe(client.id);
    expect(r.body.totals).toEqual({
      cost_nano: gptUnits * 30_000 + smsUnits * 7_500_000,
      events: 7,
      units_by_pool: { [gpt.id]: gptUnits, [sms.id]: smsUnits },
      cost_by_pool: { [gpt.id]: gptUnits * 30_000, [sms.id]: smsUnits * 7_500_000 },
    });
    const pools = r.body.periods.flatMap((p: any) => p.pools);
    expect(pools.filter((p: any) => p.pool === gpt.id).reduce((s: number, p: any) => s + p.units, 0)).toBe(gptUnits);
    expect(pools.filter((p: any) => p.pool === sms.id).reduce((s: number, p: any) => s + p.cost_nano, 0)).toBe(45_000_000);
    // The day view says the same.
    const days = await history(client.id, { ...query, granularity: "day" }, client.key);
    expect(days.body.totals).toEqual(r.body.totals);
    expect(days.body.periods.reduce((s: number, p: any) => s + p.cost_nano, 0)).toBe(r.body.totals.cost_nano);
  });

  it("a flush whose answer is lost is sent again, and the rollups do not double", async () => {
    const client = await makeClient();
    const pool = await makePool({ capacity: 1000, costPerUnitNano: 11 });
    for (const a of [10, 20, 30]) await consume(pool.id, a, {}, client.id);
    const stub = stubOf(pool.id);
    await runInDurableObject(stub, async (instance: PoolObject) => {
      const real = env.DB;
      // The outbox delivers (src/objects/pool/outbox.ts): its env is the one to fault.
      const target = (instance as unknown as { outbox: { env: Env } }).outbox;
      // D1 commits, then the connection drops before the answer: the outbox keeps the events and resends them.
      target.env = { ...env, DB: { prepare: real.prepare.bind(real), batch: async (s: D1PreparedStatement[]) => { await real.batch(s); throw new Error("connection reset"); } } as unknown as D1Database };
      expect(await instance.flush()).toBe(0);
      target.env = env;
    });
    await consume(pool.id, 40, {}, client.id);
    expect(await stub.flush()).toBe(4);
    const { ledger, rollups } = await ledgerAndRollups([client.id]);
    expect(rollups).toEqual(ledger);
    expect(rollups.reduce((s, r) => s + (r.events as number), 0)).toBe(4);
    expect(rollups.reduce((s, r) => s + BigInt(r.cost_nano as string), 0n)).toBe(1100n);
  });
});

describe("usage history", () => {
  // Hand-computed: pool A costs 30,000 nano per unit, pool B 100,000.
  async function seeded() {
    const client = await makeClient();
    const a = (await makePool({ costPerUnitNano: 30_000 })).id;
    const b = (await makePool({ costPerUnitNano: 100_000 })).id;
    const t = (iso: string) => Date.parse(iso);
    await insertUsageEvents(env.DB, [
      event(client.id, a, t("2026-10-31T23:59:59.999Z"), 100, 30_000),
      event(client.id, a, t("2026-11-01T00:00:00.000Z"), 200, 30_000),
      event(client.id, b, t("2026-11-01T12:00:00.000Z"), 3, 100_000),
      event(client.id, a, t("2026-11-15T08:00:00.000Z"), 50, 30_000),
      event(client.id, b, t("2026-11-15T08:00:00.000Z"), 1, 100_000),
      event(client.id, b, t("2026-11-30T23:59:59.999Z"), 2, 100_000),
      event(client.id, a, t("2026-12-01T00:00:00.000Z"), 10, 30_000),
      event(client.id, a, t("2027-01-01T00:00:00.000Z"), 1, 30_000),
      event(client.id, b, t("2028-02-29T10:00:00.000Z"), 5, 100_000),
    ]);
    return { client, a, b };
  }

  it("by day: one period per UTC day with usage, per pool, with totals", async () => {
    const { client, a, b } = await seeded();
    const r = await history(client.id, { from: "2026-10-31", to: "2026-12-01" }, client.key);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ client_id: client.id, from: "2026-10-31", to: "2026-12-01", granularity: "day", next_cursor: null });
    expect(r.body.periods).toEqual([
      { period: "2026-10-31", pools: [{ pool: a, units: 100, cost_nano: 3_000_000, events: 1 }], units: 100, cost_nano: 3_000_000, events: 1 },
      {
        period: "2026-11-01",
        pools: [{ pool: a, units: 200, cost_nano: 6_000_000, events: 1 }, { pool: b, units: 3, cost_nano: 300_000, events: 1 }].sort((x, y) => x.pool.localeCompare(y.pool)),
        units: 203, cost_nano: 6_300_000, events: 2,
      },
      {
        period: "2026-11-15",
        pools: [{ pool: a, units: 50, cost_nano: 1_500_000, events: 1 }, { pool: b, units: 1, cost_nano: 100_000, events: 1 }].sort((x, y) => x.pool.localeCompare(y.pool)),
        units: 51, cost_nano: 1_600_000, events: 2,
      },
      { period: "2026-11-30", pools: [{ pool: b, units: 2, cost_nano: 200_000, events: 1 }], units: 2, cost_nano: 200_000, events: 1 },
      { period: "2026-12-01", pools: [{ pool: a, units: 10, cost_nano: 300_000, events: 1 }], units: 10, cost_nano: 300_000, events: 1 },
    ]);
    expect(r.body.totals).toEqual({
      cost_nano: 11_400_000, events: 7, units_by_pool: { [a]: 360, [b]: 6 }, cost_by_pool: { [a]: 10_800_000, [b]: 600_000 },
    });
    expect(typeof r.body.trace_id).toBe("string");
  });

  it("by month: months sum their days; a range that cuts a month counts only its days inside", async () => {
    const { client, a, b } = await seeded();
    const whole = await history(client.id, { from: "2026-10-01", to: "2027-01-31", granularity: "month" }, client.key);
    expect(whole.body.periods.map((p: any) => [p.period, p.cost_nano, p.events])).toEqual([
      ["2026-10", 3_000_000, 1], ["2026-11", 8_100_000, 5], ["2026-12", 300_000, 1], ["2027-01", 30_000, 1],
    ]);
    expect(whole.body.periods[1].pools).toEqual([
      { pool: a, units: 250, cost_nano: 7_500_000, events: 2 }, { pool: b, units: 6, cost_nano: 600_000, events: 3 },
    ].sort((x, y) => x.pool.localeCompare(y.pool)));
    expect(whole.body.totals.cost_nano).toBe(11_430_000);

    const cut = await history(client.id, { from: "2026-11-15", to: "2026-12-31", granularity: "month" }, client.key);
    expect(cut.body.periods.map((p: any) => [p.period, p.cost_nano])).toEqual([["2026-11", 1_800_000], ["2026-12", 300_000]]);
    expect(cut.body.totals).toEqual({ cost_nano: 2_100_000, events: 4, units_by_pool: { [a]: 60, [b]: 3 }, cost_by_pool: { [a]: 1_800_000, [b]: 300_000 } });

    const leap = await history(client.id, { from: "2028-02-01", to: "2028-02-29", granularity: "month" }, client.key);
    expect(leap.body.periods).toEqual([{ period: "2028-02", pools: [{ pool: b, units: 5, cost_nano: 500_000, events: 1 }], units: 5, cost_nano: 500_000, events: 1 }]);
  });

  it("a pool filter keeps only that pool, in the periods and the totals", async () => {
    const { client, b } = await seeded();
    const r = await history(client.id, { from: "2026-10-01", to: "2026-12-31", pool: b }, client.key);
    expect(r.body.periods.map((p: any) => [p.period, p.units, p.cost_nano])).toEqual([
      ["2026-11-01", 3, 300_000], ["2026-11-15", 1, 100_000], ["2026-11-30", 2, 200_000],
    ]);
    expect(r.body.periods.every((p: any) => p.pools.length === 1 && p.pools[0].pool === b)).toBe(true);
    expect(r.body.totals).toEqual({ cost_nano: 600_000, events: 3, units_by_pool: { [b]: 6 }, cost_by_pool: { [b]: 600_000 } });
  });

  it("pagination walks every period exactly once, in order, with the same totals on every page", async () => {
    const { client } = await seeded();
    for (const [query, expected] of [
      [{ from: "2026-10-31", to: "2026-12-01", limit: 2 }, ["2026-10-31", "2026-11-01", "2026-11-15", "2026-11-30", "2026-12-01"]],
      [{ from: "2026-10-31", to: "2026-12-01", limit: 1 }, ["2026-10-31", "2026-11-01", "2026-11-15", "2026-11-30", "2026-12-01"]],
      [{ from: "2026-10-31", to: "2026-12-01", limit: 5 }, ["2026-10-31", "2026-11-01", "2026-11-15", "2026-11-30", "2026-12-01"]],
      [{ from: "2026-10-01", to: "2027-01-31", granularity: "month", limit: 3 }, ["2026-10", "2026-11", "2026-12", "2027-01"]],
    ] as [Record<string, string | number>, string[]][]) {
      const seen: string[] = [];
      const totals = new Set<string>();
      let cursor: string | null = null;
      let pages = 0;
      do {
        const r = await history(client.id, { ...query, ...(cursor ? { cursor } : {}) }, client.key);
        expect(r.status).toBe(200);
        expect(r.body.periods.length).toBeLessThanOrEqual(query.limit as number);
        seen.push(...r.body.periods.map((p: any) => p.period));
        totals.add(JSON.stringify(r.body.totals));
        cursor = r.body.next_cursor;
        pages += 1;
      } while (cursor !== null && pages < 20);
      expect(seen).toEqual(expected);
      expect(totals.size).toBe(1);
      expect(pages).toBe(Math.ceil(expected.length / (query.limit as number)));
    }
  });

  it("a range without usage answers empty periods and zero totals", async () => {
    const { client } = await seeded();
    const r = await history(client.id, { from: "2027-06-01", to: "2027-06-30" }, client.key);
    expect(r.body).toMatchObject({ periods: [], totals: { cost_nano: 0, events: 0, units_by_pool: {}, cost_by_pool: {} }, next_cursor: null });
  });

  it("without from and to: the current UTC month up to today", async () => {
    const client = await makeClient();
    const pool = await makePool({ costPerUnitNano: 9 });
    const now = Date.now();
    await insertUsageEvents(env.DB, [event(client.id, pool.id, now, 7, 9), event(client.id, pool.id, monthStart(now) - 1, 1000, 9)]);
    const r = await history(client.id, {}, client.key);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ from: dayKey(monthStart(now)), to: dayKey(now), granularity: "day" });
    expect(r.body.totals).toMatchObject({ cost_nano: 63, events: 1 }); // last month's event is outside
    const onlyTo = await history(client.id, { to: "2026-02-14" }, client.key);
    expect(onlyTo.body).toMatchObject({ from: "2026-02-01", to: "2026-02-14" });
  });

  it("a range of 366 days is allowed, 367 is not", async () => {
    const client = await makeClient();
    expect((await history(client.id, { from: "2026-01-01", to: "2027-01-01" })).status).toBe(200);
    expect((await history(client.id, { from: "2028-01-01", to: "2028-12-31" })).status).toBe(200);
    const tooLong = await history(client.id, { from: "2026-01-01", to: "2027-01-02" });
    expectError(tooLong, 400, "validation_failed");
    expect(tooLong.body.error.details.fields).toEqual([{ path: "query.to", message: expect.stringContaining("367 days") }]);
  });
});

describe("usage history: who may read it", () => {
  it("a key reads its own client; another client's usage is 403 whether or not that client exists", async () => {
    const client = await makeClient();
    expect((await history(client.id, {}, client.key)).status).toBe(200);
    const other = await makeClient();
    const r = await history(other.id, {}, client.key);
    expectError(r, 403, "forbidden");
    expectError(await history("acme", {}, client.key), 403, "forbidden");
    expectError(await history("no-such-client", {}, client.key), 403, "forbidden"); // existence not leaked
  });

  it("admin and internal tokens read any client; an unknown client is 404 for them", async () => {
    const client = await makeClient();
    for (const token of [ADMIN, INTERNAL]) {
      expect((await history(client.id, {}, token)).status).toBe(200);
      expect((await history("acme", {}, token)).status).toBe(200);
      expectError(await history("no-such-client", {}, token), 404, "client_not_found");
    }
  });

  it("the usage:read scope is needed, and enough: the read-only demo key reads, a key without the scope is 403", async () => {
    expect((await history("hooli", {}, KEYS.hooliReadOnly)).status).toBe(200);
    expect((await history("hooli", {}, KEYS.hooli)).status).toBe(200);
    const noScope = await makeClient(["resources:read", "execute"]);
    const r = await history(noScope.id, {}, noScope.key);
    expectError(r, 403, "forbidden");
    expect(r.body.error.details.required_scope).toBe("usage:read");
  });

  it("no credential or a wrong one is 401", async () => {
    expectError(await call("GET", "/api/usage/acme"), 401, "unauthorized");
    expectError(await history("acme", {}, "rmk_not_a_real_key"), 401, "unauthorized");
  });
});

describe("usage history: bad input is 400 naming the field, and changes nothing", () => {
  const bad: [string, string, string][] = [
    ["an impossible date", "from=2026-02-30", "query.from"],
    ["a date with a time", "from=2026-11-01T00:00:00Z", "query.from"],
    ["a date in another format", "to=23/11/2026", "query.to"],
    ["a date before 1970", "from=1969-12-31&to=1970-01-01", "query.from"],
    ["from after to", "from=2026-11-24&to=2026-11-23", "query.to"],
    ["a range of 400 days", "from=2026-01-01&to=2027-02-04", "query.to"],
    ["an unknown granularity", "granularity=week", "query.granularity"],
    ["limit 0", "limit=0", "query.limit"],
    ["limit 501", "limit=501", "query.limit"],
    ["a fractional limit", "limit=1.5", "query.limit"],
    ["a limit that is not a number", "limit=ten", "query.limit"],
    ["a bad pool name", "pool=Not%20A%20Pool", "query.pool"],
    ["a cursor this listing did not make", "cursor=bm90LWEtY3Vyc29y", "query.cursor"],
    ["a day cursor on a month listing", `granularity=month&cursor=${btoa(JSON.stringify({ after: "2026-11-23" })).replace(/=+$/, "")}`, "query.cursor"],
    ["a repeated parameter", "from=2026-11-01&from=2026-11-02", "query.from"],
    ["an unknown parameter", "page=2", "query"],
  ];

  for (const [name, qs, field] of bad) {
    it(name, async () => {
      const before = await rowCounts();
      const r = await call("GET", `/api/usage/acme?${qs}`, { token: KEYS.acme });
      expectError(r, 400, "validation_failed");
      expect(r.body.error.details.fields.map((f: any) => f.path)).toContain(field);
      expect(await rowCounts()).toEqual(before);
    });
  }

  it("a malformed client id is 400; an unknown pool is 404", async () => {
    expectError(await call("GET", "/api/usage/not%20a%20client", { token: ADMIN }), 400, "validation_failed");
    expectError(await history("acme", { pool: "no-such-pool" }, KEYS.acme), 404, "pool_not_found");
  });
});

describe("cost estimate", () => {
  const estimate = (json: unknown, token: string = KEYS.acme) => call("POST", "/api/cost/estimate", { token, json });

  it("is exact for a template's declared requirements, and names the cheaper alternative", async () => {
    const r = await estimate({ template: "content-generate" });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({
      client_id: "acme",
      template: "content-generate",
      pools: [{ pool: "openai-gpt4", amount: 2000, unit: "tokens", cost_per_unit_nano: 30_000, cost_nano: 60_000_000 }],
      total_cost_nano: 60_000_000,
      alternative: { template: "content-generate-lite", total_cost_nano: 3_000_000 },
      trace_id: r.body.trace_id,
    });
    const lite = await estimate({ template: "content-generate-lite" });
    expect(lite.body).toMatchObject({ total_cost_nano: 3_000_000, alternative: null });
    // 50 D1 queries (free) + 200 KV reads x 500 + 1000 GPT-3.5 tokens x 1500
    const report = await estimate({ template: "report-build" });
    expect(report.body.pools.map((p: any) => p.cost_nano)).toEqual([0, 100_000, 1_500_000]);
    expect(report.body.total_cost_nano).toBe(1_600_000);
  });

  it("is exact for explicit amounts, up to the largest amounts allowed", async () => {
    const r = await estimate({ requirements: [{ pool: "sms-twilio", amount: 3 }, { pool: "email-sendgrid", amount: 2 }, { pool: "d1-queries", amount: 1000 }] });
    expect(r.body).toMatchObject({ client_id: "acme", template: null, total_cost_nano: 22_700_000, alternative: null });
    expect(r.body.pools.map((p: any) => p.cost_nano)).toEqual([22_500_000, 200_000, 0]);

    const amounts = [1_000_000_000_000, 999_999_999_999, 123_456_789_011, 7, 1];
    const big = await estimate({ requirements: amounts.map((amount) => ({ pool: "openai-gpt35", amount })) });
    expect(big.status).toBe(200);
    expect(BigInt(big.body.total_cost_nano)).toBe(amounts.reduce((s, a) => s + BigInt(a) * 1500n, 0n));

    const overflow = await estimate({ requirements: [{ pool: "sms-twilio", amount: 1_000_000_000_000 }] });
    expectError(overflow, 400, "validation_failed");
    expect(overflow.body.error.details.fields[0].path).toBe("requirements.0.amount");
  });

  it("acts for the key's own client; admin and internal tokens name the client", async () => {
    expect((await estimate({ template: "notify-sms", client_id: "acme" })).body.client_id).toBe("acme");
    expectError(await estimate({ template: "notify-sms", client_id: "globex" }), 403, "forbidden");
    expect((await estimate({ template: "notify-sms", client_id: "globex" }, ADMIN)).body).toMatchObject({ client_id: "globex", total_cost_nano: 7_500_000 });
    expect((await estimate({ template: "notify-sms", client_id: "initech" }, INTERNAL)).body).toMatchObject({ client_id: "initech", total_cost_nano: 7_500_000 });
    const missing = await estimate({ template: "notify-sms" }, ADMIN);
    expectError(missing, 400, "validation_failed");
    expect(missing.body.error.details.fields[0].path).toBe("client_id");
    expectError(await estimate({ template: "notify-sms", client_id: "no-such-client" }, ADMIN), 404, "client_not_found");
  });

  it("a pool dedicated to another client is 403; the alternative is offered only when this client may use it", async () => {
    const mine = await makePool({ costPerUnitNano: 100, sharing: { mode: "dedicated", clientId: "globex" } });
    const shared = await makePool({ costPerUnitNano: 100 });
    const cheapDedicated = await makePool({ costPerUnitNano: 1, sharing: { mode: "dedicated", clientId: "globex" } });
    expectError(await estimate({ requirements: [{ pool: mine.id, amount: 1 }] }), 403, "pool_forbidden");
    expect((await estimate({ requirements: [{ pool: mine.id, amount: 1 }] }, KEYS.globex)).body.total_cost_nano).toBe(100);
    expectError(await estimate({ requirements: [{ pool: mine.id, amount: 1 }], client_id: "acme" }, ADMIN), 403, "pool_forbidden");

    const suffix = crypto.randomUUID().slice(0, 8);
    const [main, alt, dearer] = [`t-main-${suffix}`, `t-alt-${suffix}`, `t-dear-${suffix}`];
    const insert = env.DB.prepare(
      `INSERT INTO templates (id, name, binding, requirements, alternative_id, cacheable, batchable, timeout_ms, updated_at)
       VALUES (?1, ?1, 'CONTENT_WORKER', ?2, ?3, 0, 0, 1000, 0)`,
    );
    await env.DB.batch([
      insert.bind(alt, JSON.stringify([{ pool: cheapDedicated.id, amount: 10 }]), null),
      insert.bind(dearer, JSON.stringify([{ pool: shared.id, amount: 11 }]), null),
      insert.bind(main, JSON.stringify([{ pool: shared.id, amount: 10 }]), alt),
      insert.bind(`${main}-2`, JSON.stringify([{ pool: shared.id, amount: 10 }]), dearer),
    ]);
    clearConfigCache();
    expect((await estimate({ template: main })).body).toMatchObject({ total_cost_nano: 1000, alternative: null });
    expect((await estimate({ template: main }, KEYS.globex)).body).toMatchObject({ total_cost_nano: 1000, alternative: { template: alt, total_cost_nano: 10 } });
    expect((await estimate({ template: `${main}-2` })).body).toMatchObject({ total_cost_nano: 1000, alternative: null }); // dearer: no downgrade
  });

  it("unknown template or pool is 404; bad bodies are 400 naming the field; a key needs resources:read", async () => {
    expectError(await estimate({ template: "no-such-template" }), 404, "template_not_found");
    expectError(await estimate({ requirements: [{ pool: "no-such-pool", amount: 1 }] }), 404, "pool_not_found");
    const cases: [unknown, string][] = [
      [{}, "template"],
      [{ template: "content-generate", requirements: [{ pool: "openai-gpt4", amount: 1 }] }, "template"],
      [{ requirements: [] }, "requirements"],
      [{ requirements: [{ pool: "openai-gpt4", amount: 0 }] }, "requirements.0.amount"],
      [{ requirements: [{ pool: "openai-gpt4", amount: 1.5 }] }, "requirements.0.amount"],
      [{ template: "Content Generate" }, "template"],
      [{ template: "content-generate", budget: true }, ""],
      [{ template: "content-generate", client_id: "not a client" }, "client_id"],
    ];
    for (const [json, field] of cases) {
      const r = await estimate(json);
      expectError(r, 400, "validation_failed");
      expect(r.body.error.details.fields.map((f: any) => f.path), JSON.stringify(json)).toContain(field);
    }
    const json = { "content-type": "application/json" };
    expectError(await call("POST", "/api/cost/estimate", { token: KEYS.acme, headers: json }), 400, "bad_request");
    expectError(await call("POST", "/api/cost/estimate", { token: KEYS.acme, headers: json, body: "{not json" }), 400, "bad_request");
    expectError(await call("POST", "/api/cost/estimate", { json: { template: "content-generate" } }), 401, "unauthorized");
    const noScope = await estimate({ template: "content-generate" }, KEYS.hooliReadOnly);
    expectError(noScope, 403, "forbidden");
    expect(noScope.body.error.details.required_scope).toBe("resources:read");
  });

  it("POST /api/resources/estimate prices with the same code, and now refuses pools dedicated to others as well", async () => {
    const a = await call("POST", "/api/resources/estimate", { token: KEYS.acme, json: { template: "content-generate" } });
    const b = await estimate({ template: "content-generate" });
    expect(a.body.pools).toEqual(b.body.pools);
    expect(a.body.total_cost_nano).toBe(b.body.total_cost_nano);
    const dedicated = await makePool({ sharing: { mode: "dedicated", clientId: "globex" } });
    expectError(await call("POST", "/api/resources/estimate", { token: KEYS.acme, json: { requirements: [{ pool: dedicated.id, amount: 1 }] } }), 403, "pool_forbidden");
  });

  it("both routes are in the OpenAPI document with their errors", async () => {
    const r = await call("GET", "/openapi.json");
    const usage = r.body.paths["/api/usage/{clientId}"].get;
    expect(documentedResponse(r.body, "/api/usage/{clientId}", "get", "403").description).toContain("forbidden");
    expect(usage.parameters.map((p: any) => `${p.in}:${p.name}`).sort()).toEqual(
      ["path:clientId", "query:cursor", "query:from", "query:granularity", "query:limit", "query:pool", "query:to"],
    );
    expect(documentedResponse(r.body, "/api/cost/estimate", "post", "403").description).toContain("pool_forbidden");
  });
});
