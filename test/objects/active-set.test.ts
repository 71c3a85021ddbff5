import { runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { SchedulerObject } from "../../src/objects/scheduler";
import type { PoolConfig } from "../../src/domain/types";
import { ADMIN, call, eventually, makeClient, makePool, makeTemplate, requestOf, shardOf, STORED_REQUESTS } from "../support/helpers";

/**
 * QueueStore.active: the live requests dispatching or running, which the lease sweep and the in-flight
 * cache keys walk at every pass instead of the whole backlog. It must be exactly the live rows in those
 * statuses, through every way a request moves: claimed and started, refused and requeued, finished,
 * cancelled queued or running, and loaded again after a restart.
 */

type Store = { active: Set<string>; live: Map<string, { id: string; status: string }>; admitting: Set<string>; epoch: number };
const storeOf = (i: SchedulerObject) => (i as unknown as { store: Store }).store;

/**
 * One look at the shard: its active set and the live rows in dispatching or running (both sorted: they
 * must agree), every live row's status, the claims being admitted and the queued index's epoch.
 */
const snapshot = (clientId: string) =>
  runInDurableObject(shardOf(clientId), (i: SchedulerObject) => {
    const store = storeOf(i);
    const rows = [...store.live.values()];
    return {
      active: [...store.active].sort(),
      live: rows.filter((r) => r.status === "dispatching" || r.status === "running").map((r) => r.id).sort(),
      status: Object.fromEntries(rows.map((r) => [r.id, r.status])) as Record<string, string>,
      admitting: store.admitting.size,
      epoch: store.epoch,
    };
  });
const activeAndLive = async (clientId: string) => {
  const { active, live } = await snapshot(clientId);
  return { active, live };
};

/** A fresh pool, a template on it with a 30 s timeout (the sample worker holds jobs up to 8 s here), a fresh client, dispatch on. */
async function ready(pool: Partial<Omit<PoolConfig, "version">>) {
  const made = await makePool(pool);
  const template = await makeTemplate([{ pool: made.id, amount: 1 }], { timeoutMs: 30_000 });
  const client = await makeClient("active-set");
  expect((await call("POST", "/admin/scheduler/start", { token: ADMIN })).status).toBe(200);
  return { pool: made, template, client };
}

describe("the shard's set of dispatching and running requests", () => {
  it("is exactly the live rows in those statuses: runs, refusals back to the queue, cancels queued and running", async () => {
    // Two units and no refill: two requests run, the rest are claimed, refused and requeued at every pass.
    const { template, client } = await ready({ capacity: 2, refillPerSec: 0, leases: "off" });
    const ids: string[] = [];
    for (let i = 0; i < 2; i += 1) {
      const res = await call("POST", "/api/queue/enqueue", { token: client.key, json: { template, queue: "fast", params: { tokens_used: 1, simulate: { latency_ms: 8000 } } } });
      expect(res.status).toBe(202);
      ids.push(res.body.request.id);
    }
    // Both running (held 8 s by the sample worker, time enough for what follows on a busy machine): both in the set.
    const running = await eventually(async () => {
      const s = await activeAndLive(client.id);
      return s.active.length === 2 ? s : null;
    }, 5000, "two running");
    expect(running.active).toEqual([...ids].sort());
    expect(running.live).toEqual(running.active);

    // Three more, queued while dispatch is stopped. Then a pass claims them (the queued index's epoch
    // +1), the empty pool refuses them and they go back to their queue (+1 each): out of the set.
    expect((await call("POST", "/admin/scheduler/stop", { token: ADMIN })).status).toBe(200);
    const waiting: string[] = [];
    for (let i = 0; i < 3; i += 1) {
      const res = await call("POST", "/api/queue/enqueue", { token: client.key, json: { template, queue: "fast", params: { tokens_used: 1 } } });
      waiting.push(res.body.request.id);
    }
    const before = await snapshot(client.id);
    expect(waiting.map((id) => before.status[id])).toEqual(["queued", "queued", "queued"]);
    expect((await call("POST", "/admin/scheduler/start", { token: ADMIN })).status).toBe(200);
    const afterRefusal = await eventually(async () => {
      const s = await snapshot(client.id);
      return s.epoch >= before.epoch + 4 && s.admitting === 0 ? s : null;
    }, 5000, "claimed, refused and requeued");
    expect(afterRefusal.active).toEqual(afterRefusal.live);
    expect(afterRefusal.active).toEqual([...ids].sort());
    expect(waiting.map((id) => afterRefusal.status[id])).toEqual(["queued", "queued", "queued"]);

    // A running one cancelled: it leaves the set at once (the unit it gave back may already be taken
    // by a waiting request, in the set as it should be).
    expect((await call("POST", `/api/execution/${ids[0]}/cancel`, { token: client.key })).status).toBe(200);
    const afterCancel = await activeAndLive(client.id);
    expect(afterCancel.active).not.toContain(ids[0]);
    expect(afterCancel.active).toContain(ids[1]);
    expect(afterCancel.live).toEqual(afterCancel.active);

    // The cancel gave its unit back: the oldest waiting request runs on it. The other finishes too,
    // and the set empties.
    await eventually(async () => (await activeAndLive(client.id)).active.length === 0 || null, 20_000, "both settled");
    expect((await requestOf(ids[1]!, client.key)).status).toBe("completed");
    expect((await requestOf(waiting[0]!, client.key)).status).toBe("completed");
    // A queued one cancelled: it was never in the set, which stays as the live rows say.
    expect((await call("POST", `/api/execution/${waiting[2]}/cancel`, { token: client.key })).status).toBe(200);
    expect(await activeAndLive(client.id)).toEqual({ active: [], live: [] });
    expect((await requestOf(waiting[1]!, client.key)).status).toBe("queued");
  });

  it("is loaded again after a restart from the launch records (a running request's row is written when its attempt ends)", async () => {
    const { template, client } = await ready({ capacity: 10 });
    const res = await call("POST", "/api/queue/enqueue", { token: client.key, json: { template, queue: "fast", params: { tokens_used: 1, simulate: { latency_ms: 6000 } } } });
    const id: string = res.body.request.id;
    // Running (started, its chunk's launch record written), not only claimed: a claim is in memory only until its start.
    await eventually(async () => ((await snapshot(client.id)).status[id] === "running" ? true : null), 5000, "running");
    // A fresh copy of the object reads the table (as after a restart): the running row is in its set.
    const reloaded = await runInDurableObject(shardOf(client.id), (i: SchedulerObject, state) => {
      const store = storeOf(i) as Store & { load(): void; live: Map<string, unknown>; queued: Map<string, unknown>; plans: Map<string, unknown> };
      store.active.clear();
      store.live.clear();
      store.queued.clear();
      store.plans.clear();
      store.load();
      // The attempts launched and not ended: in the launch records, not in the rows (which still say queued).
      const stored = state.storage.sql.exec<{ id: string }>("SELECT j.value ->> 0 AS id FROM launches, json_each(launches.rows) AS j").toArray().map((r) => r.id);
      const row = state.storage.sql.exec<{ status: string; attempts: number }>(`SELECT status, attempts FROM ${STORED_REQUESTS} WHERE id = ?`, id).one();
      const view = (store.live.get(id) ?? {}) as { status?: string; attempts?: number };
      return { active: [...store.active].sort(), stored: stored.sort(), row, view: { status: view.status, attempts: view.attempts } };
    });
    expect(reloaded.active).toContain(id);
    expect(reloaded.active).toEqual(reloaded.stored);
    expect(reloaded.row).toEqual({ status: "queued", attempts: 0 });
    expect(reloaded.view).toEqual({ status: "running", attempts: 1 });
    await eventually(async () => ((await activeAndLive(client.id)).active.length === 0 ? true : null), 20_000, "settled after the reload");
  });
});
