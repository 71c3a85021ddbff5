import { runDurableObjectAlarm } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import type { ResolvedQuota } from "../../src/domain/quota";
import { clearConfigCache } from "../../src/storage/config";
import { ADMIN, call, consume, enqueue, eventually, expectError, KEYS, makeTemplate, requestOf, scheduler, settled, sleep } from "../support/helpers";

let n = 0;
/** A fresh client of a tier, with a key carrying every scope; returns its id and key. */
async function makeClient(tier = "premium"): Promise<{ id: string; key: string }> {
  n += 1;
  const id = `qc-${crypto.randomUUID().slice(0, 8)}-${n}`;
  const key = `rmk_test_${crypto.randomUUID().replaceAll("-", "")}`;
  const hash = [...new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key)))].map((b) => b.toString(16).padStart(2, "0")).join("");
  await env.DB.batch([
    env.DB.prepare("INSERT INTO clients (id, name, email, tier, monthly_budget_nano, status, created_at, updated_at) VALUES (?1, ?1, 'q@example.com', ?2, NULL, 'active', 0, 0)").bind(id, tier),
    env.DB.prepare("INSERT INTO api_keys (id, client_id, key_hash, prefix, scopes, created_at) VALUES (?1, ?2, ?3, 'rmk_test', ?4, 0)")
      .bind(`key_${id}`, id, hash, JSON.stringify(["resources:read", "execute", "usage:read", "quota:read", "burst", "allocations"])),
  ]);
  clearConfigCache();
  return { id, key };
}

const clientObject = (id: string) => env.CLIENT.get(env.CLIENT.idFromName(id));
const putQuota = (id: string, body: unknown) => call("PUT", `/admin/clients/${id}/quota`, { token: ADMIN, json: body });
const quota = (over: Partial<ResolvedQuota> = {}): ResolvedQuota => ({ maxConcurrent: 10, cpuMillicores: null, memoryMb: null, poolDaily: {}, ...over });
const job = (jobId: string, over: Record<string, unknown> = {}) => ({ jobId, kind: "allocation" as const, expiresAt: Date.now() + 600_000, ...over });

beforeEach(async () => {
  await call("POST", "/admin/scheduler/start", { token: ADMIN });
});

