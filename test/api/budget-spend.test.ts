import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { sha256Hex } from "../../src/http/auth";
import { clearConfigCache } from "../../src/storage/config";
import { closeLeases } from "../../src/services/leases";
import { returnMoney } from "../../src/services/money";
import { ADMIN, call, consume, eventually, expectError, INTERNAL, makePool } from "../support/helpers";

const current = (clientId: string) => call("GET", `/api/usage/${clientId}/current`, { token: ADMIN });
const setBudget = (clientId: string, nano: number) => call("PUT", `/admin/clients/${clientId}/budget`, { token: ADMIN, json: { monthly_budget_nano: nano } });
const poolStub = (pool: string) => env.POOL.get(env.POOL.idFromName(pool));
const reserve = (json: Record<string, unknown>) => call("POST", "/internal/reserve", { token: INTERNAL, json });
const release = (json: Record<string, unknown>) => call("POST", "/internal/release", { token: INTERNAL, json });

let cseq = 0;
/** A fresh client (its own month of spend), of a tier. */
async function makeClient(tier = "standard"): Promise<string> {
  cseq += 1;
  const id = `bs-${crypto.randomUUID().slice(0, 8)}-${cseq}`;
  await env.DB.batch([
    env.DB.prepare(
      `INSERT INTO clients (id, name, email, tier, monthly_budget_nano, status, created_at, updated_at) VALUES (?1, ?1, 'ops@example.com', ?2, NULL, 'active', 0, 0)`,
    ).bind(id, tier),
    env.DB.prepare(`INSERT INTO api_keys (id, client_id, key_hash, prefix, scopes, created_at) VALUES (?1, ?2, ?3, 'rmk_test', '[]', 0)`)
      .bind(`key_${id}`, id, await sha256Hex(`rmk_test_${id}`)),
  ]);
  clearConfigCache();
  return id;
}

/**
 * What an idle isolate does within seconds, now: report the grants made from token leases (their debits
 * learn their outbox seqs), hand the money leases back with that spend; then deliver the pools'
 * outboxes until the client's ledger holds `events` rows.
 */
async function settleMoney(pools: string[], clientId: string, events: number): Promise<void> {
  await closeLeases(env);
  await returnMoney(env);
  await eventually(async () => {
    await Promise.all(pools.map((p) => poolStub(p).flush()));
    const n = await env.DB.prepare("SELECT COUNT(*) AS n FROM usage_events WHERE client_id = ?1").bind(clientId).first<{ n: number }>();
    return n!.n === events;
  }, 10_000, `${events} ledger rows for ${clientId}`);
}

describe("budgets on every direct spend", () => {
  it("100 concurrent consumes where exactly 37 fit the budget: 37 granted, 63 refused with 402 and enqueue's explanation; then 37 spent, none in flight", async () => {
    const pool = await makePool({ costPerUnitNano: 1000, capacity: 1_000_000 });
    const id = await makeClient();
    const cost = 10_000;
    expect((await setBudget(id, 37 * cost + cost - 1)).status).toBe(200);

    const answers = await Promise.all(Array.from({ length: 100 }, () => consume(pool.id, 10, {}, id)));
    const granted = answers.filter((r) => r.status === 200);
    const refused = answers.filter((r) => r.status !== 200);
    expect(granted).toHaveLength(37);
    expect(refused).toHaveLength(63);
    for (const r of refused) {
      expectError(r, 402, "budget_exceeded");
      expect(r.body.error.details).toMatchObject({
        client_id: id, pool: pool.id, units: 10, estimate_nano: cost, budget_nano: 379_999, budget_source: "client", alternative: null,
        month: expect.any(String), resets_at: expect.any(Number),
      });
      const d = r.body.error.details;
      expect(d.spent_nano + d.in_flight_nano + cost).toBeGreaterThan(379_999);
      expect(d.remaining_nano).toBe(Math.max(0, 379_999 - d.spent_nano - d.in_flight_nano));
    }
    await settleMoney([pool.id], id, 37);
    // No unit was taken for a refused consume (units still lent to this isolate are not spent).
    const after = await poolStub(pool.id).availability(pool, null);
    expect(after.level + after.leased).toBe(1_000_000 - 370);
    // A slice of headroom the isolate took after the last hand-back (a refusal may ask for one) is
    // conservative, not spent: handed back, nothing stays in flight.
    const settled = await eventually(async () => {
      await returnMoney(env);
      const body = (await current(id)).body;
      return body.in_flight_nano === 0 ? body : null;
    }, 10_000, "money slices handed back");
    expect(settled).toMatchObject({ spent_nano: 37 * cost, in_flight_nano: 0, remaining_nano: cost - 1 });
    // Spent to the last nano-dollar that fits: one more consume of the same price is refused at once.
    expectError(await consume(pool.id, 10, {}, id), 402, "budget_exceeded");
    const cheap = await consume(pool.id, 9, {}, id);
    expect(cheap.status).toBe(200);
    expect(cheap.body.cost_nano).toBe(9_000);
  });

  it("a client with no budget left is refused at once on every path that spends, and spends nothing", async () => {
    const pool = await makePool({ costPerUnitNano: 5, capacity: 1000 });
    const id = await makeClient();
    expect((await setBudget(id, 4)).status).toBe(200);
    expectError(await consume(pool.id, 1, {}, id), 402, "budget_exceeded");
    const held = await reserve({ client_id: id, pool: pool.id, amount: 1 });
    expectError(held, 402, "budget_exceeded");
    expect(held.body.error.details).toMatchObject({ client_id: id, pool: pool.id, units: 1, estimate_nano: 5, budget_nano: 4, spent_nano: 0, in_flight_nano: 0, remaining_nano: 4 });
    // Over RPC, as KAM calls: the same REST operation answers, with the same error.
    const rpc = await env.KAM.fetch("https://kam/", { method: "POST", body: JSON.stringify({ method: "consume", args: [{ client_id: id, pool: pool.id, amount: 1 }] }) });
    expect(JSON.stringify(await rpc.json())).toContain("budget_exceeded");
    expect((await poolStub(pool.id).availability(pool, null)).level).toBe(1000);
    expect((await current(id)).body).toMatchObject({ spent_nano: 0, in_flight_nano: 0, concurrency_in_use: 0 });
    // A spend that costs nothing needs no budget.
    const free = await makePool({ costPerUnitNano: 0, capacity: 10 });
    expect((await consume(free.id, 3, {}, id)).status).toBe(200);
  });
});

