import { abortAllDurableObjects, createScheduledController, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { runCron } from "../../src/cron";
import { runRetention } from "../../src/services/retention";
import { listUsageEvents } from "../../src/storage/usage";
import { poolConfigs, templateConfigs } from "../../src/storage/config";
import { ADMIN, call, enqueue, eventually, expectError, INTERNAL, KEYS, makePool, makeTemplate, requestOf, scheduler, settled, sleep } from "../support/helpers";

const start = () => call("POST", "/admin/scheduler/start", { token: ADMIN });
const stop = () => call("POST", "/admin/scheduler/stop", { token: ADMIN });
const available = async (pool: string) =>
  (await call("POST", "/api/resources/check", { token: KEYS.acme, json: { pool, amount: 1 } })).body.results[0].available;

beforeEach(async () => {
  expect((await start()).status).toBe(200);
});

describe("enqueue", () => {
  it("answers 202 with id, queue, priority, position and estimated wait; the request is visible to its client", async () => {
    await stop();
    const r = await enqueue({ template: "content-generate", queue: "fast", params: { prompt: "x" } });
    expect(r.status).toBe(202);
    expect(r.body.request).toMatchObject({ status: "queued", queue: "fast", client_id: "acme", estimate_nano: 60_000_000, attempts: 0 });
    expect(r.body.request.id).toMatch(/^req_[a-f0-9]{32}$/);
    expect(r.body.request.priority).toBeGreaterThan(0);
    expect(r.body.position).toBeGreaterThanOrEqual(1);
    expect(typeof r.body.estimated_wait_ms).toBe("number");
    expect((await requestOf(r.body.request.id)).status).toBe("queued");
    await call("DELETE", `/api/queue/${r.body.request.id}`, { token: KEYS.acme });
  });

  it("a repeated idempotency key returns the first request, never a second", async () => {
    await stop();
    const a = await enqueue({ template: "notify-email", idempotency_key: "welcome-42" });
    // The same request again (another one with this key is a 409: test/api/idempotency.test.ts).
    const b = await enqueue({ template: "notify-email", idempotency_key: "welcome-42" });
    expect(b.body.request.id).toBe(a.body.request.id);
    expect(b.body.duplicate).toBe(true);
    // the same key from another client is another request
    const c = await enqueue({ template: "notify-email", idempotency_key: "welcome-42" }, KEYS.globex);
    expect(c.body.request.id).not.toBe(a.body.request.id);
    const status = (await call("GET", "/api/queue/status", { token: KEYS.acme })).body;
    expect(status.queues.find((q: any) => q.queue === "normal").depth).toBeGreaterThanOrEqual(2);
    await call("DELETE", `/api/queue/${a.body.request.id}`, { token: KEYS.acme });
    await call("DELETE", `/api/queue/${c.body.request.id}`, { token: KEYS.globex });
  });

  it("a batch is validated item by item: good ones queued, bad ones answered with their failing fields", async () => {
    await stop();
    const r = await enqueue({
      requests: [
        { template: "notify-email", queue: "batch" },
        { template: "notify-email", queue: "sometimes" },
        { template: "no-such-template" },
        { template: "notify-sms", max_attempts: 0 },
        { template: "notify-sms" },
      ],
    });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ accepted: 2, rejected: 3 });
    expect(r.body.results.map((x: any) => x.ok)).toEqual([true, false, false, false, true]);
    expect(r.body.results[1].error.details.fields[0].path).toBe("queue");
    expect(r.body.results[2].error.code).toBe("template_not_found");
    expect(r.body.results[3].error.details.fields[0].path).toBe("max_attempts");
    for (const x of r.body.results.filter((x: any) => x.ok)) await call("DELETE", `/api/queue/${x.request.id}`, { token: KEYS.acme });
  });

  it("bad input on every queue route is 400 with the failing fields, and nothing is enqueued", async () => {
    await stop();
    const before = (await scheduler().state()).queued;
    const cases: unknown[] = [
      {}, { template: "" }, { template: "notify-email", queue: "urgent" }, { template: "notify-email", not_before: -5 },
      { template: "notify-email", max_attempts: 11 }, { template: "notify-email", surprise: 1 }, { requests: [] },
      { requests: Array.from({ length: 101 }, () => ({ template: "notify-email" })) }, { template: "notify-email", params: { big: "x".repeat(70_000) } },
    ];
    for (const json of cases) expectError(await enqueue(json), 400, "validation_failed");
    expectError(await call("POST", "/api/queue/enqueue", { token: KEYS.acme, body: "{", headers: { "content-type": "application/json" } }), 400, "bad_request");
    expectError(await call("POST", "/api/execute", { token: KEYS.acme, json: { template: "notify-email", queue: 3 } }), 400, "validation_failed");
    for (const path of ["/api/queue/position/nope", "/api/execution/req_123", "/api/queue/req_XYZ"]) {
      const method = path.startsWith("/api/queue/req") ? "DELETE" : "GET";
      expectError(await call(method, path, { token: KEYS.acme }), 400, "validation_failed");
    }
    expectError(await call("POST", "/api/execution/bad/cancel", { token: KEYS.acme }), 400, "validation_failed");
    expect((await scheduler().state()).queued).toBe(before);
  });

  it("queue routes need the execute scope and a client key or the admin token", async () => {
    expectError(await enqueue({ template: "notify-email" }, KEYS.hooliReadOnly), 403, "forbidden");
    expectError(await call("GET", "/api/queue/status", { token: INTERNAL }), 403, "forbidden");
    expectError(await call("GET", "/api/queue/status"), 401, "unauthorized");
    expectError(await call("POST", "/admin/scheduler/stop", { token: KEYS.acme }), 403, "forbidden");
    expectError(await call("POST", "/admin/scheduler/stop", { token: INTERNAL }), 403, "forbidden");
    expectError(await call("POST", "/admin/scheduler/stop"), 401, "unauthorized");
    // the admin token acts for a named client
    await stop();
    const r = await enqueue({ template: "notify-email", client_id: "initech" }, ADMIN);
    expect(r.body.request.client_id).toBe("initech");
    expectError(await enqueue({ template: "notify-email" }, ADMIN), 400, "validation_failed");
    await call("DELETE", `/api/queue/${r.body.request.id}`, { token: ADMIN });
  });
});