describe("quota enforcement in the client's object", () => {
  it("a client at its concurrent limit gets exactly its limit, from 30 concurrent callers", async () => {
    const { id } = await makeClient();
    const stub = clientObject(id);
    const decisions = await Promise.all(Array.from({ length: 30 }, (_, i) => stub.acquireJobs(quota(), [job(`j${i}`)])));
    const granted = decisions.filter(([d]) => d!.ok).length;
    expect(granted).toBe(10);
    const refused = decisions.find(([d]) => !d!.ok)![0]!;
    expect(refused).toEqual({ ok: false, shortfall: { limit: "concurrent", limit_value: 10, in_use: 10, requested: 1, shortfall: 1 } });
    expect(await stub.inUse()).toBe(10);
    // the same job asking again keeps its place and takes nothing more
    const again = await stub.acquireJobs(quota(), [job("j0"), job("j1")]);
    expect(again.map((d) => d.ok)).toEqual([decisions[0]![0]!.ok, decisions[1]![0]!.ok]);
    expect(await stub.inUse()).toBe(10);
  });

  it("a burst raises the limit to exactly 150%; when it expires, held work runs on and nothing new is admitted until use is back under the quota", async () => {
    const { id } = await makeClient("enterprise");
    const stub = clientObject(id);
    await Promise.all(Array.from({ length: 10 }, (_, i) => stub.acquireJobs(quota(), [job(`a${i}`)])));
    const burst = await stub.requestBurst({ tier: "enterprise", allowed: true, max_percent: 150, max_duration_ms: 1500, cooldown_ms: 0, max_per_day: 24, requires_approval: false }, { duration_ms: 1500 });
    expect(burst).toMatchObject({ ok: true, value: { state: "active", percent: 150 } });
    const more = await Promise.all(Array.from({ length: 12 }, (_, i) => stub.acquireJobs(quota(), [job(`b${i}`)])));
    expect(more.filter(([d]) => d!.ok).length).toBe(5);
    expect(await stub.inUse()).toBe(15);
    // the alarm ends the burst at its expiry, with nobody calling the object: only its alarm writes D1
    const row = await eventually(async () => {
      const r = await env.DB.prepare("SELECT state, ended_at, ends_at FROM burst_sessions WHERE id = ?1").bind(burst.ok ? burst.value.id : "").first<{ state: string; ended_at: number; ends_at: number }>();
      return r?.state === "expired" ? r : null;
    }, 4000, "burst expired by alarm");
    expect(await runDurableObjectAlarm(stub)).toBe(false);
    expect(row!.ended_at).toBe(row!.ends_at);
    expect(await stub.inUse()).toBe(15);
    expect((await stub.acquireJobs(quota(), [job("c0")]))[0]).toMatchObject({ ok: false, shortfall: { limit_value: 10, in_use: 15 } });
    expect(await stub.releaseJobs(["a0", "a1", "a2", "a3", "a4", "a5"])).toBe(6);
    const after = await stub.acquireJobs(quota(), [job("c1"), job("c2")]);
    expect(after.map((d) => d.ok)).toEqual([true, false]);
    expect(await stub.inUse()).toBe(10);
  });

  it("CPU and memory of compute work are limited exactly, with the shortfall named", async () => {
    const { id } = await makeClient();
    const stub = clientObject(id);
    const q = quota({ cpuMillicores: 4000, memoryMb: 4096 });
    const got = await Promise.all(Array.from({ length: 6 }, (_, i) => stub.acquireJobs(q, [job(`cpu${i}`, { cpuMillicores: 1000, memoryMb: 512 })])));
    expect(got.filter(([d]) => d!.ok).length).toBe(4);
    expect((await stub.acquireJobs(q, [job("mem", { cpuMillicores: 0, memoryMb: 2100 })]))[0]).toEqual({
      ok: false, shortfall: { limit: "memory", limit_value: 4096, in_use: 2048, requested: 2100, shortfall: 52 },
    });
    const state = await stub.quotaState(q);
    expect(state.use).toMatchObject({ jobs: 4, cpuMillicores: 4000, memoryMb: 2048, allocations: 4, requests: 0 });
  });

  it("expired holds free themselves", async () => {
    const { id } = await makeClient();
    const stub = clientObject(id);
    await stub.acquireJobs(quota({ maxConcurrent: 1 }), [job("short", { expiresAt: Date.now() + 400 })]);
    expect((await stub.acquireJobs(quota({ maxConcurrent: 1 }), [job("next")]))[0]!.ok).toBe(false);
    await sleep(450);
    expect((await stub.acquireJobs(quota({ maxConcurrent: 1 }), [job("next")]))[0]!.ok).toBe(true);
  });
});

