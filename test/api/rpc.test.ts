import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { OPERATIONS } from "../../src/rpc/operations";
import { ADMIN, call, INTERNAL, KEYS, makePool } from "../support/helpers";

/** Call the Resource Manager's RPC entrypoint from the KAM stand-in, a separate worker bound to it. */
async function kam(method: string, ...args: unknown[]): Promise<any> {
  const res = await env.KAM.fetch("https://kam/", { method: "POST", body: JSON.stringify({ method, args }) });
  const out = (await res.json()) as { ok: boolean; value?: any; error?: string };
  expect(out.ok, `the binding threw: ${out.error}`).toBe(true);
  return out.value;
}

const withoutTrace = ({ trace_id: _t, ok: _ok, ...rest }: Record<string, unknown>) => rest;
const uid = (p: string) => `${p}-${crypto.randomUUID().slice(0, 8)}`;

describe("RPC parity with REST", () => {
  it("every REST operation a client key or the internal token can call is an RPC method, and no other", async () => {
    const doc = (await call("GET", "/openapi.json")).body;
    const rest = new Set<string>();
    for (const [path, ops] of Object.entries((doc as any).paths as Record<string, Record<string, any>>)) {
      for (const [method, op] of Object.entries(ops)) {
        // Operator routes (/admin/*), the scrape (/metrics) and unauthenticated ones are not a client's.
        if (path.startsWith("/admin") || path === "/metrics" || path === "/mcp" || !(op.security ?? []).length) continue;
        rest.add(`${method.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ":$1")}`);
      }
    }
    expect(new Set(Object.values(OPERATIONS).map((o) => `${o.method} ${o.path}`))).toEqual(rest);
  });

  it("answers are REST's bodies with ok: true, field for field", async () => {
    const pool = await makePool({ capacity: 50, costPerUnitNano: 7 });
    const viaRest = await call("POST", "/internal/consume", { token: INTERNAL, json: { client_id: "acme", pool: pool.id, amount: 5 } });
    const viaRpc = await kam("consume", { client_id: "acme", pool: pool.id, amount: 5 });
    expect(viaRpc).toEqual({ ok: true, pool: pool.id, event_id: expect.any(String), units: 5, cost_nano: 35, remaining: 40, trace_id: expect.any(String) });
    expect(Object.keys(viaRpc).sort()).toEqual(["ok", ...Object.keys(viaRest.body)].sort());

    const reserved = await kam("reserve", { client_id: "acme", pool: pool.id, amount: 6, ttl_ms: 10_000 });
    expect(reserved).toMatchObject({ ok: true, pool: pool.id, reservation_id: expect.stringMatching(/^res_/), amount: 6, remaining: 34 });
    const released = await kam("release", { client_id: "acme", pool: pool.id, reservation_id: reserved.reservation_id, actual_used: 2 });
    expect(released).toMatchObject({ ok: true, consumed: 2, refunded: 4, cost_nano: 14, event_id: expect.any(String) });

    for (const [method, path] of [["quota", "/api/clients/acme/quota"], ["capacity", "/api/resources/capacity"], ["allocationQuotas", "/api/resources/quotas"], ["currentUsage", "/api/usage/acme/current"]] as const) {
      const r = await call("GET", path, { token: KEYS.acme });
      expect(withoutTrace(await kam(method, { client_id: "acme" })), method).toEqual(withoutTrace(r.body));
    }
    // A check spends nothing: REST's answer and the RPC's are the same body.
    const check = await kam("check", { client_id: "acme", pool: pool.id, amount: 30 });
    expect(check).toMatchObject({ ok: true, allowed: true, results: [{ pool: pool.id, amount: 30, allowed: true, available: 38 }] });
    const restCheck = await call("POST", "/api/resources/check", { token: KEYS.acme, json: { pool: pool.id, amount: 30 } });
    expect(withoutTrace(check)).toEqual(withoutTrace(restCheck.body));
  });

  it("queue, execution, cost and SLA: a request made over RPC is the client's own, read back in REST's shapes", async () => {
    const ran = await kam("execute", { client_id: "globex", template: "notify-email", params: { to: ["a@x", "b@x"] } });
    expect(ran).toMatchObject({ ok: true, duplicate: false, request: { status: "completed", client_id: "globex", actual_nano: 100_000 } });
    const id = ran.request.id;
    const rest = await call("GET", `/api/execution/${id}`, { token: KEYS.globex });
    expect(withoutTrace(await kam("status", { client_id: "globex", request_id: id }))).toEqual(withoutTrace(rest.body));
    expect(await kam("cost", { client_id: "globex", request_id: id })).toMatchObject({ ok: true, request_id: id, actual_nano: 100_000 });
    expect(await kam("sla", { client_id: "globex", request_id: id })).toMatchObject({ ok: true, request_id: id });
    // Another client's request is not found, as with its key.
    expect(await kam("status", { client_id: "acme", request_id: id })).toMatchObject({ ok: false, error: { code: "request_not_found" } });

    const queued = await kam("enqueue", { client_id: "globex", requests: [{ template: "notify-sms", not_before: Date.now() + 3_600_000 }, { template: "nope" }] });
    expect(queued).toMatchObject({ ok: true, accepted: 1, rejected: 1, results: [{ index: 0, ok: true }, { index: 1, ok: false, error: { code: "template_not_found" } }] });
    const waiting = queued.results[0].request.id;
    expect(await kam("position", { client_id: "globex", request_id: waiting })).toMatchObject({ ok: true, id: waiting, status: "queued" });
    expect(await kam("dequeue", { client_id: "globex", request_id: waiting })).toMatchObject({ ok: true, request: { id: waiting, status: "cancelled" } });
    expect(await kam("queueStatus", { client_id: "globex" })).toMatchObject({ ok: true, queues: expect.any(Array), scheduler: expect.any(Object) });
  });

  it("usage, estimates, optimizer, quota check, bursts and allocations", async () => {
    expect(await kam("usage", { client_id: "acme", granularity: "month", limit: 5 })).toMatchObject({ ok: true, client_id: "acme", granularity: "month", periods: expect.any(Array) });
    expect(await kam("estimate", { client_id: "acme", template: "content-generate" })).toMatchObject({ ok: true, total_cost_nano: 60_000_000 });
    expect(await kam("costEstimate", { client_id: "acme", template: "content-generate" })).toMatchObject({ ok: true, client_id: "acme", total_cost_nano: 60_000_000 });
    expect(await kam("availability", { client_id: "acme" })).toMatchObject({ ok: true, pools: expect.any(Array) });
    expect(await kam("serviceStatus", { client_id: "acme" })).toMatchObject({ ok: true, pools: expect.any(Array), counts: expect.any(Object) });
    expect(await kam("analyze", { client_id: "acme", template: "content-generate" })).toMatchObject({ ok: true, client_id: "acme", mode: "request" });
    expect(await kam("optimizerStats", { client_id: "acme" })).toMatchObject({ ok: true, client_id: "acme" });
    expect(await kam("recommendations", { client_id: "acme", days: 7 })).toMatchObject({ ok: true, client_id: "acme" });
    expect(await kam("slaReport", { client_id: "acme" })).toMatchObject({ ok: true });
    expect(await kam("quotaCheck", { client_id: "acme", template: "content-generate" })).toMatchObject({ ok: true, client_id: "acme", fits: true });
    expect(await kam("burst", { client_id: "acme" })).toMatchObject({ ok: true });
    expect(await kam("endBurst", { client_id: "acme" })).toMatchObject({ ok: false, error: { code: "burst_not_found" } });

    const job = uid("job");
    const made = await kam("allocate", { client_id: "acme", job_id: job, workers: 2 });
    expect(made).toMatchObject({ ok: true, allocation: { client_id: "acme", job_id: job, workers: 2, state: "active" } });
    const allocationId = made.allocation.id;
    expect(await kam("allocation", { client_id: "acme", allocation_id: allocationId })).toMatchObject({ ok: true, allocation: { id: allocationId } });
    expect(await kam("allocation", { client_id: "globex", allocation_id: allocationId })).toMatchObject({ ok: false, error: { code: "allocation_not_found" } });
    expect(await kam("allocations", { client_id: "acme", job_id: job, limit: 10 })).toMatchObject({ ok: true, allocations: [{ id: allocationId }], next_cursor: null });
    expect(await kam("allocationUsage", { client_id: "acme" })).toMatchObject({ ok: true, totals: expect.any(Object) });
    expect(await kam("releaseAllocation", { client_id: "acme", allocation_id: allocationId })).toMatchObject({ ok: true, released: [allocationId] });
  });
});

