import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { budgetView, fitsBudget, resolveBudget, type BudgetLimit } from "../../src/domain/budget";
import { monthKey, nextMonthStart } from "../../src/domain/calendar";
import { sha256Hex } from "../../src/http/auth";
import type { ClientObject } from "../../src/objects/client";
import { clearConfigCache } from "../../src/storage/config";
import { addSpend, ADMIN, call, enqueue, eventually, expectError, INTERNAL, KEYS, makePool, makeTemplate, mulberry32, settled, type Call } from "../support/helpers";

const STANDARD_BUDGET = 500_000_000_000; // seed.sql: the standard tier's monthly budget
const start = () => call("POST", "/admin/scheduler/start", { token: ADMIN });
const stop = () => call("POST", "/admin/scheduler/stop", { token: ADMIN });
const current = (clientId: string, token: string = ADMIN) => call("GET", `/api/usage/${clientId}/current`, { token });
const setBudget = (clientId: string, json: unknown, token: string = ADMIN) => call("PUT", `/admin/clients/${clientId}/budget`, { token, json });
const getBudget = (clientId: string, token: string = ADMIN) => call("GET", `/admin/clients/${clientId}/budget`, { token });
const costOf = (requestId: string, token: string = ADMIN) => call("GET", `/api/cost/${requestId}`, { token });
const clientStub = (clientId: string) => env.CLIENT.get(env.CLIENT.idFromName(clientId));
const poolStub = (pool: string) => env.POOL.get(env.POOL.idFromName(pool));

let cseq = 0;
/** A fresh client with its own API key, so no other test's money is mixed into its month. */
async function makeClient(opts: { tier?: string; budgetNano?: number | null; scopes?: string[] } = {}): Promise<{ id: string; key: string }> {
  cseq += 1;
  const id = `b-${crypto.randomUUID().slice(0, 8)}-${cseq}`;
  const key = `rmk_test_${crypto.randomUUID().replace(/-/g, "")}`;
  await env.DB.batch([
    env.DB.prepare(
      `INSERT INTO clients (id, name, email, tier, monthly_budget_nano, status, created_at, updated_at)
       VALUES (?1, ?1, 'ops@example.com', ?2, ?3, 'active', 0, 0)`,
    ).bind(id, opts.tier ?? "standard", opts.budgetNano ?? null),
    env.DB.prepare(`INSERT INTO api_keys (id, client_id, key_hash, prefix, scopes, created_at) VALUES (?1, ?2, ?3, 'rmk_test', ?4, 0)`)
      .bind(`key_${id}`, id, await sha256Hex(key), JSON.stringify(opts.scopes ?? ["resources:read", "execute", "usage:read"])),
  ]);
  clearConfigCache();
  return { id, key };
}

/** A template with a cheaper alternative (inserted first: alternative_id references it). */
async function templatePair(expensive: Array<{ pool: string; amount: number }>, cheap: Array<{ pool: string; amount: number }>): Promise<{ expensive: string; cheap: string }> {
  const tag = crypto.randomUUID().slice(0, 8);
  const ids = { expensive: `tpl-full-${tag}`, cheap: `tpl-lite-${tag}` };
  const insert = `INSERT INTO templates (id, name, binding, requirements, alternative_id, cacheable, batchable, timeout_ms, updated_at)
                  VALUES (?1, ?1, 'CONTENT_WORKER', ?2, ?3, 0, 0, 5000, 0)`;
  await env.DB.prepare(insert).bind(ids.cheap, JSON.stringify(cheap), null).run();
  await env.DB.prepare(insert).bind(ids.expensive, JSON.stringify(expensive), ids.cheap).run();
  clearConfigCache();
  return ids;
}

/** Sum of a client's ledger rows and of its rollups, straight from D1. */
async function ledgerAndRollups(clientId: string): Promise<{ ledger: number; rollups: number; events: number }> {
  const row = await env.DB.prepare(
    `SELECT (SELECT COALESCE(SUM(cost_nano), 0) FROM usage_events WHERE client_id = ?1) AS ledger,
            (SELECT COALESCE(SUM(cost_nano), 0) FROM usage_daily WHERE client_id = ?1) AS rollups,
            (SELECT COUNT(*) FROM usage_events WHERE client_id = ?1) AS events`,
  ).bind(clientId).first<{ ledger: number; rollups: number; events: number }>();
  return row!;
}

/** Flush the pools' outboxes until the client's ledger holds `events` rows (an alarm may be mid-flush). */
async function flushUntil(pools: string[], clientId: string, events: number): Promise<void> {
  await eventually(async () => {
    await Promise.all(pools.map((p) => poolStub(p).flush()));
    return (await ledgerAndRollups(clientId)).events === events;
  }, 10_000, `${events} ledger rows for ${clientId}`);
}

