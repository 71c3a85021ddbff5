import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { monthKey, nextMonthStart } from "../../src/domain/calendar";
import { ADMIN, call, expectError, type Call } from "../support/helpers";

/**
 * Issue 19, item 8: a downgrade is visible (X-RM-Downgraded-From, top-level `downgraded_from` and
 * `downgrade_reason` in the request view, REST and RPC), and a client can refuse it per request
 * (`allow_downgrade: false`) and per client (the optimizer switch `downgrade`).
 *
 * The demo templates: content-generate (2,000 GPT-4 tokens, 60,000,000 nano) with the cheaper
 * alternative content-generate-lite (2,000 GPT-3.5 tokens, 3,000,000 nano). The budget rule downgrades
 * when spent + in flight is above DOWNGRADE_BUDGET_PERCENT (80) of the client's budget.
 */
const FULL = "content-generate";
const LITE = "content-generate-lite";
const FULL_NANO = 60_000_000;
const LITE_NANO = 3_000_000;
const HEADER = "X-RM-Downgraded-From";
const LATER = () => Date.now() + 3_600_000;

let seq = 0;
/** A fresh client with its own budget and key, made through the admin API. */
async function makeClient(budgetNano: number): Promise<{ id: string; key: string }> {
  seq += 1;
  const id = `dv-${crypto.randomUUID().slice(0, 8)}-${seq}`;
  const created = await call("POST", "/admin/clients", { token: ADMIN, json: { id, name: id, email: "ops@example.com", tier: "standard", monthly_budget_nano: budgetNano } });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  const key = await call("POST", `/admin/clients/${id}/keys`, { token: ADMIN, json: { scopes: ["resources:read", "execute", "usage:read"] } });
  expect(key.status).toBe(201);
  return { id, key: key.body.key };
}

const enqueue = (key: string, json: unknown) => call("POST", "/api/queue/enqueue", { token: key, json });
const execute = (key: string, json: unknown) => call("POST", "/api/execute", { token: key, json });
const inFlight = async (id: string, key: string): Promise<number> => (await call("GET", `/api/usage/${id}/current`, { token: key })).body.in_flight_nano;

/**
 * Hold `count` premium content-generate requests (never downgraded) in flight: queued until an hour
 * from now, so that the client's budget use is exactly count x 60,000,000.
 */
async function hold(key: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const r = await enqueue(key, { template: FULL, quality: "premium", not_before: LATER() });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    expect(r.headers.get(HEADER)).toBeNull();
  }
}

function expectNotDowngraded(r: Call, status: number): void {
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(r.headers.get(HEADER)).toBeNull();
  expect(r.body.request).toMatchObject({ template: FULL, downgraded_from: null, downgrade_reason: null, estimate_nano: FULL_NANO });
}

const stop = () => call("POST", "/admin/scheduler/stop", { token: ADMIN });
const start = () => call("POST", "/admin/scheduler/start", { token: ADMIN });

beforeEach(async () => {
  await stop();
});