describe("a client sees only its own requests", () => {
  it("another client's request is 404 on every route", async () => {
    await stop();
    const id = (await enqueue({ template: "notify-email" })).body.request.id;
    for (const [method, path] of [["GET", `/api/execution/${id}`], ["GET", `/api/queue/position/${id}`], ["DELETE", `/api/queue/${id}`], ["POST", `/api/execution/${id}/cancel`]] as const) {
      expectError(await call(method, path, { token: KEYS.globex }), 404, "request_not_found");
    }
    expect((await call("GET", `/api/execution/${id}`, { token: ADMIN })).status).toBe(200);
    expect((await call("DELETE", `/api/queue/${id}`, { token: KEYS.acme })).status).toBe(200);
  });
});

describe("position and estimated wait", () => {
  it("ranks a higher tier and more urgent queue first, and reports the formula's parts", async () => {
    await stop();
    const low = (await enqueue({ template: "notify-email", queue: "batch" }, KEYS.hooli)).body.request.id;
    const high = (await enqueue({ template: "notify-email", queue: "fast" }, KEYS.acme)).body.request.id;
    const pLow = (await call("GET", `/api/queue/position/${low}`, { token: KEYS.hooli })).body;
    const pHigh = (await call("GET", `/api/queue/position/${high}`, { token: KEYS.acme })).body;
    expect(pHigh.position).toBeLessThan(pLow.position);
    expect(pHigh.priority).toMatchObject({ tier: 40, queue: 22, starved: false });
    expect(pLow.priority).toMatchObject({ tier: 10, queue: 8 });
    expect(pLow.estimated_wait_ms).toBeGreaterThanOrEqual(pHigh.estimated_wait_ms);
    await call("DELETE", `/api/queue/${low}`, { token: KEYS.hooli });
    await call("DELETE", `/api/queue/${high}`, { token: KEYS.acme });
  });
});