async function cancelAll(ids: string[], key: string): Promise<void> {
  for (const id of ids) expect((await call("DELETE", `/api/queue/${id}`, { token: key })).status).toBe(200);
}

function fieldPaths(r: Call): string[] {
  return (r.body.error.details?.fields ?? []).map((f: { path: string }) => f.path);
}

describe("budget rules (pure)", () => {
  const limit = (limitNano: number | null): BudgetLimit => ({ limitNano, source: limitNano === null ? "unlimited" : "client" });

  it("resolves an operator's setting first, then the client's own, then its tier's; nothing set is a budget of 0", () => {
    expect(resolveBudget({ override: { monthlyBudgetNano: 7 }, clientBudgetNano: 5, tierBudgetNano: 3 })).toEqual({ limitNano: 7, source: "client" });
    expect(resolveBudget({ override: { monthlyBudgetNano: 0 }, clientBudgetNano: 5, tierBudgetNano: 3 })).toEqual({ limitNano: 0, source: "client" });
    expect(resolveBudget({ override: { monthlyBudgetNano: null }, clientBudgetNano: 5, tierBudgetNano: 3 })).toEqual({ limitNano: null, source: "unlimited" });
    expect(resolveBudget({ override: null, clientBudgetNano: 5, tierBudgetNano: 3 })).toEqual({ limitNano: 5, source: "client" });
    expect(resolveBudget({ clientBudgetNano: 0, tierBudgetNano: 3 })).toEqual({ limitNano: 0, source: "client" });
    expect(resolveBudget({ override: null, clientBudgetNano: null, tierBudgetNano: 3 })).toEqual({ limitNano: 3, source: "tier" });
    expect(resolveBudget({ override: null, clientBudgetNano: null, tierBudgetNano: null })).toEqual({ limitNano: 0, source: "unset" });
  });

  it("admits an exact fit and refuses one nano-dollar over; spent and in flight both count", () => {
    expect(fitsBudget(limit(100), 30, 20, 50)).toBe(true);
    expect(fitsBudget(limit(100), 30, 20, 51)).toBe(false);
    expect(fitsBudget(limit(100), 31, 20, 50)).toBe(false);
    expect(fitsBudget(limit(100), 30, 21, 50)).toBe(false);
    expect(fitsBudget(limit(100), 0, 0, 100)).toBe(true);
    expect(fitsBudget(limit(100), 0, 0, 101)).toBe(false);
    expect(fitsBudget(limit(Number.MAX_SAFE_INTEGER), 0, Number.MAX_SAFE_INTEGER - 1, 1)).toBe(true);
    expect(fitsBudget(limit(Number.MAX_SAFE_INTEGER), 1, Number.MAX_SAFE_INTEGER - 1, 1)).toBe(false);
  });

  it("unlimited admits any amount; an unset budget (0) admits only what costs nothing", () => {
    expect(fitsBudget(limit(null), Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER)).toBe(true);
    const unset = resolveBudget({ clientBudgetNano: null, tierBudgetNano: null });
    expect(fitsBudget(unset, 0, 0, 0)).toBe(true);
    expect(fitsBudget(unset, 0, 0, 1)).toBe(false);
  });

  it("the view: remaining is budget - spent - in flight, never below 0, null without a limit", () => {
    const now = Date.UTC(2026, 10, 15, 12);
    expect(budgetView(limit(100), 30, 20, now)).toEqual({
      month: "2026-11", budget_nano: 100, budget_source: "client", spent_nano: 30, in_flight_nano: 20, remaining_nano: 50, resets_at: Date.UTC(2026, 11, 1),
    });
    expect(budgetView(limit(100), 90, 20, now).remaining_nano).toBe(0);
    expect(budgetView(limit(null), 90, 20, now)).toMatchObject({ budget_nano: null, budget_source: "unlimited", remaining_nano: null });
  });

  it("resets_at is the first millisecond of the next UTC month, December to January included", () => {
    const cases: Array<[number, string, number]> = [
      [Date.UTC(2026, 11, 31, 23, 59, 59, 999), "2026-12", Date.UTC(2027, 0, 1)],
      [Date.UTC(2026, 11, 1), "2026-12", Date.UTC(2027, 0, 1)],
      [Date.UTC(2027, 0, 1), "2027-01", Date.UTC(2027, 1, 1)],
      [Date.UTC(2028, 1, 29, 18), "2028-02", Date.UTC(2028, 2, 1)],
      [Date.UTC(2026, 10, 30, 23, 59, 59, 999), "2026-11", Date.UTC(2026, 11, 1)],
    ];
    for (const [now, month, resets] of cases) {
      const view = budgetView(limit(1), 0, 0, now);
      expect(view.month).toBe(month);
      expect(view.resets_at).toBe(resets);
      expect(new Date(resets).toISOString()).toMatch(/^\d{4}-\d{2}-01T00:00:00\.000Z$/);
    }
  });
});