describe("the scheduler dispatches within the client's quota", () => {
  it("a client at its operator-set limit waits in the queue until a job frees", async () => {
    const { id, key } = await makeClient();
    expect((await putQuota(id, { max_concurrent: 1, cpu_millicores: null, memory_mb: null })).status).toBe(200);
    const stub = clientObject(id);
    expect((await stub.acquireJobs(quota({ maxConcurrent: 1 }), [job("holder")]))[0]!.ok).toBe(true);
    const r = await enqueue({ template: "notify-email", queue: "fast" }, key);
    expect(r.status).toBe(202);
    await scheduler().pass("test");
    // The enqueue also woke the scheduler's alarm, and passes may overlap: one that claimed the request
    // ("dispatching") may still be asking the client's object for a slot when ours returns. The object
    // refuses it, and the request goes back to its queue; at no moment does the client hold two jobs.
    for (let i = 0; i < 5; i += 1) {
      await scheduler().pass("test");
      const status = await eventually(async () => {
        const s = (await requestOf(r.body.request.id, key)).status;
        return s === "dispatching" ? null : s;
      }, 3000, "the claim to be admitted or refused");
      expect(status).toBe("queued");
      expect(await stub.inUse()).toBe(1);
    }
    await stub.releaseJobs(["holder"]);
    await scheduler().pass("test");
    expect((await settled(r.body.request.id, ["completed"], 8000, key)).status).toBe("completed");
  });

  it("a suspended client's queued work waits, and runs once it is active again", async () => {
    const { id, key } = await makeClient();
    const r = await enqueue({ template: "notify-email", queue: "fast", not_before: Date.now() + 300 }, key);
    expect(r.status).toBe(202);
    await env.DB.prepare("UPDATE clients SET status = 'suspended' WHERE id = ?1").bind(id).run();
    clearConfigCache();
    await sleep(350);
    await scheduler().pass("test");
    const admin = await call("GET", `/api/execution/${r.body.request.id}?client_id=${id}`, { token: ADMIN });
    expect(admin.body.request?.status ?? admin.body.status).toBe("queued");
    await env.DB.prepare("UPDATE clients SET status = 'active' WHERE id = ?1").bind(id).run();
    clearConfigCache();
    await scheduler().pass("test");
    expect((await settled(r.body.request.id, ["completed"], 8000, key)).status).toBe("completed");
  });

  it("a running request holds a job in its client's object; it is freed when it settles", async () => {
    const { id, key } = await makeClient();
    const r = await enqueue({ template: "notify-email", queue: "fast" }, key);
    await scheduler().pass("test");
    await settled(r.body.request.id, ["completed"], 8000, key);
    await eventually(async () => (await clientObject(id).inUse()) === 0, 3000, "job freed");
  });
});