describe("delete and cancel", () => {
  it("DELETE removes a queued request; once it has left the queue DELETE is 409", async () => {
    await stop();
    const id = (await enqueue({ template: "notify-email" })).body.request.id;
    const del = await call("DELETE", `/api/queue/${id}`, { token: KEYS.acme });
    expect(del.body.request.status).toBe("cancelled");
    expectError(await call("DELETE", `/api/queue/${id}`, { token: KEYS.acme }), 409, "request_state");
    await start();
    const done = await call("POST", "/api/execute", { token: KEYS.acme, json: { template: "notify-email" } });
    expect(done.status).toBe(200);
    expectError(await call("DELETE", `/api/queue/${done.body.request.id}`, { token: KEYS.acme }), 409, "request_state");
    expectError(await call("POST", `/api/execution/${done.body.request.id}/cancel`, { token: KEYS.acme }), 409, "request_state");
  });

  it("cancelling a running request aborts it cooperatively and releases its reservations; no usage is recorded", async () => {
    const pool = await makePool({ capacity: 100 });
    const template = await makeTemplate([{ pool: pool.id, amount: 40 }]);
    const id = (await enqueue({ template, queue: "fast", params: { simulate: { latency_ms: 1500 } } })).body.request.id;
    await settled(id, ["running"], 3000);
    expect(await available(pool.id)).toBe(60);
    const r = await call("POST", `/api/execution/${id}/cancel`, { token: KEYS.acme });
    expect(r.status).toBe(200);
    expect(r.body.request.status).toBe("cancelled");
    expect(await available(pool.id)).toBe(100);
    await sleep(1700);
    expect((await requestOf(id)).status).toBe("cancelled");
    await env.POOL.get(env.POOL.idFromName(pool.id)).flush();
    expect(await listUsageEvents(env.DB, { poolId: pool.id })).toHaveLength(0);
  });
});

describe("execution end to end", () => {
  it("POST /api/execute runs an immediate request now and answers 200 with the worker's result and actual cost", async () => {
    const r = await call("POST", "/api/execute", { token: KEYS.acme, json: { template: "content-generate", params: { prompt: "haiku", tokens_used: 1200 } } });
    expect(r.status).toBe(200);
    expect(r.body.request).toMatchObject({ status: "completed", queue: "immediate", attempts: 1, estimate_nano: 60_000_000, actual_nano: 36_000_000 });
    expect(r.body.request.result.text).toContain("haiku");
    await env.POOL.get(env.POOL.idFromName("openai-gpt4")).flush();
    const usage = (await listUsageEvents(env.DB, { poolId: "openai-gpt4" })).filter((u) => u.request_id === r.body.request.id);
    expect(usage).toEqual([expect.objectContaining({ units: 1200, cost_nano: 36_000_000, kind: "reservation", via: "scheduler" })]);
  });

  it("a non-immediate execute is queued and answered 202, then dispatched by the scheduler", async () => {
    const r = await call("POST", "/api/execute", { token: KEYS.globex, json: { template: "notify-sms", queue: "normal", params: { to: ["+100", "+200"] } } });
    expect(r.status).toBe(202);
    const done = await settled(r.body.request.id, undefined, 8000, KEYS.globex);
    expect(done).toMatchObject({ status: "completed", actual_nano: 7_500_000 }); // one unit reserved, one used
  });

  it("an immediate request that limits do not admit now is queued (202) and runs when capacity returns", async () => {
    const pool = await makePool({ capacity: 10 });
    const template = await makeTemplate([{ pool: pool.id, amount: 10 }]);
    const hold = await call("POST", "/internal/reserve", { token: INTERNAL, json: { client_id: "globex", pool: pool.id, amount: 10 } });
    const r = await call("POST", "/api/execute", { token: KEYS.acme, json: { template } });
    expect(r.status).toBe(202);
    expect(r.body.request.status).toBe("queued");
    await call("POST", "/internal/release", { token: INTERNAL, json: { client_id: "globex", pool: pool.id, reservation_id: hold.body.reservation_id } });
    expect((await settled(r.body.request.id, ["completed"], 3000)).status).toBe("completed");
  });
});