describe("admission at the edge of the budget", () => {
  it("100 concurrent enqueues where exactly 37 fit: 37 accepted, 63 refused with 402, in flight exactly 37 estimates", async () => {
    await stop();
    const pool = await makePool({ costPerUnitNano: 1000, capacity: 1_000_000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 10 }]);
    const estimate = 10_000;
    const { id, key } = await makeClient();
    expect((await setBudget(id, { monthly_budget_nano: 37 * estimate + estimate - 1 })).status).toBe(200);

    const answers = await Promise.all(Array.from({ length: 100 }, () => enqueue({ template }, key)));
    const accepted = answers.filter((r) => r.status === 202);
    const refused = answers.filter((r) => r.status === 402);
    expect(accepted).toHaveLength(37);
    expect(refused).toHaveLength(63);
    for (const r of refused) {
      expectError(r, 402, "budget_exceeded");
      expect(r.body.error.details).toMatchObject({ budget_nano: 379_999, estimate_nano: estimate });
      expect(r.body.error.details.spent_nano + r.body.error.details.in_flight_nano + estimate).toBeGreaterThan(379_999);
    }

    const now = (await current(id)).body;
    expect(now).toMatchObject({
      client_id: id, budget_nano: 379_999, budget_source: "client", spent_nano: 0, in_flight_nano: 37 * estimate, remaining_nano: estimate - 1,
      concurrency_in_use: 0, concurrency_limit: 20,
      requests_by_status: { queued: 37, dispatching: 0, running: 0, completed: 0, failed: 0, cancelled: 0, expired: 0 },
    });

    await cancelAll(accepted.map((r) => r.body.request.id), key);
    expect((await current(id)).body).toMatchObject({ in_flight_nano: 0, spent_nano: 0, remaining_nano: 379_999, requests_by_status: { queued: 0, cancelled: 37 } });
  });

  it("a batch of 100 is admitted in order and answered item by item: the first 30 queued, the other 70 refused", async () => {
    await stop();
    const pool = await makePool({ costPerUnitNano: 3, capacity: 1_000_000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1_000 }]);
    const estimate = 3_000;
    const { id, key } = await makeClient();
    expect((await setBudget(id, { monthly_budget_nano: 30 * estimate + estimate - 1 })).status).toBe(200);

    const r = await enqueue({ requests: Array.from({ length: 100 }, () => ({ template })) }, key);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ accepted: 30, rejected: 70 });
    r.body.results.forEach((item: any, i: number) => {
      expect(item.index).toBe(i);
      expect(item.ok).toBe(i < 30);
      if (i >= 30) {
        expect(item.error.code).toBe("budget_exceeded");
        expect(item.error.details).toMatchObject({ in_flight_nano: 30 * estimate, remaining_nano: estimate - 1, estimate_nano: estimate });
      }
    });
    expect((await current(id)).body).toMatchObject({ in_flight_nano: 30 * estimate, requests_by_status: { queued: 30 } });
    await cancelAll(r.body.results.filter((x: any) => x.ok).map((x: any) => x.request.id), key);
    expect((await current(id)).body.in_flight_nano).toBe(0);
  });

  it("the 402 body names budget, spent, in flight, remaining, month, reset time, the estimate and a cheaper alternative", async () => {
    await stop();
    const pool = await makePool({ costPerUnitNano: 1000, capacity: 1_000_000 });
    const { expensive, cheap } = await templatePair([{ pool: pool.id, amount: 50 }], [{ pool: pool.id, amount: 5 }]);
    const { id, key } = await makeClient();
    expect((await setBudget(id, { monthly_budget_nano: 20_000 })).status).toBe(200);
    const month = monthKey(Date.now());
    const resets = nextMonthStart(Date.now());

    const first = await enqueue({ template: expensive }, key);
    expectError(first, 402, "budget_exceeded");
    expect(first.body.error.details).toEqual({
      client_id: id, template: expensive, downgraded_from: null, estimate_nano: 50_000, month, budget_nano: 20_000, budget_source: "client",
      spent_nano: 0, in_flight_nano: 0, remaining_nano: 20_000, resets_at: resets,
      alternative: { template: cheap, estimate_nano: 5_000, fits: true },
    });
    expect(first.body.error.message).toContain("20000");

    const queued: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await enqueue({ template: cheap }, key);
      expect(r.status).toBe(202);
      queued.push(r.body.request.id);
    }
    // 20,000 in flight: nothing is left, the alternative no longer fits either.
    const second = await call("POST", "/api/execute", { token: key, json: { template: expensive, queue: "fast", quality: "premium" } });
    expectError(second, 402, "budget_exceeded");
    expect(second.body.error.details).toMatchObject({ in_flight_nano: 20_000, remaining_nano: 0, alternative: { template: cheap, estimate_nano: 5_000, fits: false } });
    // Without quality: premium, a budget this used makes the optimizer run the alternative, which does not fit either.
    const downgraded = await call("POST", "/api/execute", { token: key, json: { template: expensive, queue: "fast" } });
    expectError(downgraded, 402, "budget_exceeded");
    expect(downgraded.body.error.details).toMatchObject({ template: cheap, downgraded_from: expensive, estimate_nano: 5_000, alternative: null });
    // A template without an alternative says so.
    const third = await enqueue({ template: cheap }, key);
    expectError(third, 402, "budget_exceeded");
    expect(third.body.error.details).toMatchObject({ estimate_nano: 5_000, remaining_nano: 0, alternative: null });

    await cancelAll(queued, key);
  });
});

