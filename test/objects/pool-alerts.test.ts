import { runDurableObjectAlarm } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { clearConfigCache } from "../../src/storage/config";
import { upsertPool } from "../../src/storage/pools";
import { ADMIN, call, consume, makePool } from "../support/helpers";

const stubOf = (pool: string) => env.POOL.get(env.POOL.idFromName(pool));

async function poolLowAlerts(pool: string, state: string) {
  const r = await call("GET", `/admin/alerts?kind=pool_low&state=${state}`, { token: ADMIN });
  expect(r.status).toBe(200);
  return (r.body.alerts as Array<{ subject: string; count: number; details: { level: number } }>).filter((a) => a.subject === pool);
}

describe("pool_low raised by the pool's own alarm", () => {
  it("spending to 10% exactly raises nothing; one unit more raises it once; a resize that lifts the level resolves it", async () => {
    const pool = await makePool({ capacity: 100 });
    expect((await consume(pool.id, 90)).status).toBe(200);
    await runDurableObjectAlarm(stubOf(pool.id));
    expect(await poolLowAlerts(pool.id, "open")).toHaveLength(0);

    expect((await consume(pool.id, 1)).status).toBe(200);
    await runDurableObjectAlarm(stubOf(pool.id));
    const open = await poolLowAlerts(pool.id, "open");
    expect(open).toHaveLength(1);
    expect(open[0]!.details.level).toBe(9);

    // Another spend while low: the state did not change, so no second row and no repeat count.
    expect((await consume(pool.id, 1)).status).toBe(200);
    await runDurableObjectAlarm(stubOf(pool.id));
    const still = await poolLowAlerts(pool.id, "open");
    expect(still).toHaveLength(1);
    expect(still[0]!.count).toBe(1);

    // Capacity 8 caps the level at 8; after one more unit, 7 of 8 is not low: that spend's alarm resolves the alert.
    await upsertPool(env.DB, { ...pool, capacity: 8 });
    clearConfigCache();
    expect((await consume(pool.id, 1)).status).toBe(200);
    await runDurableObjectAlarm(stubOf(pool.id));
    expect(await poolLowAlerts(pool.id, "open")).toHaveLength(0);
    expect(await poolLowAlerts(pool.id, "resolved")).toHaveLength(1);
  });
});
