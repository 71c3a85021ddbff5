import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ClientObject } from "../../src/objects/client";
import { ADMISSION_RETRY_MS } from "../../src/objects/scheduler/admission";
import { PoolObject } from "../../src/objects/pool";
import { ADMIN, call, captureLog, enqueue, eventually, makeClient, makePool, makeTemplate, requestOf, settled, sleep, spendOf } from "../support/helpers";

/** A switch for a fault: on while `left` > 0 (each failure counts one down), or for good with Infinity. */
interface Fault {
  left: number;
  calls: number;
}

/**
 * The client objects' `acquireJobs` fails while `fault.left` > 0 (every caller's, in this file only a
 * shard's admission: an enqueue's money and an execute's slot go through `admit`, and no test here
 * holds a reservation or an allocation), so this is the admission's view of a client object down.
 */
function failClients(fault: Fault): void {
  const acquireJobs = ClientObject.prototype.acquireJobs;
  vi.spyOn(ClientObject.prototype, "acquireJobs").mockImplementation(function (this: ClientObject, ...args) {
    fault.calls += 1;
    if (fault.left-- > 0) throw new Error("client object unreachable");
    return acquireJobs.apply(this, args);
  });
}

/** The pool `poolId`'s `reserveMany` fails while `fault.left` > 0 (other pools answer). */
function failPool(poolId: string, fault: Fault): void {
  const reserveMany = PoolObject.prototype.reserveMany;
  vi.spyOn(PoolObject.prototype, "reserveMany").mockImplementation(function (this: PoolObject, cfg, items) {
    if (cfg.id === poolId) {
      fault.calls += 1;
      if (fault.left-- > 0) throw new Error("pool object unreachable");
    }
    return reserveMany.call(this, cfg, items);
  });
}

/** Jobs the client object holds now (slots). */
const slotsOf = (clientId: string) => env.CLIENT.get(env.CLIENT.idFromName(clientId)).inUse();
/** A pool's active reservations, as its object reports them. */
const reservationsOf = async (poolId: string) => (await call("GET", `/admin/pools/${poolId}`, { token: ADMIN })).body.live.active_reservations as number;

