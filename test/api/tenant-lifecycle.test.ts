import { applyD1Migrations } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { clearConfigCache } from "../../src/storage/config";
import { ADMIN, call, enqueue, eventually, expectError, makePool, makeTemplate, scheduler, settled } from "../support/helpers";
import { RETENTION_KINDS } from "../../src/domain/retention";

const admin = (method: string, path: string, json?: unknown) => call(method, path, { token: ADMIN, json });
const SCOPES = ["execute", "usage:read", "resources:read"];

async function createClient(id: string): Promise<string> {
  const r = await admin("POST", "/admin/clients", { id, name: `Client ${id}`, email: `ops@${id}.example`, tier: "premium" });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  const k = await admin("POST", `/admin/clients/${id}/keys`, { scopes: SCOPES });
  expect(k.status, JSON.stringify(k.body)).toBe(201);
  return k.body.key;
}

/** A cacheable template on a fresh pool: its results are cached per client. */
async function cacheableTemplate(): Promise<string> {
  const pool = await makePool({ capacity: 1000, costPerUnitNano: 1000 });
  const id = await makeTemplate([{ pool: pool.id, amount: 100 }]);
  await env.DB.prepare("UPDATE templates SET cacheable = 1 WHERE id = ?1").bind(id).run();
  clearConfigCache();
  return id;
}

/** Run one request to completion as `key`; the result is cached and the usage reaches D1. */
async function runOnce(key: string, clientId: string, template: string, params: unknown): Promise<any> {
  const r = await enqueue({ template, queue: "fast", params }, key);
  expect(r.status, JSON.stringify(r.body)).toBe(202);
  await scheduler().pass("test");
  const done = await settled(r.body.request.id, ["completed"], 8000, key);
  await scheduler().pass("test"); // delivers the request log and the cached result
  await eventually(async () => (await call("GET", `/api/usage/${clientId}`, { token: key })).body.totals?.events > 0, 8000, "usage in D1");
  return done;
}

const alert = (id: string, kind: string, subject: string, state: string, resolvedAt: number | null = null) =>
  env.DB.prepare(
    `INSERT INTO alerts (id, kind, subject, severity, state, message, dedupe_key, raised_at, updated_at, acked_at, resolved_at)
     VALUES (?1, ?2, ?3, 'warning', ?4, 'm', ?1, 1, 1, NULL, ?5)`,
  ).bind(id, kind, subject, state, resolvedAt);