describe("settlement", () => {
  it("completed requests move money from in flight to spent: spent = their actual cost = the ledger = the rollups", async () => {
    expect((await start()).status).toBe(200);
    const a = await makePool({ costPerUnitNano: 1000, capacity: 1_000_000 });
    const b = await makePool({ costPerUnitNano: 7, capacity: 1_000_000 });
    const template = await makeTemplate([{ pool: a.id, amount: 40 }, { pool: b.id, amount: 10 }]);
    const { id, key } = await makeClient();

    const r = await enqueue({ requests: Array.from({ length: 6 }, (_, i) => ({ template, queue: "fast", params: { n: i } })) }, key);
    expect(r.body.accepted).toBe(6);
    const done = await Promise.all(r.body.results.map((x: any) => settled(x.request.id, ["completed", "failed"], 10_000, key)));
    expect(done.map((d) => d.status)).toEqual(Array(6).fill("completed"));
    // The content worker uses about three quarters of what it was given: 30 of 40 and 8 of 10.
    const actual = done.reduce((sum, d) => sum + d.actual_nano, 0);
    expect(actual).toBe(6 * (30 * 1000 + 8 * 7));

    const now = (await current(id)).body;
    expect(now).toMatchObject({ in_flight_nano: 0, spent_nano: actual, remaining_nano: STANDARD_BUDGET - actual, concurrency_in_use: 0, requests_by_status: { completed: 6 } });
    await flushUntil([a.id, b.id], id, 12);
    expect(await ledgerAndRollups(id)).toEqual({ ledger: actual, rollups: actual, events: 12 });
  });

  it("a running request holds a concurrency slot and shows as running until it settles", async () => {
    expect((await start()).status).toBe(200);
    const pool = await makePool({ costPerUnitNano: 1, capacity: 1_000_000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 100 }]);
    const { id, key } = await makeClient();
    const r = await enqueue({ template, queue: "fast", params: { simulate: { latency_ms: 1500 } } }, key);
    expect(r.status).toBe(202);
    await eventually(async () => {
      const b = (await current(id)).body;
      return b.requests_by_status.running === 1 && b.concurrency_in_use === 1 && b.in_flight_nano === 100;
    }, 5000, "the request to run");
    await settled(r.body.request.id, ["completed"], 10_000, key);
    expect((await current(id)).body).toMatchObject({ concurrency_in_use: 0, in_flight_nano: 0, spent_nano: 75, requests_by_status: { running: 0, completed: 1 } });
  });

  // Straight through the pool objects (what /internal/consume, /reserve and /release call): in this
  // harness each HTTP call costs more the more a file has made (workers-sdk#15092), and 2,000 would take minutes.
  it("1,500 random spends across 3 pools (consumes, reservations settled with random use): ledger = rollups = the client's spent = the expected sum", async () => {
    const prices = [1, 1_500, 30_000];
    const pools = await Promise.all(prices.map((costPerUnitNano) => makePool({ costPerUnitNano, capacity: 1_000_000_000, refillPerSec: 0 })));
    const { id } = await makeClient();
    const caller = { clientId: id, tier: "standard" as const, via: "internal" };
    const random = mulberry32(20261123);
    const ops = Array.from({ length: 1_500 }, () => {
      const p = Math.floor(random() * 3);
      const amount = 1 + Math.floor(random() * 1_000);
      const reserve = random() < 1 / 3;
      const used = reserve ? Math.floor(random() * (amount + 1)) : amount;
      return { pool: pools[p]!, price: prices[p]!, amount, reserve, used };
    });
    const expected = ops.reduce((sum, o) => sum + o.used * o.price, 0);
    const events = ops.filter((o) => o.used > 0).length;

    const run = async (o: (typeof ops)[number]) => {
      const stub = poolStub(o.pool.id);
      if (!o.reserve) {
        const r = ((await stub.spend(o.pool, [[caller.clientId, caller.tier, caller.via, o.amount, null, null]])) as unknown as unknown[])[0];
        expect(Array.isArray(r) && r[1]).toBe(o.amount * o.price);
        return;
      }
      const held = await stub.reserve(o.pool, caller, { amount: o.amount, ttlMs: 600_000 });
      if (!held.ok) throw new Error(`reserve refused in ${o.pool.id}`);
      const released = await stub.release(o.pool, caller, held.value.reservationId, o.used);
      expect(released.ok && released.value.costNano).toBe(o.used * o.price);
    };
    for (let i = 0; i < ops.length; i += 50) await Promise.all(ops.slice(i, i + 50).map(run));

    await flushUntil(pools.map((p) => p.id), id, events);
    expect(await ledgerAndRollups(id)).toEqual({ ledger: expected, rollups: expected, events });
    expect((await current(id)).body).toMatchObject({ spent_nano: expected, in_flight_nano: 0 });
  }, 120_000);

  it("cancelling a queued request takes its estimate out of flight and spends nothing", async () => {
    await stop();
    const pool = await makePool({ costPerUnitNano: 1000, capacity: 1_000_000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 10 }]);
    const { id, key } = await makeClient();
    const r = await enqueue({ template }, key);
    expect(r.status).toBe(202);
    expect((await current(id)).body).toMatchObject({ in_flight_nano: 10_000, spent_nano: 0 });
    expect((await call("DELETE", `/api/queue/${r.body.request.id}`, { token: key })).status).toBe(200);
    expect((await current(id)).body).toMatchObject({ in_flight_nano: 0, spent_nano: 0, requests_by_status: { queued: 0, cancelled: 1 } });
  });

  it("a request whose worker fails on its last attempt leaves flight and spends nothing", async () => {
    expect((await start()).status).toBe(200);
    const pool = await makePool({ costPerUnitNano: 1000, capacity: 1_000_000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 10 }]);
    const { id, key } = await makeClient();
    const r = await enqueue({ template, queue: "fast", max_attempts: 1, params: { simulate: { fail: "throw" } } }, key);
    expect(r.status).toBe(202);
    const failed = await settled(r.body.request.id, ["failed", "completed"], 10_000, key);
    expect(failed.status).toBe("failed");
    expect((await current(id)).body).toMatchObject({ in_flight_nano: 0, spent_nano: 0, requests_by_status: { failed: 1 } });
    await poolStub(pool.id).flush();
    expect((await ledgerAndRollups(id)).ledger).toBe(0);
  });
});

