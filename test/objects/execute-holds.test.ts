import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ClientObject } from "../../src/objects/client";
import { PoolObject } from "../../src/objects/pool";
import { settings } from "../../src/settings";
import { ADMIN, call, eventually, INTERNAL, makeClient, makePool, makeTemplate, readyToExecute, settled, sleep } from "../support/helpers";

/**
 * What an execute that can run at once takes before it reaches its shard (src/services/run-now.ts):
 * its job slot with its money, in the one call it makes to the client object (ClientObject.admit with
 * RunSlots), and its units beside that call. The immediate lane then asks neither object for anything
 * until it settles. What is taken for a request that is refused or stays queued is given back.
 */

const clientObject = (id: string) => env.CLIENT.get(env.CLIENT.idFromName(id));
const inUse = (id: string) => clientObject(id).inUse();
/** A pool's active reservations, as its object reports them. */
const reservationsOf = async (poolId: string) => (await call("GET", `/admin/pools/${poolId}`, { token: ADMIN })).body.live.active_reservations as number;
/** Nothing held, now and a moment later (a background give-back has arrived and nothing else took it). */
async function nothingHeld(clientId: string, poolId: string): Promise<void> {
  await eventually(async () => ((await inUse(clientId)) === 0 && (await reservationsOf(poolId)) === 0) || null, 3000, "the slot and units given back");
  await sleep(200);
  expect(await inUse(clientId)).toBe(0);
  expect(await reservationsOf(poolId)).toBe(0);
}