describe("tenant lifecycle: a deleted client's id is retired", () => {
  it("after X is deleted, creating X again is 409 client_id_retired and changes nothing; X's keys are 401; X's alerts are resolved; a new id starts clean", async () => {
    const X = "tenant-x";
    const keyX = await createClient(X);
    const template = await cacheableTemplate();
    const params = { prompt: "what the old tenant asked", tokens_used: 40 };
    const done = await runOnce(keyX, X, template, params);
    expect(done.result).not.toBeNull();
    expect((await env.DB.prepare("SELECT COUNT(*) AS n FROM result_cache WHERE template = ?1").bind(template).first<{ n: number }>())!.n).toBe(1);
    await env.DB.batch([
      alert("alt_x_80", "budget_80", X, "open"),
      alert("alt_x_ex", "budget_exhausted", X, "acknowledged"),
      alert("alt_x_95", "budget_95", X, "resolved", 5),
      alert("alt_acme_80", "budget_80", "acme", "open"),
      alert("alt_pool", "pool_low", X, "open"), // a pool that happens to share the id: not the client's
    ]);

    const before = Date.now();
    const deleted = await admin("DELETE", `/admin/clients/${X}`);
    expect(deleted.status, JSON.stringify(deleted.body)).toBe(200);
    expect(deleted.body).toMatchObject({ client_id: X, deleted: true, queued: 0, running: 0, cancelled: 0 });

    // Alerts: X's open and acknowledged budget alerts resolved at the delete; the rest as they were.
    const { results: alerts } = await env.DB.prepare("SELECT id, state, resolved_at FROM alerts WHERE id LIKE 'alt_%' ORDER BY id").all<any>();
    const after = Date.now();
    expect(alerts.map((a) => [a.id, a.state])).toEqual([
      ["alt_acme_80", "open"], ["alt_pool", "open"], ["alt_x_80", "resolved"], ["alt_x_95", "resolved"], ["alt_x_ex", "resolved"],
    ]);
    for (const a of alerts.filter((a) => a.id === "alt_x_80" || a.id === "alt_x_ex")) {
      expect(a.resolved_at).toBeGreaterThanOrEqual(before);
      expect(a.resolved_at).toBeLessThanOrEqual(after);
    }
    expect(alerts.find((a) => a.id === "alt_x_95").resolved_at).toBe(5);

    // Creating X again is refused, and nothing changes.
    const snapshot = () => env.DB.prepare(
      `SELECT (SELECT COUNT(*) FROM clients) AS clients, (SELECT COUNT(*) FROM api_keys WHERE client_id = ?1) AS keys,
              (SELECT retired_at FROM retired_client_ids WHERE client_id = ?1) AS retired_at`,
    ).bind(X).first<any>();
    const retired = await snapshot();
    expect(retired.keys).toBe(0);
    expect(retired.retired_at).toBeGreaterThanOrEqual(before);
    for (const tier of ["premium", "basic"]) {
      const again = await admin("POST", "/admin/clients", { id: X, name: "Someone else", email: "ops@else.example", tier });
      expectError(again, 409, "client_id_retired");
      expect(again.body.error.details).toEqual({ client_id: X, retired_at: retired.retired_at });
    }
    expect(await snapshot()).toEqual(retired);
    expectError(await admin("GET", `/admin/clients/${X}`), 404, "client_not_found");
    expectError(await admin("POST", `/admin/clients/${X}/keys`, { scopes: SCOPES }), 404, "client_not_found");
    expectError(await admin("DELETE", `/admin/clients/${X}`), 404, "client_not_found");

    // X's old key reaches nothing.
    for (const [method, path, json] of [
      ["GET", `/api/usage/${X}`], ["GET", `/api/usage/${X}/current`], ["GET", `/api/execution/${done.id}`], ["GET", `/api/cost/${done.id}`],
      ["POST", "/api/execute", { template, params }],
    ] as Array<[string, string, unknown?]>) {
      expectError(await call(method, path, { token: keyX, json }), 401, "unauthorized");
    }

    // A new id works, and sees nothing of X: no usage, not X's request, not X's cached result.
    const Y = "tenant-y";
    const keyY = await createClient(Y);
    const fresh = await call("GET", `/api/usage/${Y}`, { token: keyY });
    expect(fresh.status).toBe(200);
    expect(fresh.body.totals).toMatchObject({ events: 0, cost_nano: 0 });
    expectError(await call("GET", `/api/execution/${done.id}`, { token: keyY }), 404, "request_not_found");
    expectError(await call("GET", `/api/usage/${X}`, { token: keyY }), 403, "forbidden");
    const own = await runOnce(keyY, Y, template, params);
    expect(own.optimizer.cached).toBe(false);
    expect(own.actual_nano).toBe(40_000);
  });

  it("deleting an id that never existed retires nothing: it can still be created", async () => {
    expectError(await admin("DELETE", "/admin/clients/never-was"), 404, "client_not_found");
    expect((await env.DB.prepare("SELECT COUNT(*) AS n FROM retired_client_ids WHERE client_id = 'never-was'").first<{ n: number }>())!.n).toBe(0);
    expect((await admin("POST", "/admin/clients", { id: "never-was", name: "New", email: "ops@new.example", tier: "basic" })).status).toBe(201);
  });

  it("migration 0004 retires the ids of clients deleted before it that left records behind", async () => {
    const migrations = JSON.parse(env.TEST_MIGRATIONS) as Array<{ name: string; queries: string[] }>;
    const db = env.SCHEMA_A;
    await applyD1Migrations(db, migrations.filter((m) => m.name < "0004"));
    await db.batch([
      db.prepare("INSERT INTO clients (id, name, email, tier, status, created_at, updated_at) VALUES ('alive', 'A', 'a@a.example', 'basic', 'active', 1, 1)"),
      db.prepare("INSERT INTO usage_daily VALUES ('alive', 'openai-gpt4', '2026-01-01', 1, 1, 1), ('gone-usage', 'openai-gpt4', '2026-01-01', 1, 1, 1)"),
      db.prepare("INSERT INTO request_log VALUES ('req_1', 'gone-requests', 't', 'normal', 'completed', 1, 1, 1, 1, 2, NULL)"),
      db.prepare("INSERT INTO optimizer_savings VALUES ('sav_1', 'req_1', 'gone-savings', 't', 'caching', 1, 0, 1)"),
      db.prepare("INSERT INTO burst_sessions (id, client_id, state, percent, duration_ms, requested_at, updated_at) VALUES ('bst_1', 'gone-burst', 'ended', 150, 1, 1, 1)"),
    ]);
    await applyD1Migrations(db, migrations);
    const { results } = await db.prepare("SELECT client_id FROM retired_client_ids ORDER BY client_id").all();
    expect(results).toEqual([{ client_id: "gone-burst" }, { client_id: "gone-requests" }, { client_id: "gone-savings" }, { client_id: "gone-usage" }]);
    const { results: settings } = await db.prepare("SELECT kind, days FROM retention_settings ORDER BY kind").all();
    // Every kind has its row: 0004 seeded them, later migrations add their own kinds' rows.
    expect(settings.map((r) => r.kind)).toEqual([...RETENTION_KINDS].sort());
  });
});