describe("daily caps per pool", () => {
  it("admits while today's use fits; at dispatch the request past the cap waits for the next UTC day; new work is then refused with 429", async () => {
    const { id, key } = await makeClient();
    expect((await putQuota(id, { max_concurrent: null, cpu_millicores: null, memory_mb: null, pool_daily: { "email-sendgrid": 3 } })).status).toBe(200);
    await call("POST", "/admin/scheduler/stop", { token: ADMIN });
    // queued work holds no daily units until it runs, so four separate enqueues all fit at admission
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await enqueue({ template: "notify-email", queue: "fast" }, key);
      expect(r.status).toBe(202);
      ids.push(r.body.request.id);
    }
    await call("POST", "/admin/scheduler/start", { token: ADMIN });
    await scheduler().pass("test");
    await eventually(async () => {
      const states = await Promise.all(ids.map(async (rid) => (await requestOf(rid, key)).status));
      return states.filter((s) => s === "completed").length === 3 && states.filter((s) => s === "queued").length === 1;
    }, 8000, "three ran, the fourth waits");
    const waiting = (await Promise.all(ids.map((rid) => requestOf(rid, key)))).find((x) => x.status === "queued");
    const tomorrow = Math.floor(Date.now() / 86_400_000) * 86_400_000 + 86_400_000;
    expect(waiting.not_before).toBe(tomorrow);
    await call("DELETE", `/api/queue/${waiting.id}`, { token: key });
    // today's units are counted: a new request is refused at admission, with when to retry
    const refused = await enqueue({ template: "notify-email", queue: "fast" }, key);
    expectError(refused, 429, "quota_exceeded");
    expect(refused.body.error.details).toMatchObject({ limit: "pool_daily", pool: "email-sendgrid", limit_value: 3, in_use: 3, requested: 1, shortfall: 1 });
    const retryAfter = Number(refused.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(Math.ceil((tomorrow - Date.now()) / 1000) + 1);
    const view = await call("GET", `/api/clients/${id}/quota`, { token: key });
    expect(view.body.usage.pools_today).toEqual([{ pool: "email-sendgrid", used: 3, cap: 3, available: 0 }]);
  });

  it("a platform worker's direct spending for the client counts against its daily cap too (free pools included)", async () => {
    const { id, key } = await makeClient();
    await putQuota(id, { max_concurrent: null, cpu_millicores: null, memory_mb: null, pool_daily: { "d1-queries": 100 } });
    expect((await consume("d1-queries", 60, {}, id)).status).toBe(200);
    await eventually(async () => {
      const v = await call("GET", `/api/clients/${id}/quota`, { token: key });
      return v.body.usage.pools_today.find((p: any) => p.pool === "d1-queries")?.used === 60;
    }, 5000, "the consume counted");
    const check = await call("POST", `/api/clients/${id}/quota/check`, { token: key, json: { pools: { "d1-queries": 41 } } });
    expect(check.body).toMatchObject({ fits: false, limit: "pool_daily", in_use: 60, shortfall: 1 });
  });

  it("within one batch, the items past the cap are refused at admission; the check endpoint agrees", async () => {
    const { id, key } = await makeClient();
    await putQuota(id, { max_concurrent: null, cpu_millicores: null, memory_mb: null, pool_daily: { "sms-twilio": 2 } });
    await call("POST", "/admin/scheduler/stop", { token: ADMIN });
    const batch = await enqueue({ requests: [1, 2, 3].map(() => ({ template: "notify-sms", queue: "fast" })) }, key);
    expect(batch.body).toMatchObject({ accepted: 2, rejected: 1 });
    expect(batch.body.results[2].error).toMatchObject({ code: "quota_exceeded", details: { limit: "pool_daily", pool: "sms-twilio", limit_value: 2, in_use: 2, shortfall: 1 } });
    for (const r of batch.body.results.filter((x: any) => x.ok)) await call("DELETE", `/api/queue/${r.request.id}`, { token: key });
    const tpl = await makeTemplate([{ pool: "sms-twilio", amount: 1 }], { binding: "NOTIFIER" });
    const fits = await call("POST", `/api/clients/${id}/quota/check`, { token: key, json: { template: tpl, pools: { "sms-twilio": 1 } } });
    expect(fits.body).toMatchObject({ fits: true, job: { kind: "request", pools: { "sms-twilio": 2 } } });
    const over = await call("POST", `/api/clients/${id}/quota/check`, { token: key, json: { pools: { "sms-twilio": 3 } } });
    expect(over.body).toMatchObject({ fits: false, limit: "pool_daily", pool: "sms-twilio", limit_value: 2, in_use: 0, requested: 3, shortfall: 1 });
  });
});