describe("RPC errors", () => {
  it("rate_limited reaches KAM with details.retry_after_ms and REST's Retry-After as retry_after_s", async () => {
    const pool = await makePool({ capacity: 4, refillPerSec: 1 });
    expect(await kam("consume", { client_id: "acme", pool: pool.id, amount: 4 })).toMatchObject({ ok: true, remaining: 0 });
    const refused = await kam("consume", { client_id: "acme", pool: pool.id, amount: 3 });
    expect(refused).toMatchObject({
      ok: false,
      error: {
        code: "rate_limited", message: `pool ${pool.id} has 0 units for 3 requested`,
        details: { pool: pool.id, requested: 3, available: 0, retry_after_ms: expect.any(Number), available_at: expect.any(Number) },
      },
      trace_id: expect.any(String),
      retry_after_s: 3,
    });
    expect(Object.keys(refused).sort()).toEqual(["error", "ok", "retry_after_s", "trace_id"]);
    expect(refused.error.details.retry_after_ms).toBeGreaterThan(2000);
    expect(refused.error.details.retry_after_ms).toBeLessThanOrEqual(3000);
  });

  it("bad input: REST's validation_failed naming the fields; nothing is spent", async () => {
    const pool = await makePool({ capacity: 10 });
    expect(await kam("consume", { client_id: "acme", pool: pool.id, amount: -1 })).toMatchObject({
      ok: false, error: { code: "validation_failed", message: "invalid request body", details: { fields: [{ path: "amount" }] } },
    });
    expect(await kam("execute", { client_id: "acme", template: "notify-email", queue: "yesterday" })).toMatchObject({ ok: false, error: { code: "validation_failed", details: { fields: [{ path: "queue" }] } } });
    expect(await kam("status", { client_id: "acme" })).toMatchObject({ ok: false, error: { code: "validation_failed", details: { fields: [{ path: "request_id", message: "Required: a string" }] } } });
    expect(await kam("status", { client_id: "acme", request_id: "../../admin/clients" })).toMatchObject({ ok: false, error: { code: "validation_failed" } });
    expect(await kam("capacity", "acme")).toMatchObject({ ok: false, error: { code: "validation_failed", message: "the input must be an object" } });
    expect(await kam("capacity", {})).toMatchObject({ ok: false, error: { code: "validation_failed", details: { fields: [{ path: "client_id" }] } } });
    expect(await kam("consume", { client_id: "nobody", pool: pool.id, amount: 1 })).toMatchObject({ ok: false, error: { code: "client_not_found" } });
    expect(await kam("capacity", { client_id: "nobody" })).toMatchObject({ ok: false, error: { code: "client_not_found", details: { client_id: "nobody" } } });
    expect((await kam("check", { client_id: "acme", pool: pool.id, amount: 10 })).results[0].available).toBe(10);
  });

  it("a suspended client may read over RPC but start nothing, as with its key", async () => {
    const id = uid("susp");
    expect((await call("POST", "/admin/clients", { token: ADMIN, json: { id, name: id, email: `ops@${id}.example`, tier: "basic", status: "suspended" } })).status).toBe(201);
    expect(await kam("execute", { client_id: id, template: "notify-email" })).toMatchObject({ ok: false, error: { code: "client_suspended" } });
    expect(await kam("allocate", { client_id: id, job_id: "j", workers: 1 })).toMatchObject({ ok: false, error: { code: "client_suspended" } });
    expect(await kam("currentUsage", { client_id: id })).toMatchObject({ ok: true, client_id: id });
  });
});