describe("a downgrade says so", () => {
  it("over 80% of its budget, a plain content-generate runs as content-generate-lite: header, top-level view fields, GET view, batch item", async () => {
    // 70,000,000 budget, 60,000,000 in flight: 85.7% used.
    const { id, key } = await makeClient(70_000_000);
    await hold(key, 1);

    const r = await enqueue(key, { template: FULL, params: { prompt: "a haiku" } });
    expect(r.status).toBe(202);
    expect(r.headers.get(HEADER)).toBe(FULL);
    expect(r.body.request).toMatchObject({ template: LITE, downgraded_from: FULL, downgrade_reason: "budget", estimate_nano: LITE_NANO, status: "queued" });
    expect(r.body.request.optimizer).toEqual({
      requested_template: FULL, strategies: [{ strategy: "downgrade", saved_nano: FULL_NANO - LITE_NANO, detail: `budget: ${FULL} → ${LITE}` }], cached: false, batch_size: null,
    });

    const got = await call("GET", `/api/execution/${r.body.request.id}`, { token: key });
    expect(got.status).toBe(200);
    expect(got.body.request).toMatchObject({ id: r.body.request.id, template: LITE, downgraded_from: FULL, downgrade_reason: "budget" });
    expect(await inFlight(id, key)).toBe(FULL_NANO + LITE_NANO);

    // A batch answers item by item: the field is in each item's request view.
    const batch = await enqueue(key, { requests: [{ template: FULL }, { template: "notify-email", params: { to: ["a@example.com"] } }] });
    expect(batch.status).toBe(200);
    expect(batch.headers.get(HEADER)).toBeNull();
    expect(batch.body.results.map((x: any) => [x.ok, x.request.template, x.request.downgraded_from, x.request.downgrade_reason]))
      .toEqual([[true, LITE, FULL, "budget"], [true, "notify-email", null, null]]);
  });

  it("execute: a downgraded run answers 200 with the header and the fields; a request that was not downgraded has neither", async () => {
    const { key } = await makeClient(70_000_000);
    await hold(key, 1);
    await start();
    const ran = await execute(key, { template: FULL, params: { prompt: "rate limits" } });
    expect(ran.status, JSON.stringify(ran.body)).toBe(200);
    expect(ran.headers.get(HEADER)).toBe(FULL);
    expect(ran.body.request).toMatchObject({ status: "completed", template: LITE, downgraded_from: FULL, downgrade_reason: "budget" });
    expect(ran.body.request.result.text).toBe(`Generated ${LITE} for: rate limits`);

    // Well under the threshold nothing is downgraded.
    const roomy = await makeClient(1_000_000_000);
    const plain = await execute(roomy.key, { template: FULL, params: { prompt: "x" } });
    expectNotDowngraded(plain, 200);
    expect(plain.body.request.status).toBe("completed");
  });
});

