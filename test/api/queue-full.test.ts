// SCHEDULER_MAX_QUEUED: a shard holds at most that many queued requests (each keeps ~1 kB of its heap;
// docs/operations.md). The suite's worker runs with the default (50,000), so these calls go through the
// app with the setting lowered, as request-log.test.ts does, and are checked against the OpenAPI document.
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app";
import { checkResponse } from "../support/contract";
import { ADMIN, call, makeClient, makePool, makeTemplate, type Call } from "../support/helpers";

const app = createApp();
const HOUR = 60 * 60 * 1000;

/** One call through the app with SCHEDULER_MAX_QUEUED = `max`. */
async function limited(max: number, method: string, path: string, token: string, json?: unknown): Promise<Call> {
  const ctx = createExecutionContext();
  const init: RequestInit = { method, headers: { authorization: `Bearer ${token}`, ...(json === undefined ? {} : { "content-type": "application/json" }) } };
  if (json !== undefined) init.body = JSON.stringify(json);
  const res = await app.fetch(new Request(`https://rm.test${path}`, init), { ...env, SCHEDULER_MAX_QUEUED: String(max) }, ctx);
  const text = await res.text();
  await waitOnExecutionContext(ctx);
  checkResponse(method, path, res.status, res.headers, text);
  return { status: res.status, body: JSON.parse(text), headers: res.headers };
}

const queuedNow = async (): Promise<number> => (await call("GET", "/api/queue/status", { token: ADMIN })).body.scheduler.queued;
const inFlight = async (clientId: string): Promise<number> => (await call("GET", `/api/usage/${clientId}/current`, { token: ADMIN })).body.in_flight_nano;

function expectFull(r: Call, max: number): void {
  expect(r.status, JSON.stringify(r.body)).toBe(503);
  expect(r.body.error.code).toBe("queue_full");
  expect(r.body.error.details).toMatchObject({ shard: 0, queued: max, max_queued: max, retry_after_ms: 5000 });
}

describe("a scheduler shard full of queued work (SCHEDULER_MAX_QUEUED)", () => {
  afterEach(async () => {
    await call("POST", "/admin/scheduler/start", { token: ADMIN });
  });

  it("refuses new work with 503 queue_full and books nothing for it; a repeated key is still answered; a cancel makes room", async () => {
    const pool = await makePool({ costPerUnitNano: 7, capacity: 1_000_000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 10 }]);
    const estimate = 70;
    const { id, key } = await makeClient("qf");
    const later = Date.now() + HOUR; // held back: queued, and not dispatched while the test runs
    const max = (await queuedNow()) + 3;

    const first = await Promise.all([1, 2, 3].map((n) => limited(max, "POST", "/api/queue/enqueue", key, { template, not_before: later, idempotency_key: `qf-${n}` })));
    expect(first.map((r) => r.status)).toEqual([202, 202, 202]);
    expect(await inFlight(id)).toBe(3 * estimate);

    // The fourth: refused, with Retry-After, and nothing booked or written; the shard says so in its log.
    const spy = vi.spyOn(console, "log");
    const refused = await limited(max, "POST", "/api/queue/enqueue", key, { template, not_before: later });
    const lines = spy.mock.calls.map((args) => JSON.parse(String(args[0])) as Record<string, unknown>).filter((l) => l.msg === "queue_full");
    spy.mockRestore();
    expect(lines).toEqual([expect.objectContaining({ level: "warn", shard: 0, queued: max, max_queued: max, refused: 1, client_id: id })]);
    expectFull(refused, max);
    expect(refused.headers.get("retry-after")).toBe("5");
    expect(await inFlight(id)).toBe(3 * estimate);
    expect(await queuedNow()).toBe(max);

    // A repeated key is its first request, not new work: answered as ever.
    const again = await limited(max, "POST", "/api/queue/enqueue", key, { template, not_before: later, idempotency_key: "qf-2" });
    expect(again.status).toBe(202);
    expect(again.body.request.id).toBe(first[1]!.body.request.id);

    // A batch: each item refused on its own.
    const batch = await limited(max, "POST", "/api/queue/enqueue", key, { requests: [{ template }, { template, queue: "batch" }] });
    expect(batch.status).toBe(200);
    expect(batch.body).toMatchObject({ accepted: 0, rejected: 2 });
    for (const item of batch.body.results) expect(item.error).toMatchObject({ code: "queue_full", details: { queued: max, max_queued: max } });
    // Execute of work that would wait (not the immediate queue): refused too.
    expectFull(await limited(max, "POST", "/api/execute", key, { template, queue: "batch" }), max);
    expect(await inFlight(id)).toBe(3 * estimate);
    expect(await queuedNow()).toBe(max);

    // Room again once a request leaves the queue.
    expect((await call("DELETE", `/api/queue/${first[0]!.body.request.id}`, { token: key })).status).toBe(200);
    const room = await limited(max, "POST", "/api/queue/enqueue", key, { template, not_before: later });
    expect(room.status).toBe(202);
    expectFull(await limited(max, "POST", "/api/queue/enqueue", key, { template, not_before: later }), max);
    expect(await inFlight(id)).toBe(3 * estimate);
  });

  it("the immediate lane is not held back by a full backlog, unless dispatch is stopped and the execute would wait", async () => {
    const pool = await makePool({ costPerUnitNano: 1, capacity: 1_000_000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    const { key } = await makeClient("qf");
    const max = (await queuedNow()) + 1;
    expect((await limited(max, "POST", "/api/queue/enqueue", key, { template, not_before: Date.now() + HOUR })).status).toBe(202);

    const ran = await limited(max, "POST", "/api/execute", key, { template, params: { simulate: { latency_ms: 0 } } });
    expect(ran.status, JSON.stringify(ran.body)).toBe(200);
    expect(ran.body.request.status).toBe("completed");

    expect((await call("POST", "/admin/scheduler/stop", { token: ADMIN })).status).toBe(200);
    expectFull(await limited(max, "POST", "/api/execute", key, { template }), max);
  });
});