describe("month boundary", () => {
  it("last month's spend does not count this month: no job runs, the month key does it", async () => {
    await stop();
    const pool = await makePool({ costPerUnitNano: 1000, capacity: 1_000_000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 10 }]);
    const { id, key } = await makeClient();
    expect((await setBudget(id, { monthly_budget_nano: 1_000_000 })).status).toBe(200);
    const now = new Date();
    const lastMonth = monthKey(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 15));
    // Spend booked through the object itself, as a settlement books it (an event dated last month).
    await addSpend(clientStub(id), null, [{ eventId: "last-month", costNano: 9_000_000_000_000_000, at: Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 15) }]);
    expect(await runInDurableObject(clientStub(id), async (_: ClientObject, state) =>
      state.storage.sql.exec<{ n: number }>("SELECT spent_nano AS n FROM spend WHERE month = ?", lastMonth).one().n)).toBe(9_000_000_000_000_000);

    const view = (await current(id)).body;
    expect(view).toMatchObject({ month: monthKey(Date.now()), spent_nano: 0, remaining_nano: 1_000_000, resets_at: nextMonthStart(Date.now()) });
    const r = await enqueue({ template }, key);
    expect(r.status).toBe(202);

    // The same amount booked on this month's key refuses at once.
    await addSpend(clientStub(id), null, [{ eventId: "this-month", costNano: 995_000, at: Date.now() }]);
    expectError(await enqueue({ template }, key), 402, "budget_exceeded");
    expect((await current(id)).body).toMatchObject({ spent_nano: 995_000, in_flight_nano: 10_000, remaining_nano: 0 });
    await cancelAll([r.body.request.id], key);
  });
});

