import { afterEach, describe, expect, it, vi } from "vitest";
import { ClientObject } from "../../src/objects/client";
import { SchedulerObject } from "../../src/objects/scheduler";
import { ADMIN, call, captureLog, eventually, readyToExecute, settled, sleep, spendOf } from "../support/helpers";

/**
 * An enqueue or execute whose client or scheduler object fails mid-call (unreachable, reset, overloaded)
 * is answered 503 `unavailable` with Retry-After, a status its operation declares (the contract check of
 * every call() holds it to the document), and its cause is logged, not sent. For the client object
 * nothing is queued and the units taken beside it go back; for a shard the answer asks for a retry with
 * the same idempotency key, which then finds the request once.
 */

/** A pool's active reservations, as its object reports them. */
const reservationsOf = async (poolId: string) => (await call("GET", `/admin/pools/${poolId}`, { token: ADMIN })).body.live.active_reservations as number;
/** Requests queued or running, every shard's (each test ends with none). */
const backlogOf = async (key: string) => {
  const { scheduler } = (await call("GET", "/api/queue/status", { token: key })).body as { scheduler: { queued: number; in_flight: number } };
  return scheduler.queued + scheduler.in_flight;
};

describe("an object that cannot be reached during an enqueue or execute", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("the client object: an execute is answered 503 with Retry-After, its units are given back, nothing is queued, and the cause is only in the log", async () => {
    const { pool, template, client } = await readyToExecute("down-client", { capacity: 10 });
    const lines = captureLog();
    vi.spyOn(ClientObject.prototype, "admit").mockRejectedValue(new Error("Network connection lost (secret-detail)"));
    const res = await call("POST", "/api/execute", { token: client.key, json: { template, params: { tokens_used: 1 } } });
    expect(res.status, JSON.stringify(res.body)).toBe(503);
    expect(res.body.error.code).toBe("unavailable");
    expect(res.body.error.details).toEqual({ client_id: client.id });
    expect(res.headers.get("retry-after")).toBe("1");
    expect(JSON.stringify(res.body)).not.toContain("secret-detail");
    const logged = lines.filter((l) => l.msg === "object_unreachable");
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ level: "error", object: "client", client_id: client.id, trace_id: res.body.trace_id });
    expect(String(logged[0]!.error)).toContain("Network connection lost");
    // The unit reserved beside the money went back before the answer did.
    expect(await reservationsOf(pool.id)).toBe(0);
    vi.restoreAllMocks();
    expect(await backlogOf(client.key)).toBe(0);
    expect(await spendOf(client.id)).toMatchObject({ spent_nano: 0, in_flight_nano: 0 });
    // Reachable again: the same execute runs.
    const again = await call("POST", "/api/execute", { token: client.key, json: { template, params: { tokens_used: 1 } } });
    expect(again.status).toBe(200);
    expect(again.body.request.status).toBe("completed");
  });

  it("the client object: an enqueue of one or of a batch is answered 503 and queues nothing", async () => {
    const { template, client } = await readyToExecute("down-client-enq", { capacity: 10 });
    expect((await call("POST", "/admin/scheduler/stop", { token: ADMIN })).status).toBe(200);
    const admit = vi.spyOn(ClientObject.prototype, "admit").mockRejectedValue(new Error("Durable Object reset because its code was updated."));
    // A single enqueue's money is asked of the client by its shard (decision 008: its money lease).
    const lend = vi.spyOn(ClientObject.prototype, "lendShard").mockRejectedValue(new Error("Durable Object reset because its code was updated."));
    const one = await call("POST", "/api/queue/enqueue", { token: client.key, json: { template, params: {} } });
    expect(one.status).toBe(503);
    expect(one.body.error.code).toBe("unavailable");
    expect(one.headers.get("retry-after")).toBe("1");
    const batch = await call("POST", "/api/queue/enqueue", { token: client.key, json: { requests: [{ template, params: {} }, { template, params: {} }] } });
    expect(batch.status).toBe(503);
    expect(batch.body.error.code).toBe("unavailable");
    expect(one.body.error.message).toContain("nothing was queued");
    expect(lend).toHaveBeenCalledTimes(1);
    expect(admit).toHaveBeenCalledTimes(1);
    vi.restoreAllMocks();
    expect(await backlogOf(client.key)).toBe(0);
    expect(await spendOf(client.id)).toMatchObject({ in_flight_nano: 0 });
    const queued = await call("POST", "/api/queue/enqueue", { token: client.key, json: { template, params: {} } });
    expect(queued.status).toBe(202);
    expect(await backlogOf(client.key)).toBe(1);
    expect((await call("DELETE", `/api/queue/${queued.body.request.id}`, { token: client.key })).status).toBe(200);
  });

  it("the scheduler shard: an execute is answered 503 naming the shard, and a retry with the same idempotency key runs it once", async () => {
    const { template, client } = await readyToExecute("down-shard", { capacity: 10 });
    const lines = captureLog();
    const real = SchedulerObject.prototype.execute;
    // The shard takes the request, then its answer is lost.
    const execute = vi.spyOn(SchedulerObject.prototype, "execute").mockImplementationOnce(async function (this: SchedulerObject, ...args) {
      await real.apply(this, args);
      throw new Error("Network connection lost.");
    });
    const spec = { template, params: { tokens_used: 1 }, idempotency_key: "down-shard-1" };
    const res = await call("POST", "/api/execute", { token: client.key, json: spec });
    expect(res.status, JSON.stringify(res.body)).toBe(503);
    expect(res.body.error.code).toBe("unavailable");
    expect(res.body.error.message).toContain("idempotency key");
    expect(typeof res.body.error.details.shard).toBe("number");
    const firstId: string = res.body.error.details.request_id;
    expect(firstId).toMatch(/^req_/);
    expect(res.headers.get("retry-after")).toBe("1");
    expect(lines.filter((l) => l.msg === "object_unreachable")).toMatchObject([{ object: "scheduler", shard: res.body.error.details.shard, trace_id: res.body.trace_id }]);
    const retry = await call("POST", "/api/execute", { token: client.key, json: spec });
    expect([200, 202]).toContain(retry.status);
    // The retry found the request the lost answer was about (the id the 503 named), rather than making another.
    expect(retry.body.request.id).toBe(firstId);
    await settled(retry.body.request.id, ["completed"], 8000, client.key);
    expect(execute).toHaveBeenCalledTimes(2);
    // One request for the key: the retry found the first.
    await sleep(100);
    const runs = (await call("GET", `/api/execution/${retry.body.request.id}`, { token: client.key })).body.request;
    expect(runs.attempts).toBe(1);
    await eventually(async () => (await backlogOf(client.key)) === 0 || null, 3000, "nothing left queued or running");
  });

  it("the scheduler shard: an enqueue is answered 503", async () => {
    const { template, client } = await readyToExecute("down-shard-enq", { capacity: 10 });
    vi.spyOn(SchedulerObject.prototype, "enqueue").mockImplementation(() => {
      throw new Error("Durable Object is overloaded.");
    });
    const res = await call("POST", "/api/queue/enqueue", { token: client.key, json: { requests: [{ template, params: {} }] } });
    expect(res.status).toBe(503);
    expect(res.body.error.code).toBe("unavailable");
    expect(res.body.error.details).toHaveProperty("shard");
    expect(res.body.error.details.request_ids).toHaveLength(1);
  });

  it("the scheduler shard, asked whether an idempotency key was used: 503 before anything is booked", async () => {
    const { template, client } = await readyToExecute("down-shard-key", { capacity: 10 });
    vi.spyOn(SchedulerObject.prototype, "findByKey").mockImplementation(() => {
      throw new Error("Network connection lost.");
    });
    const res = await call("POST", "/api/queue/enqueue", { token: client.key, json: { template, params: {}, idempotency_key: "k-1" } });
    expect(res.status, JSON.stringify(res.body)).toBe(503);
    expect(res.body.error).toMatchObject({ code: "unavailable", details: { idempotency_key: "k-1" } });
    vi.restoreAllMocks();
    expect(await spendOf(client.id)).toMatchObject({ in_flight_nano: 0 });
    expect(await backlogOf(client.key)).toBe(0);
  });

  it("the client object, read while a request is planned (may it be downgraded?): the request goes on as asked, not downgraded, and the read is logged", async () => {
    // The demo template content-generate has a cheaper alternative; with no quality given, the optimizer reads the budget.
    const client = await readyToExecute("down-plan", { capacity: 10 }).then((r) => r.client);
    expect((await call("POST", "/admin/scheduler/stop", { token: ADMIN })).status).toBe(200);
    expect((await call("PUT", `/admin/clients/${client.id}/budget`, { token: ADMIN, json: { monthly_budget_nano: 1_000_000_000 } })).status).toBe(200);
    const lines = captureLog();
    const budget = vi.spyOn(ClientObject.prototype, "budget").mockImplementation(() => {
      throw new Error("Durable Object is overloaded.");
    });
    const res = await call("POST", "/api/queue/enqueue", { token: client.key, json: { template: "content-generate", params: {} } });
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    expect(res.body.request).toMatchObject({ template: "content-generate", downgraded_from: null });
    expect(budget).toHaveBeenCalled();
    expect(lines.filter((l) => l.msg === "plan_input_unavailable")).toMatchObject([{ level: "warn", input: "budget", client_id: client.id }]);
    vi.restoreAllMocks();
    expect((await call("DELETE", `/api/queue/${res.body.request.id}`, { token: client.key })).status).toBe(200);
  });
});