describe("RPC is observable", () => {
  it("one log line per call with method, client, outcome, duration and the caller's trace id, which the answer carries", async () => {
    const pool = await makePool({ capacity: 1 });
    const spy = vi.spyOn(console, "log");
    try {
      expect(await kam("consume", { client_id: "acme", pool: pool.id, amount: 1 }, { trace_id: "kam-trace-1" })).toMatchObject({ ok: true, trace_id: "kam-trace-1" });
      expect(await kam("consume", { client_id: "acme", pool: pool.id, amount: 1 }, { trace_id: "kam-trace-2" })).toMatchObject({ ok: false, trace_id: "kam-trace-2" });
      const bad = await kam("capacity", { client_id: "acme" }, { trace_id: "not a trace id!" });
      expect(bad.trace_id).toMatch(/^[0-9a-f-]{36}$/);
      const lines = spy.mock.calls.map((args) => args[0] as Record<string, unknown>).filter((l) => typeof l === "object" && l?.msg === "rpc");
      expect(lines.filter((l) => String(l.trace_id).startsWith("kam-trace-"))).toEqual([
        expect.objectContaining({ level: "info", via: "rpc", method: "consume", client_id: "acme", outcome: "ok", duration_ms: expect.any(Number), trace_id: "kam-trace-1" }),
        expect.objectContaining({ level: "info", via: "rpc", method: "consume", client_id: "acme", outcome: "rate_limited", trace_id: "kam-trace-2" }),
      ]);
      expect(lines.filter((l) => l.trace_id === bad.trace_id)).toHaveLength(1);
      // No request line for the route that answered in-process: the RPC line is the one line.
      expect(spy.mock.calls.filter(([l]) => typeof l === "object" && (l as any).msg === "request" && String((l as any).trace_id).startsWith("kam-trace-"))).toEqual([]);
      // Printed as text, a line is one line of JSON.
      expect(String(lines[0])).toBe(JSON.stringify(lines[0]));
    } finally {
      spy.mockRestore();
    }
  });

  it("calls are counted in /metrics by method and outcome, with latency", async () => {
    const pool = await makePool({ capacity: 1 });
    await kam("consume", { client_id: "acme", pool: pool.id, amount: 1 });
    await kam("consume", { client_id: "acme", pool: pool.id, amount: 1 });
    const text = (await call("GET", "/metrics", { token: "test-metrics-token" })).body as string;
    const value = (series: string) => Number(text.split("\n").find((l) => l.startsWith(`${series} `))?.split(" ")[1]);
    expect(value('rm_rpc_calls_total{via="rpc",method="consume",outcome="ok"}')).toBeGreaterThanOrEqual(1);
    expect(value('rm_rpc_calls_total{via="rpc",method="consume",outcome="rate_limited"}')).toBeGreaterThanOrEqual(1);
    expect(value('rm_rpc_duration_seconds_count{via="rpc",method="consume"}')).toBeGreaterThanOrEqual(2);
  });
});
