import { abortAllDurableObjects, runInDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { ADMIN, call, enqueue, eventually, makeClient, makePool, makeTemplate, scheduler, settled, sleep } from "../support/helpers";

/** What the settlement reaches for a client object (the fault is injected there: the client object unreachable). */
type ClientStubOf = { clientStub: (clientId: string) => { settle: (...args: unknown[]) => Promise<void> } };

/** The next `failures` client-object settlements of the scheduler fail, as when the object cannot be reached; later ones go through. */
async function failClientSettlements(failures: number): Promise<void> {
  await runInDurableObject(scheduler(), (instance: SchedulerObject) => {
    const settlement = (instance as unknown as { settlement: ClientStubOf }).settlement;
    const real = Object.getPrototypeOf(settlement).clientStub.bind(settlement) as ClientStubOf["clientStub"];
    let left = failures;
    settlement.clientStub = (clientId: string) => {
      const stub = real(clientId);
      return {
        settle: async (...args: unknown[]) => {
          if (left-- > 0) throw new Error("client object unreachable");
          return stub.settle(...args);
        },
      };
    };
  });
}

/** The service's log lines while a test runs (every line goes through console.log, src/log.ts). */
function captureLog(): Array<Record<string, unknown>> {
  const lines: Array<Record<string, unknown>> = [];
  vi.spyOn(console, "log").mockImplementation((line: unknown) => {
    if (line && typeof line === "object") lines.push({ ...(line as Record<string, unknown>) });
  });
  return lines;
}

const spendOf = async (clientId: string) => (await call("GET", `/api/usage/${clientId}/current`, { token: ADMIN })).body;

describe("a settlement that fails (a client object unreachable)", () => {
  afterEach(() => vi.restoreAllMocks());

  it("is made again: the pools answer the repeated release as the first time, so the request completes once and its cost is counted once", async () => {
    const pool = await makePool({ capacity: 100, costPerUnitNano: 1000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 3 }], { timeoutMs: 2000 });
    const client = await makeClient("settle-retry");
    const lines = captureLog();
    await failClientSettlements(1);
    const r = await enqueue({ template, queue: "fast" }, client.key);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const id: string = r.body.request.id;
    const done = await settled(id, ["completed", "failed"], 10_000, client.key);
    expect(done).toMatchObject({ status: "completed", attempts: 1 });
    const failed = lines.filter((l) => l.msg === "settle_failed");
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ level: "error", count: 1, error: "Error: client object unreachable", retry_in_ms: 200 });
    expect(failed[0]!.requests).toEqual([{ request_id: id, trace_id: r.body.trace_id }]);
    expect(lines.some((l) => l.msg === "release_refused")).toBe(false);
    // 3 units at 1,000 nano-dollars, once: the first release's usage event, answered again, counted once.
    await eventually(async () => {
      const s = await spendOf(client.id);
      return s.spent_nano === 3000 && s.in_flight_nano === 0 ? s : null;
    }, 5000, "the client's spend of one run");
    expect(await spendOf(client.id)).toMatchObject({ spent_nano: 3000, in_flight_nano: 0 });
  }, 30_000);

  it("that keeps failing is owed: kept in the shard's storage, its request stays running past its lease (never run again), and after a restart it is made again: the request completes once, its cost counted once", async () => {
    const pool = await makePool({ capacity: 100, costPerUnitNano: 1000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }], { timeoutMs: 500 });
    const client = await makeClient("settle-owed");
    const lines = captureLog();
    await failClientSettlements(1000); // every settlement fails until the objects restart
    const r = await enqueue({ template, queue: "fast" }, client.key);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const id: string = r.body.request.id;
    const third = await eventually(async () => lines.find((l) => l.msg === "settle_failed" && l.failures === 3), 8000, "the third settle_failed line");
    expect(lines.filter((l) => l.msg === "settle_failed").map((l) => [l.failures, l.retry_in_ms])).toEqual([[1, 200], [2, 1000], [3, 5000]]);
    expect(third).toMatchObject({ level: "error", count: 1, error: "Error: client object unreachable" });
    expect(third.requests).toEqual([{ request_id: id, trace_id: r.body.trace_id }]);
    // Past its lease (timeout 500 ms + LEASE_MARGIN_MS 1,000): it ran, so it is not sent back to its queue.
    await sleep(1600);
    await scheduler().pass("test");
    expect(((await scheduler().get(id, null)) as { status: string; attempts: number } | null)).toMatchObject({ status: "running", attempts: 1 });
    expect(lines.some((l) => l.msg === "lease_expired" && l.request_id === id)).toBe(false);
    expect((await call("GET", "/admin/scheduler/status", { token: ADMIN })).body).toMatchObject({ settlements_owed: 1 });
    expect((await call("GET", "/metrics", { token: ADMIN })).body as string).toMatch(/^rm_scheduler_settlements_owed 1$/m);
    // The shard restarts (and the fault with it): it reads what it owes and its alarm makes the settlement when due.
    await abortAllDurableObjects();
    const done = await settled(id, ["completed", "failed"], 15_000, client.key);
    expect(done).toMatchObject({ status: "completed", attempts: 1 });
    expect((await call("GET", "/admin/scheduler/status", { token: ADMIN })).body).toMatchObject({ settlements_owed: 0 });
    // 1 unit at 1,000 nano-dollars, once: the pool answers the repeated release with its first usage event.
    await eventually(async () => {
      const s = await spendOf(client.id);
      return s.spent_nano === 1000 && s.in_flight_nano === 0 ? s : null;
    }, 5000, "the client's spend of one run");
    expect(lines.some((l) => l.msg === "release_refused")).toBe(false);
  }, 40_000);
});
