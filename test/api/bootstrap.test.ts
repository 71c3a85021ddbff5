import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { clearConfigCache } from "../../src/storage/config";
import { ADMIN, call, expectError, requestOf, settled } from "../support/helpers";

// A deployment built from the migrations alone: no demo clients or keys. Everything else comes
// through the admin API, as an operator would do it.
beforeAll(async () => {
  await env.DB.batch([env.DB.prepare("DELETE FROM api_keys"), env.DB.prepare("DELETE FROM clients")]);
  clearConfigCache();
});

const admin = (method: string, path: string, json?: unknown) => call(method, path, { token: ADMIN, json });

describe("bootstrap without demo data", () => {
  it("migrations alone plus admin calls: a tier change, a template, a client and a key, then a template executed end to end", async () => {
    const tiers = await admin("GET", "/admin/tiers");
    expect(tiers.status).toBe(200);
    expect(tiers.body.tiers.map((t: any) => [t.id, t.priority_points, t.max_concurrent, t.weight])).toEqual([
      ["enterprise", 40, 100, 4], ["premium", 30, 50, 3], ["standard", 20, 20, 2], ["basic", 10, 5, 1],
    ]);
    const patched = await admin("PATCH", "/admin/tiers/standard", { max_concurrent: 25, monthly_budget_nano: 2_000_000_000_000 });
    expect(patched.status).toBe(200);
    expect(patched.body.tier).toEqual({ id: "standard", priority_points: 20, max_concurrent: 25, monthly_budget_nano: 2_000_000_000_000, weight: 2 });

    const template = await admin("POST", "/admin/templates", {
      id: "welcome-email", name: "Welcome e-mail", binding: "NOTIFIER", requirements: [{ pool: "email-sendgrid", amount: 1 }], timeout_ms: 5000, max_attempts: 2,
    });
    expect(template.status, JSON.stringify(template.body)).toBe(201);
    expect(template.body.template).toEqual({
      id: "welcome-email", name: "Welcome e-mail", binding: "NOTIFIER", requirements: [{ pool: "email-sendgrid", amount: 1 }], alternative_id: null,
      cacheable: false, batchable: false, timeout_ms: 5000, max_attempts: 2, options: { cache_ttl_ms: 3_600_000, batch_size: 10, compress_threshold_bytes: 4096 },
    });

    const client = await admin("POST", "/admin/clients", { id: "first-tenant", name: "First Tenant", email: "ops@first.example", tier: "standard" });
    expect(client.status, JSON.stringify(client.body)).toBe(201);
    const key = await admin("POST", "/admin/clients/first-tenant/keys", { scopes: ["execute", "usage:read"] });
    expect(key.status, JSON.stringify(key.body)).toBe(201);
    const secret: string = key.body.key;
    expect(secret).toMatch(/^rmk_/);

    const run = await call("POST", "/api/execute", { token: secret, json: { template: "welcome-email", params: { to: ["a@x.example", "b@x.example"] } } });
    expect([200, 202], JSON.stringify(run.body)).toContain(run.status);
    const done = await settled(run.body.request?.id ?? run.body.id, ["completed", "failed"], 8000, secret);
    expect(done.status).toBe("completed");
    expect(done.max_attempts).toBe(2);
    expect((await requestOf(done.id, secret)).client_id).toBe("first-tenant");
    // The budget the client runs under is the tier's as just changed.
    const current = await call("GET", "/api/usage/first-tenant/current", { token: secret });
    expect(current.status).toBe(200);
    expect(current.body.budget_nano).toBe(2_000_000_000_000);
    expect(current.body.budget_source).toBe("tier");
  });
});