describe("an admission that throws (a client or pool object unreachable)", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("sends its requests back to their queue at once, to run ADMISSION_RETRY_MS later (not counted as an attempt): each completes once, its cost counted once", async () => {
    const pool = await makePool({ capacity: 100, costPerUnitNano: 1000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 2 }], { timeoutMs: 5000 });
    const client = await makeClient("admit-client-down");
    const lines = captureLog();
    const fault: Fault = { left: 1, calls: 0 };
    failClients(fault);
    const r = await enqueue({ template, queue: "fast" }, client.key);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const id: string = r.body.request.id;
    const failed = await eventually(async () => lines.find((l) => l.msg === "admission_failed") ?? null, 5000, "the admission to fail");
    expect(failed).toMatchObject({ level: "error", count: 1, error: "Error: client object unreachable", retry_in_ms: ADMISSION_RETRY_MS });
    expect(failed.requests).toEqual([{ request_id: id, trace_id: r.body.trace_id }]);
    const failedAt = Date.now();
    // Back in its queue (it was left claimed, `dispatching`, out of the lease sweep's reach until the object restarted).
    expect(await requestOf(id, client.key)).toMatchObject({ status: "queued", attempts: 0 });
    const done = await settled(id, ["completed", "failed"], 10_000, client.key);
    expect(done).toMatchObject({ status: "completed", attempts: 1 });
    expect(done.started_at).toBeGreaterThanOrEqual(failedAt + ADMISSION_RETRY_MS - 250);
    expect(fault.calls).toBe(2);
    expect(lines.filter((l) => l.msg === "admission_failed")).toHaveLength(1);
    expect(await slotsOf(client.id)).toBe(0);
    await eventually(async () => {
      const s = await spendOf(client.id);
      return s.spent_nano === 2000 && s.in_flight_nano === 0 ? s : null;
    }, 5000, "the client's spend of one run");
    expect(await reservationsOf(pool.id)).toBe(0);
  }, 30_000);

  it("gives back at once the slots the client object gave and the units another pool gave, and is tried again, not in a loop, while the pool stays down", async () => {
    const up = await makePool({ capacity: 100, costPerUnitNano: 1000 });
    const down = await makePool({ capacity: 100, costPerUnitNano: 1000 });
    // Leases of 20 s + the margin: what was taken would otherwise stay held that long.
    const template = await makeTemplate([{ pool: up.id, amount: 3 }, { pool: down.id, amount: 1 }], { timeoutMs: 20_000 });
    const client = await makeClient("admit-pool-down");
    const lines = captureLog();
    const fault: Fault = { left: Infinity, calls: 0 };
    failPool(down.id, fault);
    // One batch: one chunk, so one pool call a try.
    const r = await enqueue({ requests: Array.from({ length: 3 }, () => ({ template, queue: "normal" })) }, client.key);
    expect(r.status).toBe(200);
    expect(r.body.accepted).toBe(3);
    const ids: string[] = r.body.results.map((x: { request: { id: string } }) => x.request.id);
    expect(ids).toHaveLength(3);
    await eventually(async () => (fault.calls >= 2 ? true : null), 8000, "a retry of the failed admission");
    // Between tries: every request queued, no slot held, no units held in the pool that answered (given
    // back in the background, within moments: a lease here is 21 s).
    for (const id of ids) expect(await requestOf(id, client.key)).toMatchObject({ status: "queued", attempts: 0 });
    await eventually(async () => (await slotsOf(client.id)) === 0 && (await reservationsOf(up.id)) === 0, 500, "the slots and units given back");
    expect(await reservationsOf(down.id)).toBe(0);
    // Not in a loop: the failed pass's alarm is retried by the runtime, with backoff, and the requests wait ADMISSION_RETRY_MS.
    const before = fault.calls;
    await sleep(2500);
    expect(fault.calls - before).toBeLessThanOrEqual(2);
    const failures = lines.filter((l) => l.msg === "admission_failed");
    expect(failures.length).toBe(fault.calls);
    for (const f of failures) expect(f).toMatchObject({ level: "error", count: 3, error: "Error: pool object unreachable", retry_in_ms: ADMISSION_RETRY_MS });
    expect(lines.some((l) => l.msg === "admission_release_failed")).toBe(false);
    fault.left = 0;
    // The pool is back: the next pass (here, one an enqueue brings) admits them.
    const next = await enqueue({ template, queue: "normal" }, client.key);
    expect(next.status).toBe(202);
    ids.push(next.body.request.id);
    for (const id of ids) expect(await settled(id, ["completed", "failed"], 10_000, client.key)).toMatchObject({ status: "completed", attempts: 1 });
    expect(await slotsOf(client.id)).toBe(0);
    expect(await reservationsOf(up.id)).toBe(0);
    expect(await reservationsOf(down.id)).toBe(0);
    // Each ran once: 3 + 1 units at 1,000 nano-dollars, four times.
    await eventually(async () => {
      const s = await spendOf(client.id);
      return s.spent_nano === 16_000 && s.in_flight_nano === 0 ? s : null;
    }, 5000, "the client's spend of four runs");
  }, 40_000);

  it("in the immediate lane (its pool object unreachable for a while): the execute is answered 202 with its request queued (not an error), gives back the slot it took with its money, and runs on the retry", async () => {
    const pool = await makePool({ capacity: 100 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }], { timeoutMs: 5000 });
    const client = await makeClient("admit-execute");
    const lines = captureLog();
    // The pool object fails twice: the execute's own reserve, beside its money (src/services/run-now.ts),
    // then its shard's admission, which asks again for what the execute could not take.
    const fault: Fault = { left: 2, calls: 0 };
    failPool(pool.id, fault);
    const r = await call("POST", "/api/execute", { token: client.key, json: { template, params: { simulate: { latency_ms: 0 } } } });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    expect(r.body.request).toMatchObject({ status: "queued", queue: "immediate", attempts: 0 });
    expect(lines.filter((l) => l.msg === "admission_failed")).toHaveLength(1);
    await eventually(async () => (await slotsOf(client.id)) === 0 || null, 3000, "the execute's slot given back");
    const done = await settled(r.body.request.id, ["completed", "failed"], 10_000, client.key);
    expect(done).toMatchObject({ status: "completed", attempts: 1 });
    expect(fault.calls).toBe(3);
    expect(await slotsOf(client.id)).toBe(0);
    expect(await reservationsOf(pool.id)).toBe(0);
  }, 30_000);
});