describe("allow_downgrade: false", () => {
  it("runs as requested when the budget covers it, though budget use is over the threshold", async () => {
    // 370,000,000 budget, 300,000,000 in flight: 81.1% used, 70,000,000 left.
    const { id, key } = await makeClient(370_000_000);
    await hold(key, 5);
    expect((await enqueue(key, { template: FULL })).headers.get(HEADER)).toBe(FULL); // the rule holds
    expect(await inFlight(id, key)).toBe(5 * FULL_NANO + LITE_NANO);

    const r = await enqueue(key, { template: FULL, allow_downgrade: false });
    expectNotDowngraded(r, 202);
    expect(r.body.request.optimizer.strategies).toEqual([]);
    expect(await inFlight(id, key)).toBe(6 * FULL_NANO + LITE_NANO);
    const got = await call("GET", `/api/execution/${r.body.request.id}`, { token: key });
    expect(got.body.request).toMatchObject({ template: FULL, downgraded_from: null, downgrade_reason: null });

    // Also against the queue rule (batch) and on execute.
    const more = await makeClient(1_000_000_000);
    expectNotDowngraded(await enqueue(more.key, { template: FULL, queue: "batch", allow_downgrade: false }), 202);
    expectNotDowngraded(await execute(more.key, { template: FULL, allow_downgrade: false }), 202); // scheduler stopped: queued
  });

  it("is refused with 402 budget_exceeded when the budget cannot cover it, and nothing is booked", async () => {
    const { id, key } = await makeClient(70_000_000);
    await hold(key, 1);
    const now = Date.now();
    for (const r of [await execute(key, { template: FULL, allow_downgrade: false }), await enqueue(key, { template: FULL, allow_downgrade: false })]) {
      expectError(r, 402, "budget_exceeded");
      expect(r.headers.get(HEADER)).toBeNull();
      expect(r.body.error.message).toBe(`client ${id} has 10000000 nano-dollars left of its ${monthKey(now)} budget; this request needs 60000000`);
      expect(r.body.error.details).toEqual({
        client_id: id, template: FULL, downgraded_from: null, estimate_nano: FULL_NANO, month: monthKey(now),
        budget_nano: 70_000_000, budget_source: "client", spent_nano: 0, in_flight_nano: FULL_NANO, remaining_nano: 10_000_000,
        resets_at: nextMonthStart(now), alternative: { template: LITE, estimate_nano: LITE_NANO, fits: true },
      });
    }
    expect(await inFlight(id, key)).toBe(FULL_NANO);
    const current = await call("GET", `/api/usage/${id}/current`, { token: key });
    expect(current.body.requests_by_status).toEqual({ queued: 1, dispatching: 0, running: 0, completed: 0, failed: 0, cancelled: 0, expired: 0 });
  });

  it("bad input is 400 with the envelope and changes nothing: a non-boolean, or false with quality standard", async () => {
    const { id, key } = await makeClient(1_000_000_000);
    for (const bad of ["no", 0, null, "false"]) {
      for (const r of [await enqueue(key, { template: FULL, allow_downgrade: bad }), await execute(key, { template: FULL, allow_downgrade: bad })]) {
        expectError(r, 400, "validation_failed");
        expect(r.body.error.details.fields.map((f: any) => f.path)).toEqual(["allow_downgrade"]);
        expect(r.body.error.details.fields[0].message).toMatch(/expected boolean/);
      }
    }
    const contradiction = [await enqueue(key, { template: FULL, quality: "standard", allow_downgrade: false }), await execute(key, { template: FULL, quality: "standard", allow_downgrade: false })];
    for (const r of contradiction) {
      expectError(r, 400, "validation_failed");
      expect(r.body.error.details).toEqual({ fields: [{ path: "allow_downgrade", message: 'false contradicts quality "standard" (which asks for the cheaper alternative)' }] });
    }
    // In a batch, the bad item alone is refused.
    const batch = await enqueue(key, { requests: [{ template: FULL, allow_downgrade: "no" }, { template: FULL, allow_downgrade: true }] });
    expect(batch.status).toBe(200);
    expect(batch.body.results.map((x: any) => [x.ok, x.error?.code ?? null])).toEqual([[false, "validation_failed"], [true, null]]);
    expect(batch.body.results[0].error.details.fields.map((f: any) => f.path)).toEqual(["allow_downgrade"]);
    expect(await inFlight(id, key)).toBe(FULL_NANO);
    expect((await call("GET", `/api/usage/${id}/current`, { token: key })).body.requests_by_status).toMatchObject({ queued: 1, running: 0, completed: 0 });
  });

  it("POST /api/optimize/analyze takes it too: the plan shows no downgrade", async () => {
    const { key } = await makeClient(70_000_000);
    await hold(key, 1);
    const analyze = (json: unknown) => call("POST", "/api/optimize/analyze", { token: key, json });
    const plain = await analyze({ template: FULL });
    expect(plain.body.request).toMatchObject({ planned_template: LITE, downgrade_reason: "budget" });
    const kept = await analyze({ template: FULL, allow_downgrade: false });
    expect(kept.status).toBe(200);
    expect(kept.body.request).toMatchObject({ planned_template: FULL, planned_estimate_nano: FULL_NANO, downgrade_reason: null, total_saved_nano: 0 });
    expectError(await analyze({ allow_downgrade: false }), 400, "validation_failed");
  });
});