describe("what an execute takes before its shard", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("its slot comes with its money and its units beside it: the run asks neither object again, holds both while it runs, and settles them", async () => {
    const { pool, template, client } = await readyToExecute("exec-slot", { capacity: 100, costPerUnitNano: 1000 });
    const acquire = vi.spyOn(ClientObject.prototype, "acquireJobs");
    const admit = vi.spyOn(ClientObject.prototype, "admit");
    const reserve = vi.spyOn(PoolObject.prototype, "reserveMany");
    const running = call("POST", "/api/execute", { token: client.key, json: { template, params: { tokens_used: 1, simulate: { latency_ms: 400 } } } });
    // Held while it runs: the one slot, taken by the admission.
    await eventually(async () => (await inUse(client.id)) === 1 || null, 3000, "the execute's slot held while it runs");
    const res = await running;
    expect(res.status).toBe(200);
    expect(res.body.request.status).toBe("completed");
    expect(admit).toHaveBeenCalledTimes(1);
    expect(admit.mock.calls[0]![3]).toMatchObject({ claims: [{ jobId: res.body.request.id, kind: "request" }] });
    expect(acquire.mock.calls.filter(([, claims]) => claims.some((c) => c.jobId === res.body.request.id))).toEqual([]);
    // One reservation, made beside the money, settled with what the run used.
    const reserves = reserve.mock.calls.filter(([, items]) => items.some((i) => i.requestId === res.body.request.id));
    expect(reserves).toHaveLength(1);
    // Made beside the money (held a second past the lease the shard's claim gives), not by the shard's admission.
    expect(reserves[0]![1][0]!.ttlMs).toBe(5000 + settings(env).LEASE_MARGIN_MS + 1000);
    expect(res.body.request.actual).toEqual([{ pool: pool.id, units: 1, cost_nano: 1000 }]);
    await nothingHeld(client.id, pool.id);
  });

  it("refused for its money (402) gives back the units taken beside it", async () => {
    const pool = await makePool({ capacity: 100, costPerUnitNano: 1000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    const client = await makeClient("exec-402");
    expect((await call("PUT", `/admin/clients/${client.id}/budget`, { token: ADMIN, json: { monthly_budget_nano: 1 } })).status).toBe(200);
    expect((await call("POST", "/admin/scheduler/start", { token: ADMIN })).status).toBe(200);
    const res = await call("POST", "/api/execute", { token: client.key, json: { template, params: { tokens_used: 1 } } });
    expect(res.status, JSON.stringify(res.body)).toBe(402);
    expect(res.body.error.code).toBe("budget_exceeded");
    await nothingHeld(client.id, pool.id);
  });

  it("of a client at its concurrency limit waits queued, and gives back the units taken beside its money", async () => {
    const { pool, template, client } = await readyToExecute("exec-full", { capacity: 100 });
    expect((await call("PUT", `/admin/clients/${client.id}/quota`, { token: ADMIN, json: { max_concurrent: 1, cpu_millicores: null, memory_mb: null } })).status).toBe(200);
    const holder = await clientObject(client.id).acquireJobs({ maxConcurrent: 1, cpuMillicores: null, memoryMb: null, poolDaily: {}, weight: null }, [{ jobId: "holder", kind: "request", expiresAt: Date.now() + 60_000 }]);
    expect(holder[0]!.ok).toBe(true);
    const res = await call("POST", "/api/execute", { token: client.key, json: { template, params: { tokens_used: 1 } } });
    expect(res.status).toBe(202);
    expect(res.body.request.status).toBe("queued");
    await eventually(async () => (await reservationsOf(pool.id)) === 0 || null, 3000, "the units given back");
    expect(await inUse(client.id)).toBe(1); // the holder's, never two
    await clientObject(client.id).releaseJobs(["holder"]);
    await settled(res.body.request.id, ["completed"], 8000, client.key);
    await nothingHeld(client.id, pool.id);
  });

  it("whose pool refuses are given back: the request waits queued, holding no slot and no units, and runs when units come back", async () => {
    const { pool, template, client } = await readyToExecute("exec-slot", { capacity: 1, refillPerSec: 0, leases: "off" });
    // The pool's one unit, held by a reservation of another client's.
    const other = await call("POST", "/internal/reserve", { token: INTERNAL, json: { client_id: "acme", pool: pool.id, amount: 1 } });
    expect(other.status).toBe(200);
    const res = await call("POST", "/api/execute", { token: client.key, json: { template, params: { tokens_used: 1 } } });
    expect(res.status).toBe(202);
    expect(res.body.request.status).toBe("queued");
    // A pass may retry it meanwhile (any wake of the shard): its admission takes the slot, the pool
    // refuses, the slot goes back. So the check is a moment when none holds it and none takes it within
    // the next 200 ms; a read after that moment may fall inside such a retry (one CI run read 1 there).
    const heldNone = async () => (await inUse(client.id)) === 0 && (await sleep(200), (await inUse(client.id)) === 0);
    await eventually(async () => (await heldNone()) || null, 5000, "the slot given back, and not taken again");
    expect(await reservationsOf(pool.id)).toBe(1); // the other client's only: the refused request never holds a unit
    // The unit comes back: the pool wakes the shard whose request waits for it.
    const released = await call("POST", "/internal/release", { token: INTERNAL, json: { client_id: "acme", pool: pool.id, reservation_id: other.body.reservation_id, actual_used: 0 } });
    expect(released.status).toBe(200);
    await settled(res.body.request.id, ["completed"], 8000, client.key);
    await nothingHeld(client.id, pool.id);
  });

  it("taken while dispatch is stopped is given back: the request waits queued and holds no slot and no units", async () => {
    const { pool, template, client } = await readyToExecute("exec-slot", { capacity: 100 });
    expect((await call("POST", "/admin/scheduler/stop", { token: ADMIN })).status).toBe(200);
    try {
      const res = await call("POST", "/api/execute", { token: client.key, json: { template, params: { tokens_used: 1 } } });
      expect(res.status).toBe(202);
      expect(res.body.request.status).toBe("queued");
      await nothingHeld(client.id, pool.id);
    } finally {
      expect((await call("POST", "/admin/scheduler/start", { token: ADMIN })).status).toBe(200);
    }
  });

  it("of a repeated idempotency key, sent twice at once, is given back for the one that is not run: one run, nothing left held", async () => {
    const { pool, template, client } = await readyToExecute("exec-slot", { capacity: 100 });
    const json = { template, params: { tokens_used: 1, simulate: { latency_ms: 100 } }, idempotency_key: `k-${crypto.randomUUID()}` };
    const [a, b] = await Promise.all([
      call("POST", "/api/execute", { token: client.key, json }),
      call("POST", "/api/execute", { token: client.key, json }),
    ]);
    expect([a.status, b.status].every((s) => s === 200 || s === 202)).toBe(true);
    expect(a.body.request.id).toBe(b.body.request.id);
    const done = await settled(a.body.request.id, ["completed"], 8000, client.key);
    expect(done.attempts).toBe(1);
    await nothingHeld(client.id, pool.id);
  });
});