describe("quota API", () => {
  it("GET shows the tier's defaults, PUT replaces, null returns to the default", async () => {
    const { id, key } = await makeClient("standard");
    const before = await call("GET", `/api/clients/${id}/quota`, { token: key });
    expect(before.status).toBe(200);
    expect(before.body.quota).toEqual({ max_concurrent: 20, cpu_millicores: null, memory_mb: null, pool_daily: {} });
    expect(before.body.usage).toMatchObject({ active_jobs: 0, running_requests: 0, active_allocations: 0, cpu_millicores: 0, memory_mb: 0, pools_today: [] });
    const put = await putQuota(id, { max_concurrent: 3, cpu_millicores: 2000, memory_mb: 1024, pool_daily: { "openai-gpt4": 50_000 } });
    expect(put.body.quota).toEqual({ max_concurrent: 3, cpu_millicores: 2000, memory_mb: 1024, pool_daily: { "openai-gpt4": 50_000 } });
    expect(put.body.effective).toEqual(put.body.quota);
    const back = await putQuota(id, { max_concurrent: null, cpu_millicores: null, memory_mb: null });
    expect(back.body.quota).toEqual({ max_concurrent: 20, cpu_millicores: null, memory_mb: null, pool_daily: {} });
  });

  it("check: fits, or the limit and by how much", async () => {
    const { id, key } = await makeClient();
    await putQuota(id, { max_concurrent: 2, cpu_millicores: 1000, memory_mb: null });
    const fits = await call("POST", `/api/clients/${id}/quota/check`, { token: key, json: { cpu_millicores: 1000 } });
    expect(fits.body).toMatchObject({ fits: true, limit: null, shortfall: null, job: { kind: "allocation", cpu_millicores: 1000 } });
    const over = await call("POST", `/api/clients/${id}/quota/check`, { token: key, json: { cpu_millicores: 1500, memory_mb: 10 } });
    expect(over.body).toMatchObject({ fits: false, limit: "cpu", limit_value: 1000, in_use: 0, requested: 1500, shortfall: 500 });
    await clientObject(id).acquireJobs(quota({ maxConcurrent: 2 }), [job("x1"), job("x2")]);
    const full = await call("POST", `/api/clients/${id}/quota/check`, { token: key, json: { template: "notify-email" } });
    expect(full.body).toMatchObject({ fits: false, limit: "concurrent", limit_value: 2, in_use: 2, shortfall: 1 });
  });

  it("bad input is refused with the failing fields, and changes nothing", async () => {
    const { id, key } = await makeClient();
    const bad = await putQuota(id, { max_concurrent: 0, cpu_millicores: -1, memory_mb: "lots", pool_daily: { "Bad Pool": 1 }, extra: 1 });
    expectError(bad, 400, "validation_failed");
    const fields = JSON.stringify(bad.body.error.details);
    for (const f of ["max_concurrent", "cpu_millicores", "memory_mb", "pool_daily", "extra"]) expect(fields).toContain(f);
    expectError(await putQuota(id, { max_concurrent: 1, cpu_millicores: null, memory_mb: null, pool_daily: { "no-such-pool": 5 } }), 404, "pool_not_found");
    expectError(await putQuota("no-such-client", { max_concurrent: 1, cpu_millicores: null, memory_mb: null }), 404, "client_not_found");
    expectError(await call("PUT", `/admin/clients/${id}/quota`, { token: ADMIN, body: "{", headers: { "content-type": "application/json" } }), 400, "bad_request");
    expect((await call("GET", `/api/clients/${id}/quota`, { token: key })).body.quota.max_concurrent).toBe(50);
    expectError(await call("POST", `/api/clients/${id}/quota/check`, { token: key, json: {} }), 400, "validation_failed");
    expectError(await call("POST", `/api/clients/${id}/quota/check`, { token: key, json: { template: "no-such-template" } }), 404, "template_not_found");
    expectError(await call("POST", `/api/clients/${id}/quota/check`, { token: key, json: { pools: { "no-such-pool": 1 } } }), 404, "pool_not_found");
  });

  it("authz: no token 401; another client's quota 403; a key without quota:read 403; a client key cannot PUT", async () => {
    const { id, key } = await makeClient();
    expectError(await call("GET", `/api/clients/${id}/quota`), 401, "unauthorized");
    expectError(await call("GET", `/api/clients/${id}/quota`, { token: KEYS.acme }), 403, "forbidden");
    expectError(await call("GET", "/api/clients/hooli/quota", { token: KEYS.hooliReadOnly }), 403, "forbidden");
    expectError(await call("PUT", `/admin/clients/${id}/quota`, { token: key, json: { max_concurrent: 100, cpu_millicores: null, memory_mb: null } }), 403, "forbidden");
    expect((await call("GET", `/admin/clients/${id}/quota`, { token: ADMIN })).status).toBe(200);
  });
});