describe("operator budgets: PUT /admin/clients/{id}/budget", () => {
  it("unlimited admits any amount and says so; inherit goes back to the tier's budget; a custom amount applies at once", async () => {
    await stop();
    const pool = await makePool({ costPerUnitNano: 1_000_000_000_000, capacity: 1_000_000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1_000 }]);
    const huge = 1_000_000_000_000_000;
    const { id, key } = await makeClient();
    expectError(await enqueue({ template }, key), 402, "budget_exceeded");

    const lifted = await setBudget(id, { unlimited: true });
    expect(lifted.status).toBe(200);
    expect(lifted.body).toMatchObject({ client_id: id, budget_nano: null, budget_source: "unlimited", remaining_nano: null, spent_nano: 0, in_flight_nano: 0 });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await enqueue({ template }, key);
      expect(r.status).toBe(202);
      ids.push(r.body.request.id);
    }
    expect((await current(id)).body).toMatchObject({ budget_nano: null, budget_source: "unlimited", remaining_nano: null, in_flight_nano: 3 * huge });

    const inherited = await setBudget(id, { inherit: true });
    expect(inherited.body).toMatchObject({ budget_nano: STANDARD_BUDGET, budget_source: "tier", in_flight_nano: 3 * huge, remaining_nano: 0 });
    expectError(await enqueue({ template }, key), 402, "budget_exceeded");

    const custom = await setBudget(id, { monthly_budget_nano: 4 * huge });
    expect(custom.body).toMatchObject({ budget_nano: 4 * huge, budget_source: "client", remaining_nano: huge });
    const fourth = await enqueue({ template }, key);
    expect(fourth.status).toBe(202);
    ids.push(fourth.body.request.id);
    expectError(await enqueue({ template }, key), 402, "budget_exceeded");

    const read = await getBudget(id);
    expect(read.status).toBe(200);
    expect(read.body).toEqual({
      client_id: id, month: monthKey(Date.now()), budget_nano: 4 * huge, budget_source: "client", spent_nano: 0,
      in_flight_nano: 4 * huge, remaining_nano: 0, resets_at: nextMonthStart(Date.now()), trace_id: read.body.trace_id,
    });
    await cancelAll(ids, key);
  });

  it("inherit goes back to the client's own budget where it has one; a zero budget refuses anything priced", async () => {
    const { id } = await makeClient({ budgetNano: 123_456 });
    expect((await getBudget(id)).body).toMatchObject({ budget_nano: 123_456, budget_source: "client" });
    expect((await setBudget(id, { monthly_budget_nano: 0 })).body).toMatchObject({ budget_nano: 0, remaining_nano: 0 });
    expect((await setBudget(id, { inherit: true })).body).toMatchObject({ budget_nano: 123_456, budget_source: "client", remaining_nano: 123_456 });
    // Inherit twice is harmless.
    expect((await setBudget(id, { inherit: true })).status).toBe(200);
    const enterprise = await makeClient({ tier: "enterprise" });
    expect((await getBudget(enterprise.id)).body).toMatchObject({ budget_nano: 0, budget_source: "unset", remaining_nano: 0 });
    expect((await current(enterprise.id)).body).toMatchObject({ budget_source: "unset", concurrency_limit: 100 });
  });
});