describe("tiers (admin)", () => {
  it("PATCH validates every field and changes nothing on a bad one", async () => {
    expectError(await admin("PATCH", "/admin/tiers/basic", { priority_points: 41 }), 400, "validation_failed");
    expectError(await admin("PATCH", "/admin/tiers/basic", { weight: 0 }), 400, "validation_failed");
    expectError(await admin("PATCH", "/admin/tiers/basic", { max_concurrent: 2, colour: "red" }), 400, "validation_failed");
    expectError(await admin("PATCH", "/admin/tiers/basic", {}), 400, "validation_failed");
    expectError(await admin("PATCH", "/admin/tiers/platinum", { weight: 2 }), 400, "validation_failed");
    expectError(await call("PATCH", "/admin/tiers/basic", { json: { weight: 2 } }), 401, "unauthorized");
    const basic = (await admin("GET", "/admin/tiers")).body.tiers.find((t: any) => t.id === "basic");
    expect(basic).toEqual({ id: "basic", priority_points: 10, max_concurrent: 5, monthly_budget_nano: 100_000_000_000, weight: 1 });
  });

  it("tier points come from the tier row: a queued request's priority follows a PATCH", async () => {
    await admin("POST", "/admin/clients", { id: "points-tenant", name: "Points", email: "p@x.example", tier: "basic" });
    const key = (await admin("POST", "/admin/clients/points-tenant/keys", { scopes: ["execute"] })).body;
    const secret: string = key.key;
    await admin("POST", "/admin/scheduler/stop");
    try {
      const q = await call("POST", "/api/queue/enqueue", { token: secret, json: { template: "notify-email", params: { to: "x@y.example" }, queue: "normal" } });
      expect(q.status, JSON.stringify(q.body)).toBe(202);
      const id = q.body.request?.id ?? q.body.id;
      const before = await call("GET", `/api/queue/position/${id}`, { token: secret });
      expect(before.body.priority.tier).toBe(10);
      await admin("PATCH", "/admin/tiers/basic", { priority_points: 35 });
      // The scheduler object shares this isolate's configuration cache, which the PATCH cleared.
      const after = await call("GET", `/api/queue/position/${id}`, { token: secret });
      expect(after.body.priority.tier).toBe(35);
    } finally {
      await admin("PATCH", "/admin/tiers/basic", { priority_points: 10 });
      await admin("POST", "/admin/scheduler/start");
    }
  });
});

