import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ClientObject } from "../../src/objects/client";
import { ADMIN, call, consume, eventually, readyToExecute, settled, sleep } from "../support/helpers";

/**
 * An execute's job slot is taken with its money, in the one call its admission makes to the client
 * object (ClientObject.admit with RunSlots): the immediate lane then asks that object for nothing
 * until it settles. A slot taken so for a request that stays queued is given back.
 */

const clientObject = (id: string) => env.CLIENT.get(env.CLIENT.idFromName(id));
const inUse = (id: string) => clientObject(id).inUse();

describe("an execute's job slot", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("comes with its money: the run asks the client object for no slot, holds it while it runs, and frees it when it settles", async () => {
    const { template, client } = await readyToExecute("exec-slot", { capacity: 100 });
    const acquire = vi.spyOn(ClientObject.prototype, "acquireJobs");
    const admit = vi.spyOn(ClientObject.prototype, "admit");
    const running = call("POST", "/api/execute", { token: client.key, json: { template, params: { tokens_used: 1, simulate: { latency_ms: 400 } } } });
    // Held while it runs: the one slot, taken by the admission.
    await eventually(async () => (await inUse(client.id)) === 1 || null, 3000, "the execute's slot held while it runs");
    const res = await running;
    expect(res.status).toBe(200);
    expect(res.body.request.status).toBe("completed");
    expect(admit).toHaveBeenCalledTimes(1);
    expect(admit.mock.calls[0]![3]).toMatchObject({ claims: [{ jobId: res.body.request.id, kind: "request" }] });
    expect(acquire.mock.calls.filter(([, claims]) => claims.some((c) => c.jobId === res.body.request.id))).toEqual([]);
    expect(await inUse(client.id)).toBe(0);
  });

  it("whose pool refuses is given back: the request waits queued, holding no slot, and runs when units come back", async () => {
    const { pool, template, client } = await readyToExecute("exec-slot", { capacity: 1, refillPerSec: 0, leases: "off" });
    expect((await consume(pool.id, 1)).status).toBe(200); // the pool's one unit, gone
    const res = await call("POST", "/api/execute", { token: client.key, json: { template, params: { tokens_used: 1 } } });
    expect(res.status).toBe(202);
    expect(res.body.request.status).toBe("queued");
    await eventually(async () => (await inUse(client.id)) === 0 || null, 3000, "the slot given back");
    // Still 0 a moment later: nothing else holds it.
    await sleep(200);
    expect(await inUse(client.id)).toBe(0);
    const patched = await call("PATCH", `/admin/pools/${pool.id}`, { token: ADMIN, json: { capacity: 10, refill_per_sec: 10 } });
    expect(patched.status).toBe(200);
    await settled(res.body.request.id, ["completed"], 8000, client.key);
    expect(await inUse(client.id)).toBe(0);
  });

  it("taken while dispatch is stopped is given back: the request waits queued and holds no slot", async () => {
    const { template, client } = await readyToExecute("exec-slot", { capacity: 100 });
    expect((await call("POST", "/admin/scheduler/stop", { token: ADMIN })).status).toBe(200);
    try {
      const res = await call("POST", "/api/execute", { token: client.key, json: { template, params: { tokens_used: 1 } } });
      expect(res.status).toBe(202);
      expect(res.body.request.status).toBe("queued");
      await eventually(async () => (await inUse(client.id)) === 0 || null, 3000, "the slot given back");
      await sleep(200);
      expect(await inUse(client.id)).toBe(0);
    } finally {
      expect((await call("POST", "/admin/scheduler/start", { token: ADMIN })).status).toBe(200);
    }
  });

  it("of a repeated idempotency key, sent twice at once, is held once and given back: one run, no slot left", async () => {
    const { template, client } = await readyToExecute("exec-slot", { capacity: 100 });
    const json = { template, params: { tokens_used: 1, simulate: { latency_ms: 100 } }, idempotency_key: `k-${crypto.randomUUID()}` };
    const [a, b] = await Promise.all([
      call("POST", "/api/execute", { token: client.key, json }),
      call("POST", "/api/execute", { token: client.key, json }),
    ]);
    expect([a.status, b.status].every((s) => s === 200 || s === 202)).toBe(true);
    expect(a.body.request.id).toBe(b.body.request.id);
    const done = await settled(a.body.request.id, ["completed"], 8000, client.key);
    expect(done.attempts).toBe(1);
    await eventually(async () => (await inUse(client.id)) === 0 || null, 3000, "no slot left");
    await sleep(200);
    expect(await inUse(client.id)).toBe(0);
  });
});