describe("GET /api/cost/{requestId}", () => {
  it("shows the estimate against the actual cost per pool, and the actual agrees with the ledger", async () => {
    expect((await start()).status).toBe(200);
    const a = await makePool({ costPerUnitNano: 30_000, capacity: 1_000_000 });
    const b = await makePool({ costPerUnitNano: 500, capacity: 1_000_000 });
    const template = await makeTemplate([{ pool: a.id, amount: 2_000 }, { pool: b.id, amount: 3 }]);
    const { id, key } = await makeClient();
    const r = await enqueue({ template, queue: "fast" }, key);
    const queued = await costOf(r.body.request.id, key);
    expect(queued.status).toBe(200);
    expect(queued.body.estimate_nano).toBe(60_000_000 + 1_500);

    const done = await settled(r.body.request.id, ["completed", "failed"], 10_000, key);
    expect(done.status).toBe("completed");
    const cost = await costOf(r.body.request.id, key);
    expect(cost.status).toBe(200);
    expect(cost.body).toEqual({
      request_id: r.body.request.id, client_id: id, template, status: "completed",
      estimate_nano: 60_001_500, actual_nano: 45_001_500,
      pools: [
        { pool: a.id, estimate_units: 2_000, estimate_cost_nano: 60_000_000, actual_units: 1_500, actual_cost_nano: 45_000_000, difference_nano: -15_000_000 },
        { pool: b.id, estimate_units: 3, estimate_cost_nano: 1_500, actual_units: 3, actual_cost_nano: 1_500, difference_nano: 0 },
      ],
      trace_id: cost.body.trace_id,
    });

    await flushUntil([a.id, b.id], id, 2);
    const { results } = await env.DB.prepare("SELECT pool_id, units, cost_nano FROM usage_events WHERE request_id = ?1 ORDER BY pool_id")
      .bind(r.body.request.id).all<{ pool_id: string; units: number; cost_nano: number }>();
    const ledger = new Map(results.map((e) => [e.pool_id, e]));
    for (const p of cost.body.pools) {
      expect(ledger.get(p.pool)).toEqual({ pool_id: p.pool, units: p.actual_units, cost_nano: p.actual_cost_nano });
    }
    expect(results.reduce((s, e) => s + e.cost_nano, 0)).toBe(cost.body.actual_nano);
    // The admin reads it too.
    expect((await costOf(r.body.request.id)).body.actual_nano).toBe(45_001_500);
  });

  it("before completion the actual figures are null", async () => {
    await stop();
    const pool = await makePool({ costPerUnitNano: 2, capacity: 1_000_000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 10 }]);
    const { key } = await makeClient();
    const r = await enqueue({ template }, key);
    const cost = await costOf(r.body.request.id, key);
    expect(cost.body).toMatchObject({
      status: "queued", estimate_nano: 20, actual_nano: null,
      pools: [{ pool: pool.id, estimate_units: 10, estimate_cost_nano: 20, actual_units: null, actual_cost_nano: null, difference_nano: null }],
    });
    await cancelAll([r.body.request.id], key);
  });
});