describe("the client's switch: PUT /admin/clients/{id}/optimizer { downgrade: false }", () => {
  it("switched off, a client's requests run as requested (or 402), never downgraded; switched on again, the rule applies", async () => {
    // 370,000,000 budget, 300,000,000 in flight: 81.1% used.
    const { id, key } = await makeClient(370_000_000);
    await hold(key, 5);
    const off = await call("PUT", `/admin/clients/${id}/optimizer`, { token: ADMIN, json: { downgrade: false } });
    expect(off.status).toBe(200);
    expect(off.body.strategies.downgrade).toBe(false);
    expect((await call("GET", `/admin/clients/${id}/optimizer`, { token: ADMIN })).body.strategies.downgrade).toBe(false);

    // Budget rule, queue rule, even quality standard: the original.
    expectNotDowngraded(await enqueue(key, { template: FULL }), 202);
    // 360,000,000 in flight now: 10,000,000 left, the original does not fit: 402, not a downgrade.
    for (const json of [{ template: FULL, queue: "batch" }, { template: FULL, quality: "standard" }]) {
      const r = await enqueue(key, json);
      expectError(r, 402, "budget_exceeded");
      expect(r.body.error.details).toMatchObject({ template: FULL, downgraded_from: null, estimate_nano: FULL_NANO, remaining_nano: 10_000_000,
        // Named so the client can ask for it itself: the switch only stops the optimizer choosing it.
        alternative: { template: LITE, estimate_nano: LITE_NANO, fits: true },
      });
    }
    expect(await inFlight(id, key)).toBe(6 * FULL_NANO);

    const on = await call("PUT", `/admin/clients/${id}/optimizer`, { token: ADMIN, json: { downgrade: true } });
    expect(on.body.strategies.downgrade).toBe(true);
    const r = await enqueue(key, { template: FULL });
    expect(r.status).toBe(202);
    expect(r.headers.get(HEADER)).toBe(FULL);
    expect(r.body.request).toMatchObject({ template: LITE, downgraded_from: FULL, downgrade_reason: "budget" });
  });
});

describe("RPC (a worker over the service binding, as KAM)", () => {
  const rpc = async (method: string, ...args: unknown[]) => {
    const res = await env.KAM.fetch("https://kam/", { method: "POST", body: JSON.stringify({ method, args }) });
    return ((await res.json()) as { value: any }).value;
  };

  it("execute, enqueue and status carry the top-level fields; allow_downgrade works and is validated", async () => {
    const { id, key } = await makeClient(70_000_000);
    await hold(key, 1);
    const ran = await rpc("execute", { client_id: id, template: FULL, queue: "fast" });
    expect(ran.ok, JSON.stringify(ran.error)).toBe(true);
    expect(ran.request).toMatchObject({ template: LITE, downgraded_from: FULL, downgrade_reason: "budget", status: "queued" });
    const status = await rpc("status", { client_id: id, request_id: ran.request.id });
    expect(status.request).toMatchObject({ id: ran.request.id, template: LITE, downgraded_from: FULL, downgrade_reason: "budget" });

    const queued = await rpc("enqueue", { client_id: id, requests: [{ template: "notify-email", params: { to: ["a@example.com"] } }, { template: FULL, allow_downgrade: false }, { template: FULL, allow_downgrade: "no" }] });
    expect(queued.ok, JSON.stringify(queued.error)).toBe(true);
    expect(queued.results.map((x: any) => [x.ok, x.request?.downgraded_from ?? null, x.error?.code ?? null]))
      .toEqual([[true, null, null], [false, null, "budget_exceeded"], [false, null, "validation_failed"]]);
    expect(queued.results[1].error.details).toMatchObject({ template: FULL, downgraded_from: null, estimate_nano: FULL_NANO });

    const bad = await rpc("execute", { client_id: id, template: FULL, allow_downgrade: 1 });
    expect(bad).toMatchObject({ ok: false, error: { code: "validation_failed", message: "invalid request body", details: { fields: [{ path: "allow_downgrade", message: expect.stringMatching(/expected boolean/) }] } } });
    const refused = await rpc("execute", { client_id: id, template: FULL, allow_downgrade: false });
    expect(refused).toMatchObject({ ok: false, error: { code: "budget_exceeded", message: expect.stringMatching(/^client /) } });
  });
});