describe("burst", () => {
  it("enterprise bursts at once to 150%, one session at a time, and ends it", async () => {
    const { id, key } = await makeClient("enterprise");
    const r = await call("POST", `/api/clients/${id}/burst`, { token: key, json: { reason: "launch day" } });
    expect(r.status).toBe(201);
    expect(r.body.burst).toMatchObject({ state: "active", percent: 150, duration_ms: 3_600_000, reason: "launch day", client_id: id });
    expect(r.body.burst.ends_at - r.body.burst.started_at).toBe(3_600_000);
    const view = await call("GET", `/api/clients/${id}/quota`, { token: key });
    expect(view.body.effective.max_concurrent).toBe(150);
    expect(view.body.burst.id).toBe(r.body.burst.id);
    expectError(await call("POST", `/api/clients/${id}/burst`, { token: key }), 409, "burst_state");
    const end = await call("DELETE", `/api/clients/${id}/burst`, { token: key });
    expect(end.body.burst).toMatchObject({ id: r.body.burst.id, state: "ended" });
    expect((await call("GET", `/api/clients/${id}/quota`, { token: key })).body.effective.max_concurrent).toBe(100);
    expectError(await call("DELETE", `/api/clients/${id}/burst`, { token: key }), 404, "burst_not_found");
    const status = await call("GET", `/api/clients/${id}/burst`, { token: key });
    expect(status.body).toMatchObject({ active: null, pending: null, policy: { tier: "enterprise", max_percent: 150 } });
    expect(status.body.sessions.map((s: any) => s.state)).toEqual(["ended"]);
  });

  it("standard needs approval: pending until an operator approves (then active) or denies; every session is recorded", async () => {
    const { id, key } = await makeClient("standard");
    const a = await call("POST", `/api/clients/${id}/burst`, { token: key, json: { percent: 120, duration_ms: 60_000 } });
    expect(a.body.burst).toMatchObject({ state: "pending", percent: 120, started_at: null });
    expect((await call("GET", `/api/clients/${id}/quota`, { token: key })).body.effective.max_concurrent).toBe(20);
    const pending = await call("GET", `/admin/bursts?state=pending&client_id=${id}`, { token: ADMIN });
    expect(pending.body.bursts.map((b: any) => b.id)).toEqual([a.body.burst.id]);
    const ok = await call("POST", `/admin/bursts/${a.body.burst.id}/approve`, { token: ADMIN });
    expect(ok.body.burst).toMatchObject({ state: "active", percent: 120 });
    expect(ok.body.burst.ends_at - ok.body.burst.started_at).toBe(60_000);
    expect((await call("GET", `/api/clients/${id}/quota`, { token: key })).body.effective.max_concurrent).toBe(24);
    expectError(await call("POST", `/admin/bursts/${a.body.burst.id}/approve`, { token: ADMIN }), 409, "burst_state");
    expectError(await call("POST", `/admin/bursts/${a.body.burst.id}/deny`, { token: ADMIN }), 409, "burst_state");
    expectError(await call("POST", `/admin/bursts/bst_${"0".repeat(32)}/approve`, { token: ADMIN }), 404, "burst_not_found");
    expectError(await call("POST", `/admin/bursts/${a.body.burst.id}/approve`, { token: key }), 403, "forbidden");
    const listed = await call("GET", `/admin/bursts?client_id=${id}`, { token: ADMIN });
    expect(listed.body.bursts).toHaveLength(1);
    expect(listed.body.bursts[0]).toMatchObject({ state: "active", percent: 120 });
  });

  it("a denied session never raises limits", async () => {
    const { id, key } = await makeClient("standard");
    const a = await call("POST", `/api/clients/${id}/burst`, { token: key });
    const denied = await call("POST", `/admin/bursts/${a.body.burst.id}/deny`, { token: ADMIN });
    expect(denied.body.burst).toMatchObject({ state: "denied", started_at: null });
    expect((await call("GET", `/api/clients/${id}/quota`, { token: key })).body.effective.max_concurrent).toBe(20);
  });

  it("policy: basic may not burst; above the maximum percent or duration is refused; cooldown between sessions", async () => {
    const { id: basic, key: basicKey } = await makeClient("basic");
    expectError(await call("POST", `/api/clients/${basic}/burst`, { token: basicKey }), 403, "burst_not_allowed");
    const { id, key } = await makeClient("premium");
    expectError(await call("POST", `/api/clients/${id}/burst`, { token: key, json: { percent: 151 } }), 403, "burst_not_allowed");
    expectError(await call("POST", `/api/clients/${id}/burst`, { token: key, json: { duration_ms: 3_600_001 } }), 403, "burst_not_allowed");
    expect((await call("POST", `/api/clients/${id}/burst`, { token: key, json: { duration_ms: 1000 } })).status).toBe(201);
    await call("DELETE", `/api/clients/${id}/burst`, { token: key });
    const cooling = await call("POST", `/api/clients/${id}/burst`, { token: key });
    expectError(cooling, 403, "burst_not_allowed");
    expect(cooling.body.error.details.cooldown_until).toBeGreaterThan(Date.now() + 590_000);
  });

  it("operators set a tier's policy; bad policies are refused", async () => {
    const put = await call("PUT", "/admin/burst-policies/basic", { token: ADMIN, json: { allowed: true, max_percent: 200, max_duration_ms: 120_000, cooldown_ms: 0, max_per_day: 3, requires_approval: false } });
    expect(put.body.policy).toEqual({ tier: "basic", allowed: true, max_percent: 200, max_duration_ms: 120_000, cooldown_ms: 0, max_per_day: 3, requires_approval: false });
    const { id, key } = await makeClient("basic");
    const r = await call("POST", `/api/clients/${id}/burst`, { token: key });
    expect(r.body.burst).toMatchObject({ state: "active", percent: 200, duration_ms: 120_000 });
    expect((await call("GET", `/api/clients/${id}/quota`, { token: key })).body.effective.max_concurrent).toBe(10);
    const policies = await call("GET", "/admin/burst-policies", { token: ADMIN });
    expect(policies.body.policies.map((p: any) => p.tier).sort()).toEqual(["basic", "enterprise", "premium", "standard"]);
    const bad = await call("PUT", "/admin/burst-policies/basic", { token: ADMIN, json: { allowed: "yes", max_percent: 50, max_duration_ms: 0, cooldown_ms: -1, max_per_day: 0 } });
    expectError(bad, 400, "validation_failed");
    for (const f of ["allowed", "max_percent", "max_duration_ms", "cooldown_ms", "max_per_day", "requires_approval"]) expect(JSON.stringify(bad.body.error.details)).toContain(f);
    expectError(await call("PUT", "/admin/burst-policies/gold", { token: ADMIN, json: put.body.policy }), 400, "validation_failed");
    await call("PUT", "/admin/burst-policies/basic", { token: ADMIN, json: { allowed: false, max_percent: 150, max_duration_ms: 3_600_000, cooldown_ms: 3_600_000, max_per_day: 1, requires_approval: true } });
  });

  it("bad burst requests: 400 with fields; another client's burst 403; a key without the burst scope 403", async () => {
    const { id, key } = await makeClient("enterprise");
    const bad = await call("POST", `/api/clients/${id}/burst`, { token: key, json: { percent: 100, duration_ms: 10, colour: "red" } });
    expectError(bad, 400, "validation_failed");
    for (const f of ["percent", "duration_ms", "colour"]) expect(JSON.stringify(bad.body.error.details)).toContain(f);
    expectError(await call("POST", `/api/clients/${id}/burst`, { token: KEYS.acme }), 403, "forbidden");
    expectError(await call("GET", "/api/clients/hooli/burst", { token: KEYS.hooliReadOnly }), 403, "forbidden");
    expect((await call("GET", `/api/clients/${id}/burst`, { token: key })).body.sessions).toEqual([]);
  });
});