describe("bad input and authorization", () => {
  it("a malformed budget is 400 naming the failing field, and changes nothing", async () => {
    const { id } = await makeClient();
    expect((await setBudget(id, { monthly_budget_nano: 5_000 })).status).toBe(200);
    const cases: Array<[unknown, string[]]> = [
      [{ monthly_budget_nano: 10, unlimited: true }, ["monthly_budget_nano", "unlimited"]],
      [{ unlimited: true, inherit: true }, ["unlimited", "inherit"]],
      [{}, [""]],
      [{ monthly_budget_nano: -1 }, ["monthly_budget_nano"]],
      [{ monthly_budget_nano: 1.5 }, ["monthly_budget_nano"]],
      [{ monthly_budget_nano: 1e300 }, ["monthly_budget_nano"]],
      [{ monthly_budget_nano: Number.MAX_SAFE_INTEGER + 1 }, ["monthly_budget_nano"]],
      [{ monthly_budget_nano: "100" }, ["monthly_budget_nano"]],
      [{ monthly_budget_nano: null }, ["monthly_budget_nano"]],
      [{ unlimited: false }, ["unlimited"]],
      [{ inherit: "yes" }, ["inherit"]],
      [{ inherit: true, budget: 5 }, [""]],
      [[5], [""]],
    ];
    for (const [body, paths] of cases) {
      const r = await setBudget(id, body);
      expectError(r, 400, "validation_failed");
      for (const p of paths) expect(fieldPaths(r), JSON.stringify(body)).toContain(p);
    }
    expectError(await call("PUT", `/admin/clients/${id}/budget`, { token: ADMIN, body: "{not json", headers: { "content-type": "application/json" } }), 400, "bad_request");
    expect((await call("PUT", `/admin/clients/${id}/budget`, { token: ADMIN })).status).toBe(400);
    const badId = await setBudget("bad.id", { inherit: true });
    expectError(badId, 400, "validation_failed");
    expect(fieldPaths(badId)).toEqual(["param.clientId"]);
    expect((await getBudget(id)).body).toMatchObject({ budget_nano: 5_000, budget_source: "client" });
    // The largest exact amount is accepted.
    expect((await setBudget(id, { monthly_budget_nano: Number.MAX_SAFE_INTEGER })).body.budget_nano).toBe(Number.MAX_SAFE_INTEGER);
  });

  it("malformed ids are 400; unknown ones 404", async () => {
    expectError(await costOf("req_123"), 400, "validation_failed");
    expectError(await costOf(`req_${"A".repeat(32)}`), 400, "validation_failed");
    expectError(await costOf(`req_${"0".repeat(32)}`), 404, "request_not_found");
    expectError(await current("bad.id"), 400, "validation_failed");
    expectError(await current("no-such-client"), 404, "client_not_found");
    expectError(await getBudget("no-such-client"), 404, "client_not_found");
    expectError(await setBudget("no-such-client", { monthly_budget_nano: 5 }), 404, "client_not_found");
    expect((await env.DB.prepare("SELECT COUNT(*) AS n FROM client_budgets WHERE client_id = 'no-such-client'").first<{ n: number }>())!.n).toBe(0);
  });

  it("who may call what: no token 401, a key on /admin 403, another client's month 403 as for its history, another client's cost 404", async () => {
    await stop();
    const pool = await makePool({ costPerUnitNano: 1, capacity: 1_000_000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    const mine = await makeClient();
    const other = await makeClient();
    const noUsageScope = await makeClient({ scopes: ["execute"] });
    expect((await setBudget(other.id, { monthly_budget_nano: 777 })).status).toBe(200);
    const req = await enqueue({ template }, other.key);
    expect(req.status).toBe(202);
    const reqId = req.body.request.id;

    expectError(await call("GET", `/api/usage/${mine.id}/current`), 401, "unauthorized");
    expectError(await call("GET", `/api/cost/${reqId}`), 401, "unauthorized");
    expectError(await call("GET", `/admin/clients/${other.id}/budget`), 401, "unauthorized");
    expectError(await call("PUT", `/admin/clients/${other.id}/budget`, { json: { unlimited: true } }), 401, "unauthorized");
    expectError(await current(mine.id, "rmk_not_a_key"), 401, "unauthorized");

    expectError(await getBudget(other.id, other.key), 403, "forbidden");
    expectError(await setBudget(other.id, { unlimited: true }, other.key), 403, "forbidden");
    expectError(await setBudget(other.id, { unlimited: true }, INTERNAL), 403, "forbidden");
    expectError(await setBudget(other.id, { unlimited: true }, KEYS.acme), 403, "forbidden");

    // Another client's month is refused as its history is (403), whether it exists or not.
    expectError(await current(other.id, mine.key), 403, "forbidden");
    expectError(await call("GET", `/api/usage/${other.id}`, { token: mine.key }), 403, "forbidden");
    expectError(await current("no-such-client", mine.key), 403, "forbidden");
    expectError(await current(mine.id, noUsageScope.key), 403, "forbidden");
    expect((await current(mine.id, mine.key)).status).toBe(200);
    expect((await current(other.id, INTERNAL)).body).toMatchObject({ budget_nano: 777, in_flight_nano: 1 });

    // Another client's request does not exist for this key.
    expectError(await costOf(reqId, mine.key), 404, "request_not_found");
    expectError(await costOf(reqId, noUsageScope.key), 403, "forbidden");
    expectError(await costOf(reqId, INTERNAL), 403, "forbidden");
    expect((await costOf(reqId, other.key)).status).toBe(200);
    expect((await costOf(reqId)).body.client_id).toBe(other.id);

    // Nothing the refused calls asked for happened.
    expect((await getBudget(other.id)).body).toMatchObject({ budget_nano: 777, budget_source: "client", in_flight_nano: 1 });
    await cancelAll([reqId], other.key);
  });
});

describe("money in flight is reconciled with the scheduler", () => {
  it("an old estimate whose request is gone leaves flight; an old estimate of a queued request stays", async () => {
    await stop();
    const pool = await makePool({ costPerUnitNano: 1000, capacity: 1_000_000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 10 }]);
    const { id, key } = await makeClient();
    const queued = await enqueue({ template }, key);
    expect(queued.status).toBe(202);
    const orphan = "req_" + "0".repeat(32);
    // An admission whose enqueue never happened (admitted as an enqueue admits, through the object, so
    // its kept sum in flight counts it), then both it and the queued request's admission made two minutes old.
    expect(await clientStub(id).admit({ limitNano: null, source: "unlimited" }, [{ requestId: orphan, estimateNano: 5000 }])).toEqual([{ ok: true }]);
    await runInDurableObject(clientStub(id), async (_instance: ClientObject, state) => {
      state.storage.sql.exec("UPDATE in_flight SET admitted_at = ? WHERE request_id IN (?, ?)", Date.now() - 120_000, orphan, queued.body.request.id);
    });
    expect((await current(id)).body.in_flight_nano).toBe(10_000 + 5000);
    const { reconcileInFlight } = await import("../../src/services/budget");
    expect(await reconcileInFlight(env, Date.now())).toBe(1);
    expect((await current(id)).body.in_flight_nano).toBe(10_000);
    expect(await reconcileInFlight(env, Date.now())).toBe(0);
    await cancelAll([queued.body.request.id], key);
    expect((await current(id)).body.in_flight_nano).toBe(0);
  });
});