describe("templates (admin)", () => {
  const base = { name: "T", binding: "CONTENT_WORKER", requirements: [{ pool: "openai-gpt35", amount: 10 }] };

  it("refuses a binding this worker does not have, an unknown pool or alternative, a self or circular alternative", async () => {
    const noBinding = await admin("POST", "/admin/templates", { ...base, id: "t-nobinding", binding: "NO_SUCH_WORKER" });
    expectError(noBinding, 400, "validation_failed");
    expect(noBinding.body.error.details.fields).toEqual([{ path: "binding", message: "this worker has no service binding named NO_SUCH_WORKER" }]);
    // DB is a binding, but not a worker's.
    expectError(await admin("POST", "/admin/templates", { ...base, id: "t-db", binding: "DB" }), 400, "validation_failed");
    expectError(await admin("POST", "/admin/templates", { ...base, id: "t-nopool", requirements: [{ pool: "no-such-pool", amount: 1 }] }), 404, "pool_not_found");
    expectError(await admin("POST", "/admin/templates", { ...base, id: "t-twice", requirements: [{ pool: "openai-gpt35", amount: 1 }, { pool: "openai-gpt35", amount: 2 }] }), 400, "validation_failed");
    expectError(await admin("POST", "/admin/templates", { ...base, id: "t-noalt", alternative_id: "no-such-template" }), 404, "template_not_found");
    expectError(await admin("POST", "/admin/templates", { ...base, id: "t-self", alternative_id: "t-self" }), 400, "validation_failed");
    expectError(await admin("POST", "/admin/templates", { ...base, id: "t-bad", timeout_ms: 0 }), 400, "validation_failed");
    expectError(await admin("POST", "/admin/templates", { ...base, id: "t-bad", max_attempts: 11 }), 400, "validation_failed");
    expectError(await admin("POST", "/admin/templates", { ...base, id: "Bad Id" }), 400, "validation_failed");
    const listed = (await admin("GET", "/admin/templates")).body.templates.map((t: any) => t.id);
    expect(listed.filter((id: string) => id.startsWith("t-"))).toEqual([]);

    expect((await admin("POST", "/admin/templates", { ...base, id: "t-a" })).status).toBe(201);
    expect((await admin("POST", "/admin/templates", { ...base, id: "t-b", alternative_id: "t-a" })).status).toBe(201);
    const circular = await admin("PATCH", "/admin/templates/t-a", { alternative_id: "t-b" });
    expectError(circular, 400, "validation_failed");
    expect((await admin("GET", "/admin/templates/t-a")).body.template.alternative_id).toBeNull();
    expectError(await admin("POST", "/admin/templates", { ...base, id: "t-a" }), 409, "template_exists");
  });

  it("read, update and delete; a template named as another's alternative cannot be deleted", async () => {
    expect((await admin("POST", "/admin/templates", { ...base, id: "t-lite", options: { batch_size: 20 } })).status).toBe(201);
    expect((await admin("POST", "/admin/templates", { ...base, id: "t-full", alternative_id: "t-lite", cacheable: true })).status).toBe(201);

    const changed = await admin("PATCH", "/admin/templates/t-full", { timeout_ms: 1234, max_attempts: 5, batchable: true, options: { cache_ttl_ms: 60_000 } });
    expect(changed.status).toBe(200);
    expect(changed.body.template).toMatchObject({ id: "t-full", timeout_ms: 1234, max_attempts: 5, batchable: true, cacheable: true, alternative_id: "t-lite" });
    expect(changed.body.template.options).toEqual({ cache_ttl_ms: 60_000, batch_size: 10, compress_threshold_bytes: 4096 });
    expect((await admin("GET", "/admin/templates/t-lite")).body.template.options.batch_size).toBe(20);
    expectError(await admin("PATCH", "/admin/templates/t-full", { binding: "NOPE" }), 400, "validation_failed");
    expect((await admin("GET", "/admin/templates/t-full")).body.template.binding).toBe("CONTENT_WORKER");
    expectError(await admin("PATCH", "/admin/templates/t-missing", { timeout_ms: 1000 }), 404, "template_not_found");

    const refused = await admin("DELETE", "/admin/templates/t-lite");
    expectError(refused, 409, "template_in_use");
    expect(refused.body.error.details.used_by).toEqual(["t-full"]);
    expect((await admin("DELETE", "/admin/templates/t-full")).body).toMatchObject({ template: "t-full", deleted: true });
    expect((await admin("DELETE", "/admin/templates/t-lite")).status).toBe(200);
    expectError(await admin("GET", "/admin/templates/t-lite"), 404, "template_not_found");
    expectError(await admin("DELETE", "/admin/templates/t-lite"), 404, "template_not_found");
    const options = await env.DB.prepare("SELECT COUNT(*) AS n FROM template_options WHERE template_id IN ('t-lite', 't-full')").first<{ n: number }>();
    expect(options!.n).toBe(0);
  });

  it("a changed timeout applies to the next request: the worker is cut off at the new deadline", async () => {
    expect((await admin("POST", "/admin/templates", { ...base, id: "t-slow", timeout_ms: 5000, max_attempts: 1 })).status).toBe(201);
    expect((await admin("PATCH", "/admin/templates/t-slow", { timeout_ms: 100 })).status).toBe(200);
    await admin("POST", "/admin/clients", { id: "slow-tenant", name: "Slow", email: "s@x.example", tier: "enterprise", monthly_budget_nano: 1_000_000_000 });
    const key = (await admin("POST", "/admin/clients/slow-tenant/keys", { scopes: ["execute"] })).body;
    const secret: string = key.key;
    const run = await call("POST", "/api/execute", { token: secret, json: { template: "t-slow", params: { simulate: { latency_ms: 1000 } } } });
    expectError(run, 502, "worker_failed");
    const done = run.body.error.details.request;
    expect(done).toMatchObject({ status: "failed", attempts: 1, max_attempts: 1, error: "worker timed out after 100 ms" });
  });
});