describe("reservations hold a job slot and their price until released or expired", () => {
  it("a basic client (5 at once): the sixth reserve is refused with 429 quota_exceeded; a release frees the slot and its spend counts once", async () => {
    const pool = await makePool({ costPerUnitNano: 100, capacity: 1000 });
    const id = await makeClient("basic");
    expect((await setBudget(id, 1_000_000)).status).toBe(200);
    const held = [];
    for (let i = 0; i < 5; i++) {
      const r = await reserve({ client_id: id, pool: pool.id, amount: 10, ttl_ms: 60_000 });
      expect(r.status).toBe(200);
      held.push(r.body.reservation_id as string);
    }
    expect((await current(id)).body).toMatchObject({ concurrency_in_use: 5, in_flight_nano: 5 * 1000, spent_nano: 0 });
    const sixth = await reserve({ client_id: id, pool: pool.id, amount: 10 });
    expectError(sixth, 429, "quota_exceeded");
    expect(sixth.body.error.details).toMatchObject({ client_id: id, limit: "concurrent", limit_value: 5 });
    expect(Number(sixth.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect((await poolStub(pool.id).availability(pool, null)).level).toBe(950);

    const done = await release({ client_id: id, pool: pool.id, reservation_id: held[0], actual_used: 3 });
    expect(done.status).toBe(200);
    expect(done.body).toMatchObject({ consumed: 3, refunded: 7, cost_nano: 300 });
    // The slot is free; the 300 spent stay in flight until the pool's outbox delivers them, then are spent.
    expect((await current(id)).body).toMatchObject({ concurrency_in_use: 4, in_flight_nano: 4 * 1000 + 300 });
    await poolStub(pool.id).flush();
    expect((await current(id)).body).toMatchObject({ concurrency_in_use: 4, in_flight_nano: 4 * 1000, spent_nano: 300 });
    expect((await reserve({ client_id: id, pool: pool.id, amount: 10 })).status).toBe(200);
    // Releasing again is refused and changes nothing.
    expectError(await release({ client_id: id, pool: pool.id, reservation_id: held[0], actual_used: 3 }), 409, "reservation_closed");
    expect((await current(id)).body).toMatchObject({ concurrency_in_use: 5, spent_nano: 300 });
  });

  it("a reservation refused by the pool holds nothing; one that expires frees its slot", async () => {
    const pool = await makePool({ costPerUnitNano: 1, capacity: 50 });
    const id = await makeClient("basic");
    expect((await setBudget(id, 1_000_000)).status).toBe(200);
    expectError(await reserve({ client_id: id, pool: pool.id, amount: 60 }), 400, "amount_exceeds_capacity");
    expect((await reserve({ client_id: id, pool: pool.id, amount: 50, ttl_ms: 1000 })).status).toBe(200);
    expectError(await reserve({ client_id: id, pool: pool.id, amount: 1 }), 429, "rate_limited");
    expect((await current(id)).body).toMatchObject({ concurrency_in_use: 1, in_flight_nano: 50 });
    await eventually(async () => (await current(id)).body.concurrency_in_use === 0, 5_000, "the expired reservation's slot");
  });
});
