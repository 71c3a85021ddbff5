import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { BudgetLimit } from "../../src/domain/budget";
import type { ClientObject } from "../../src/objects/client";

/**
 * The client's side of a scheduler shard's money lease (decision 008; ClientObject.lendShard): convert the
 * requests admitted under the hold into requests in flight, then replace the hold. Called on the object
 * directly, so each rule is checked at its exact boundary.
 */

let n = 0;
function freshClient(): DurableObjectStub<ClientObject> {
  n += 1;
  return env.CLIENT.get(env.CLIENT.idFromName(`sm-${crypto.randomUUID().slice(0, 8)}-${n}`));
}

const limit = (limitNano: number | null): BudgetLimit => ({ limitNano, source: limitNano === null ? "unlimited" : "client" });

/** The object's tables: requests in flight (count, sum) and the shards' holds by id. */
function tables(stub: DurableObjectStub<ClientObject>): Promise<{ rows: number; rowsNano: number; holds: Record<string, number> }> {
  return runInDurableObject(stub, (_o: ClientObject, state) => {
    const sql = state.storage.sql;
    const r = sql.exec<{ c: number; s: number }>("SELECT COUNT(*) AS c, COALESCE(SUM(estimate_nano), 0) AS s FROM in_flight").one();
    const holds = Object.fromEntries(sql.exec<{ id: string; nano: number }>("SELECT id, nano FROM money_holds WHERE id LIKE 'shard:%'").toArray().map((h) => [h.id, h.nano]));
    return { rows: r.c, rowsNano: r.s, holds };
  });
}

describe("ClientObject.lendShard", () => {
  it("lends up to `want` but at most half of what is left, and never less than `need`; refuses a need that does not fit with the budget as it stands", async () => {
    const stub = freshClient();
    const L = limit(1_000);
    expect(await stub.lendShard(L, { holder: "scheduler", convert: [], want: 10_000, need: 1 })).toEqual({ lent: 500, refused: null });
    expect(await stub.lendShard(L, { holder: "scheduler", convert: [], want: 100, need: 1 })).toEqual({ lent: 100, refused: null });
    // The need wins over half: all that is left, exactly.
    expect(await stub.lendShard(L, { holder: "scheduler", convert: [], want: 0, need: 1_000 })).toEqual({ lent: 1_000, refused: null });
    // A second shard's hold counts: with scheduler's 1,000 held nothing is left for it.
    const refused = await stub.lendShard(L, { holder: "scheduler-1", convert: [], want: 10, need: 1 });
    expect(refused.lent).toBe(0);
    expect(refused.refused).toMatchObject({ budget_nano: 1_000, spent_nano: 0, in_flight_nano: 1_000, remaining_nano: 0 });
    // One nano-dollar over is refused; exactly what is left is lent.
    await stub.lendShard(L, { holder: "scheduler", convert: [], want: 0, need: 0 });
    expect((await stub.lendShard(L, { holder: "scheduler", convert: [], want: 0, need: 1_001 })).refused).not.toBeNull();
    expect(await stub.lendShard(L, { holder: "scheduler", convert: [], want: 0, need: 1_000 })).toEqual({ lent: 1_000, refused: null });
    expect((await tables(stub)).holds).toEqual({ "shard:scheduler": 1_000 });
    // Unlimited: what is wanted.
    const free = freshClient();
    expect(await free.lendShard(limit(null), { holder: "scheduler", convert: [], want: 5_000_000, need: 3 })).toEqual({ lent: 5_000_000, refused: null });
  });

  it("converts before it replaces: in flight (rows + holds) never drops below the admitted requests, and converting again counts nothing twice", async () => {
    const stub = freshClient();
    const L = limit(10_000);
    expect(await stub.lendShard(L, { holder: "scheduler", convert: [], want: 4_000, need: 100 })).toEqual({ lent: 4_000, refused: null });
    // The shard admitted three requests of 1,000 under its 4,000: they become rows, and the hold is replaced (not added to).
    const admitted: Array<[string, number]> = [["r1", 1_000], ["r2", 1_000], ["r3", 1_000]];
    expect(await stub.lendShard(L, { holder: "scheduler", convert: admitted, want: 10_000, need: 0 })).toEqual({ lent: 3_500, refused: null });
    expect(await tables(stub)).toEqual({ rows: 3, rowsNano: 3_000, holds: { "shard:scheduler": 3_500 } });
    // The same exchange again (its answer was lost): the rows are not counted twice, the hold set again.
    expect(await stub.lendShard(L, { holder: "scheduler", convert: admitted, want: 10_000, need: 0 })).toEqual({ lent: 3_500, refused: null });
    expect(await tables(stub)).toEqual({ rows: 3, rowsNano: 3_000, holds: { "shard:scheduler": 3_500 } });
    // A restart's pieces convert under the hold as it stands; the last piece ends it.
    expect(await stub.lendShard(L, { holder: "scheduler", convert: [["r4", 500]], want: 0, need: 0, keepHold: true })).toEqual({ lent: 0, refused: null });
    expect(await tables(stub)).toEqual({ rows: 4, rowsNano: 3_500, holds: { "shard:scheduler": 3_500 } });
    expect(await stub.lendShard(L, { holder: "scheduler", convert: [["r5", 500]], want: 0, need: 0 })).toEqual({ lent: 0, refused: null });
    expect(await tables(stub)).toEqual({ rows: 5, rowsNano: 4_000, holds: {} });
    // The budget view counts the rows; a gone client (no limit) lends nothing.
    expect(await stub.budget(L)).toMatchObject({ in_flight_nano: 4_000, remaining_nano: 6_000 });
    expect(await stub.lendShard(null, { holder: "scheduler", convert: [], want: 100, need: 100 })).toEqual({ lent: 0, refused: null });
  });

  it("an admission sees a shard's new hold at once (the kept sum of holds is refreshed by the exchange)", async () => {
    const stub = freshClient();
    const L = limit(10_000);
    // Read the holds once so that their sum is kept, then have a shard take 5,000.
    expect(await stub.budget(L)).toMatchObject({ in_flight_nano: 0 });
    expect((await stub.lendShard(L, { holder: "scheduler", convert: [], want: 5_000, need: 0 })).lent).toBe(5_000);
    const [fits, over] = await stub.admit(L, [{ requestId: "a", estimateNano: 5_000 }, { requestId: "b", estimateNano: 1 }]);
    expect(fits!.ok).toBe(true);
    expect(over!.ok).toBe(false);
  });
});