describe("limits", () => {
  it("a client never runs more than its tier's concurrency (basic: 5), and runs that many at once", async () => {
    const ids = [];
    for (let i = 0; i < 12; i++) ids.push((await enqueue({ template: "notify-email", queue: "fast", params: { simulate: { latency_ms: 250 } } }, KEYS.hooli)).body.request.id);
    const done = await Promise.all(ids.map((id) => settled(id, ["completed"], 15000, KEYS.hooli)));
    const edges = done.flatMap((r) => [[r.started_at, 1], [r.finished_at, -1]] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    let running = 0;
    let peak = 0;
    for (const [, d] of edges) peak = Math.max(peak, (running += d));
    expect(peak).toBe(5);
  });

  it("a request whose pools cannot all be reserved stays queued holding nothing; freed capacity wakes the scheduler", async () => {
    const a = await makePool({ capacity: 100 });
    const b = await makePool({ capacity: 10 });
    const template = await makeTemplate([{ pool: a.id, amount: 30 }, { pool: b.id, amount: 5 }]);
    const hold = await call("POST", "/internal/reserve", { token: INTERNAL, json: { client_id: "globex", pool: b.id, amount: 8, ttl_ms: 60_000 } });
    const id = (await enqueue({ template, queue: "fast" })).body.request.id;
    // Its first admission (within ~300 ms) takes A's units, is refused B's and gives A's back: `dispatching`
    // meanwhile (a read at a fixed 300 ms caught it there once on a loaded machine), then queued again, holding nothing.
    await sleep(300);
    await eventually(async () => (await requestOf(id)).status === "queued" && (await available(a.id)) === 100, 5000, "queued again, A's units given back");
    expect(await available(a.id)).toBe(100); // the partial reservation in A was rolled back
    const started = Date.now();
    await call("POST", "/internal/release", { token: INTERNAL, json: { client_id: "globex", pool: b.id, reservation_id: hold.body.reservation_id, actual_used: 0 } });
    const done = await settled(id, ["completed"], 5000);
    expect(done.started_at - started).toBeLessThan(2000); // woken by the release, not by the minute cron
  });
});

describe("faults", () => {
  // The content generator is called over RPC (`run`), the notifier over HTTP (it has no `run`).
  const transports = [
    { binding: "CONTENT_WORKER", transport: "rpc", reasons: { throw: /^worker failed: simulated failure/, error: /^worker failed: simulated: simulated upstream error/ } },
    { binding: "NOTIFIER", transport: "http", reasons: { throw: /^worker answered 500|^worker failed/, error: /^worker answered 500/ } },
  ] as const;
  for (const { binding, transport, reasons } of transports) {
    for (const fail of ["throw", "error"] as const) {
      it(`a worker that ${fail === "throw" ? "throws" : "answers an error"} over ${transport}: released, retried with backoff, failed after the limit with the reason`, async () => {
        const pool = await makePool({ capacity: 50 });
        const template = await makeTemplate([{ pool: pool.id, amount: 20 }], { binding });
        const id = (await enqueue({ template, queue: "fast", max_attempts: 2, params: { simulate: { fail } } })).body.request.id;
        const done = await settled(id, ["failed"], 8000);
        expect(done.attempts).toBe(2);
        expect(done.error).toMatch(reasons[fail]);
        expect(done.finished_at - done.created_at).toBeGreaterThanOrEqual(1000); // one backoff of 1 s
        expect(await available(pool.id)).toBe(50);
      });
    }

    it(`a worker reached over ${transport} completes with its result and reported usage`, async () => {
      const pool = await makePool({ capacity: 50 });
      const template = await makeTemplate([{ pool: pool.id, amount: 20 }], { binding });
      const id = (await enqueue({ template, queue: "fast", params: { to: ["a@example.com", "b@example.com"], tokens_used: 2 } })).body.request.id;
      const done = await settled(id, ["completed"], 5000);
      expect(done.result).toMatchObject({ transport, request_id: id });
      expect(await available(pool.id)).toBe(48); // both workers report 2 units: two recipients, or tokens_used 2
    });
  }

  it("a worker without RPC run is remembered as HTTP-only for 10 minutes; one with run is never marked", async () => {
    const pool = await makePool({ capacity: 50 });
    const http = await makeTemplate([{ pool: pool.id, amount: 1 }], { binding: "NOTIFIER" });
    const rpc = await makeTemplate([{ pool: pool.id, amount: 1 }], { binding: "CONTENT_WORKER" });
    const run = async (template: string) => {
      const id = (await enqueue({ template, queue: "fast" })).body.request.id;
      return (await settled(id, ["completed"], 5000)).result.transport;
    };
    const fetchOnly = () => runInDurableObject(scheduler(), (instance: SchedulerObject) =>
      new Map((instance as unknown as { calls: { fetchOnly: Map<string, number> } }).calls.fetchOnly));
    // Earlier tests in this file called the notifier: start from a scheduler that knows nothing yet.
    await runInDurableObject(scheduler(), (instance: SchedulerObject) => (instance as unknown as { calls: { fetchOnly: Map<string, number> } }).calls.fetchOnly.clear());
    const before = Date.now();
    expect(await run(http)).toBe("http");
    const first = await fetchOnly();
    expect([...first.keys()]).toEqual(["NOTIFIER"]);
    expect(first.get("NOTIFIER")! - before).toBeGreaterThanOrEqual(10 * 60 * 1000);
    expect(first.get("NOTIFIER")! - Date.now()).toBeLessThanOrEqual(10 * 60 * 1000);
    await sleep(5);
    expect(await run(rpc)).toBe("rpc");
    expect(await run(http)).toBe("http");
    // The second HTTP call went straight to HTTP: no new probe, so the mark is unchanged.
    expect(await fetchOnly()).toEqual(first);
  });

  it("a worker that hangs past its deadline is timed out, and a retry that succeeds completes the request", async () => {
    const pool = await makePool({ capacity: 50 });
    const template = await makeTemplate([{ pool: pool.id, amount: 20 }], { timeoutMs: 400 });
    const id = (await enqueue({ template, queue: "fast", max_attempts: 3, params: { simulate: { fail: "hang", fail_attempts: 1 }, tokens_used: 7 } })).body.request.id;
    const done = await settled(id, ["completed", "failed"], 8000);
    expect(done).toMatchObject({ status: "completed", attempts: 2, actual_nano: 7 * 1000 });
    expect(await available(pool.id)).toBe(43);
  });

  it("a pass that dies after claiming and admitting: its claim was never written, so the request is queued at restart and dispatched exactly once", async () => {
    await stop();
    const pool = await makePool({ capacity: 50 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }], { timeoutMs: 300 });
    const id = (await enqueue({ template, queue: "fast" })).body.request.id;
    const admitted = await runInDurableObject(scheduler(), async (instance: SchedulerObject) => {
      const admission = (instance as unknown as {
        admission: {
          claim(items: Array<{ id: string; template: unknown }>, now: number): unknown[];
          admit(rows: unknown[], templates: unknown, pools: unknown, blockedPools: Set<string>, fullClients: Set<string>): Promise<{ rows: unknown[] }>;
        };
      }).admission;
      const [templates, pools] = await Promise.all([templateConfigs(env), poolConfigs(env)]);
      const rows = admission.claim([{ id, template: templates.get(template) }], Date.now());
      return (await admission.admit(rows, templates, pools, new Set(), new Set())).rows.length;
    });
    expect(admitted).toBe(1); // a client slot and a pool reservation are held for it
    await abortAllDurableObjects(); // the object dies mid-pass: its in-memory state is gone
    expect((await requestOf(id)).status).toBe("queued");
    await start();
    await scheduler().pass("test");
    const done = await settled(id, ["completed"], 5000);
    expect(done.attempts).toBe(1);
    await env.POOL.get(env.POOL.idFromName(pool.id)).flush();
    expect((await listUsageEvents(env.DB, { poolId: pool.id })).filter((u) => u.request_id === id)).toHaveLength(1);
  });

  it("overlapping scheduler runs (alarm, cron, explicit passes) dispatch each request once", async () => {
    await stop();
    const pool = await makePool({ capacity: 1000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    const body = { requests: Array.from({ length: 60 }, (_, i) => ({ template, queue: "fast", params: { n: i, tokens_used: 1 } })) };
    const ids: string[] = (await enqueue(body)).body.results.map((r: any) => r.request.id);
    await start();
    await Promise.all([
      scheduler().pass("a"), scheduler().pass("b"), scheduler().pass("c"),
      runCron(createScheduledController({ scheduledTime: Date.now(), cron: "* * * * *" }), env),
    ]);
    // One poller for the 60 (sixty polling at once every 25 ms load the runtime more than the passes do).
    const done = await eventually(async () => {
      const views = [];
      for (const id of ids) {
        const r = await requestOf(id);
        if (r.status !== "completed") return null;
        views.push(r);
      }
      return views;
    }, 15_000, "all 60 to complete");
    expect(done.every((r) => r.attempts === 1)).toBe(true);
    expect(new Set(done.map((r) => r.dispatch_seq)).size).toBe(60);
    await env.POOL.get(env.POOL.idFromName(pool.id)).flush();
    expect(await listUsageEvents(env.DB, { poolId: pool.id })).toHaveLength(60);
    expect(await available(pool.id)).toBe(940);
  });

  it("a template whose worker binding does not exist fails at once with the reason", async () => {
    const template = await makeTemplate([{ pool: "d1-queries", amount: 1 }], { binding: "NO_SUCH_WORKER" });
    const r = await call("POST", "/api/execute", { token: KEYS.acme, json: { template } });
    expectError(r, 502, "worker_failed");
    expect(r.body.error.message).toContain("no service binding NO_SUCH_WORKER");
    expect(r.body.error.details.request.attempts).toBe(1);
  });
});

describe("scheduler control", () => {
  it("stop keeps work queued, survives a restart, and start dispatches it", async () => {
    await stop();
    const id = (await enqueue({ template: "notify-email", queue: "fast" })).body.request.id;
    await abortAllDurableObjects();
    const state = await call("GET", "/admin/scheduler/status", { token: ADMIN });
    expect(state.body.running).toBe(false);
    await scheduler().pass("test");
    await sleep(200);
    expect((await requestOf(id)).status).toBe("queued");
    const started = await start();
    expect(started.body.running).toBe(true);
    expect((await settled(id, ["completed"])).status).toBe("completed");
  });

  it("queue status reports depth, waits and dispatch rate per queue", async () => {
    await stop();
    await enqueue({ requests: [{ template: "notify-email", queue: "batch" }, { template: "notify-email", queue: "batch" }, { template: "notify-sms", queue: "deferred" }] });
    await sleep(50);
    const s = (await call("GET", "/api/queue/status", { token: KEYS.acme })).body;
    expect(s.queues.map((q: any) => q.queue)).toEqual(["immediate", "fast", "normal", "batch", "deferred"]);
    const batch = s.queues.find((q: any) => q.queue === "batch");
    expect(batch.depth).toBe(2);
    expect(batch.oldest_wait_ms).toBeGreaterThanOrEqual(50);
    expect(batch.wait_p95_ms).toBeGreaterThanOrEqual(batch.wait_p50_ms);
    expect(s.scheduler.running).toBe(false);
    expect(s.queues.some((q: any) => q.dispatch_rate_per_s > 0)).toBe(true); // earlier tests dispatched work
    await start();
  });
});

describe("RPC entrypoint, called from an auxiliary worker as KAM does", () => {
  const rpc = async (method: string, ...args: unknown[]) => {
    const res = await env.KAM.fetch("https://kam/", { method: "POST", body: JSON.stringify({ method, args }) });
    return ((await res.json()) as { value: any }).value;
  };

  it("execute, status, position, enqueue, cancel, estimate, check, reserve, release and consume", async () => {
    const ran = await rpc("execute", { client_id: "globex", template: "notify-email", params: { to: ["a@x", "b@x"] } });
    expect(ran.ok).toBe(true);
    expect(ran.request).toMatchObject({ status: "completed", client_id: "globex", actual_nano: 100_000 });
    expect((await rpc("status", { client_id: "globex", request_id: ran.request.id })).request.status).toBe("completed");
    expect((await rpc("status", { client_id: "acme", request_id: ran.request.id })).error.code).toBe("request_not_found");

    await stop();
    const queued = await rpc("enqueue", { client_id: "globex", requests: [{ template: "notify-sms", queue: "batch" }, { template: "nope" }] });
    expect(queued.results[0].ok).toBe(true);
    expect(queued.results[1].error.code).toBe("template_not_found");
    const id = queued.results[0].request.id;
    expect((await rpc("position", { client_id: "globex", request_id: id })).position).toBeGreaterThanOrEqual(1);
    expect((await rpc("cancel", { client_id: "globex", request_id: id })).request.status).toBe("cancelled");
    await start();

    expect((await rpc("estimate", { client_id: "globex", template: "content-generate" })).total_cost_nano).toBe(60_000_000);
    const pool = await makePool({ capacity: 10, costPerUnitNano: 3 });
    expect((await rpc("check", { client_id: "acme", pool: pool.id, amount: 10 })).allowed).toBe(true);
    const res = await rpc("reserve", { client_id: "acme", pool: pool.id, amount: 6, ttl_ms: 10_000 });
    expect(res.remaining).toBe(4);
    expect(await rpc("release", { client_id: "acme", pool: pool.id, reservation_id: res.reservation_id, actual_used: 2 })).toMatchObject({ ok: true, consumed: 2, refunded: 4, cost_nano: 6 });
    expect((await rpc("consume", { client_id: "acme", pool: pool.id, amount: 8 })).remaining).toBe(0);
    expect((await rpc("consume", { client_id: "acme", pool: pool.id, amount: 1 })).error.code).toBe("rate_limited");
    expect((await rpc("consume", { client_id: "nobody", pool: pool.id, amount: 1 })).error.code).toBe("client_not_found");
    expect((await rpc("consume", { client_id: "acme", pool: pool.id, amount: -1 })).error.code).toBe("validation_failed");
    expect((await rpc("execute", { client_id: "acme", template: "notify-email", queue: "yesterday" })).error.code).toBe("validation_failed");
  });
});

describe("retention", () => {
  it("the retention run forgets requests finished over 35 days ago (the default) once their request-log entry is delivered; others stay", async () => {
    const pool = await makePool({ capacity: 100 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const id = (await enqueue({ template, queue: "fast", idempotency_key: `keep-${i}-${pool.id}` })).body.request.id;
      await settled(id, ["completed"], 5000);
      ids.push(id);
    }
    const [old, undelivered, recent] = ids as [string, string, string];
    await scheduler().pass("test"); // delivers the request log
    const day = 24 * 60 * 60 * 1000;
    await runInDurableObject(scheduler(), (_instance: SchedulerObject, state) => {
      state.storage.sql.exec("UPDATE requests SET finished_at = ? WHERE id IN (?, ?)", Date.now() - 35 * day - 60_000, old, undelivered);
      state.storage.sql.exec("UPDATE requests SET finished_at = ? WHERE id = ?", Date.now() - 34 * day, recent);
      // As if D1 had been down since it finished: its entry still waits in the outbox.
      state.storage.sql.exec("INSERT INTO finished_outbox (id, optimizer) VALUES (?, 0)", undelivered);
    });
    expect((await runRetention(env, Date.now(), "t-retention")).pruned.requests).toBe(1); // not the undelivered one
    expect((await call("GET", `/api/execution/${old}`, { token: KEYS.acme })).status).toBe(404);
    expect((await requestOf(undelivered)).status).toBe("completed");
    expect((await requestOf(recent)).status).toBe("completed");
    // The forgotten request's idempotency key is free again: a repeat makes a new request.
    const again = await enqueue({ template, queue: "fast", idempotency_key: `keep-0-${pool.id}` });
    expect(again.body.duplicate).toBe(false);
    expect(again.body.request.id).not.toBe(old);
  });
});
