import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { call, consume, documentedResponse, expectError, ADMIN, INTERNAL, KEYS, makePool } from "../support/helpers";

const PUBLIC_ROUTES: [string, string, unknown?][] = [
  ["GET", "/api/resources/availability"],
  ["POST", "/api/resources/check", { pool: "openai-gpt4", amount: 1 }],
  ["POST", "/api/resources/estimate", { template: "content-generate" }],
];
const INTERNAL_ROUTES: [string, string, unknown][] = [
  ["POST", "/internal/consume", { client_id: "acme", pool: "openai-gpt4", amount: 1 }],
  ["POST", "/internal/reserve", { client_id: "acme", pool: "openai-gpt4", amount: 1 }],
  ["POST", "/internal/release", { client_id: "acme", pool: "openai-gpt4", reservation_id: `res_${"0".repeat(32)}` }],
];

describe("auth matrix", () => {
  for (const [method, path, json] of [...PUBLIC_ROUTES, ...INTERNAL_ROUTES, ["GET", "/status"] as [string, string]]) {
    it(`${method} ${path}: 401 without a credential and with a wrong one`, async () => {
      expectError(await call(method, path, { json }), 401, "unauthorized");
      expectError(await call(method, path, { json, token: "rmk_not_a_real_key" }), 401, "unauthorized");
      expectError(await call(method, path, { json, headers: { authorization: "Basic Zm9vOmJhcg==" } }), 401, "unauthorized");
    });
  }

  for (const [method, path, json] of PUBLIC_ROUTES) {
    it(`${method} ${path}: API keys and admin pass, the internal token is 403, a key without the scope is 403`, async () => {
      expect((await call(method, path, { json, token: KEYS.hooli })).status).toBe(200);
      const asAdmin = await call(method, path, { json: json && path.endsWith("check") ? { ...(json as object), client_id: "acme" } : json, token: ADMIN });
      expect(asAdmin.status).toBe(200);
      expectError(await call(method, path, { json, token: INTERNAL }), 403, "forbidden");
      const noScope = await call(method, path, { json, token: KEYS.hooliReadOnly });
      expectError(noScope, 403, "forbidden");
      expect(noScope.body.error.details.required_scope).toBe("resources:read");
    });
  }

  for (const [method, path, json] of INTERNAL_ROUTES) {
    it(`${method} ${path}: internal and admin tokens pass auth, API keys are 403`, async () => {
      expect((await call(method, path, { json, token: INTERNAL })).status).not.toBe(401);
      expect((await call(method, path, { json, token: ADMIN })).status).not.toBe(403);
      expectError(await call(method, path, { json, token: KEYS.acme }), 403, "forbidden");
    });
  }

  it("a revoked key is 401; a suspended client's key may read but starting anything is 403 client_suspended", async () => {
    await env.DB.prepare("UPDATE api_keys SET revoked_at = 1 WHERE id = 'key_demo_initech'").run();
    await env.DB.prepare("UPDATE clients SET status = 'suspended' WHERE id = 'globex'").run();
    const { clearConfigCache } = await import("../../src/storage/config");
    clearConfigCache();
    expectError(await call("GET", "/api/resources/availability", { token: KEYS.initech }), 401, "unauthorized");
    expect((await call("GET", "/api/resources/availability", { token: KEYS.globex })).status).toBe(200);
    expectError(await call("POST", "/api/resources/check", { token: KEYS.globex, json: { pool: "openai-gpt4", amount: 1 } }), 403, "client_suspended");
    expectError(await consume("openai-gpt4", 1, {}, "globex"), 403, "client_suspended");
  });

  it("a client key may not act for another client", async () => {
    const r = await call("POST", "/api/resources/check", { token: KEYS.hooli, json: { pool: "openai-gpt4", amount: 1, client_id: "acme" } });
    expectError(r, 403, "forbidden");
  });

  it("never echoes a credential in a response", async () => {
    const r = await call("GET", "/status", { token: "rmk_secret_value_123" });
    expect(JSON.stringify(r.body)).not.toContain("rmk_secret_value_123");
  });
});

describe("resources API", () => {
  it("availability lists the seeded pools with level, capacity and price", async () => {
    const r = await call("GET", "/api/resources/availability", { token: KEYS.acme });
    expect(r.status).toBe(200);
    const byId = Object.fromEntries(r.body.pools.map((p: any) => [p.pool, p]));
    expect(byId["openai-gpt4"]).toMatchObject({ capacity: 10000, refill_per_sec: 166, cost_per_unit_nano: 30000, unit: "tokens" });
    expect(byId["openai-gpt35"]).toMatchObject({ capacity: 90000, refill_per_sec: 1500, cost_per_unit_nano: 1500 });
    expect(byId["email-sendgrid"]).toMatchObject({ capacity: 1000, refill_per_sec: 16, cost_per_unit_nano: 100000 });
    expect(byId["sms-twilio"]).toMatchObject({ capacity: 500, refill_per_sec: 8, cost_per_unit_nano: 7500000 });
    expect(byId["d1-queries"]).toMatchObject({ capacity: 50000, refill_per_sec: 833, cost_per_unit_nano: 0 });
    expect(byId["kv-storage"]).toMatchObject({ capacity: 100000, refill_per_sec: 1666, cost_per_unit_nano: 500 });
  });

  it("check answers per pool without spending", async () => {
    const pool = await makePool({ capacity: 10 });
    const body = { requirements: [{ pool: pool.id, amount: 10 }, { pool: "openai-gpt4", amount: 10001 - 1 }] };
    const r = await call("POST", "/api/resources/check", { token: KEYS.acme, json: body });
    expect(r.status).toBe(200);
    expect(r.body.allowed).toBe(true);
    await consume(pool.id, 5);
    const again = await call("POST", "/api/resources/check", { token: KEYS.acme, json: body });
    expect(again.body.allowed).toBe(false);
    expect(again.body.results[0]).toMatchObject({ pool: pool.id, allowed: false, available: 5, retry_after_ms: null });
  });

  it("estimate prices a template's requirements and explicit amounts exactly", async () => {
    const t = await call("POST", "/api/resources/estimate", { token: KEYS.acme, json: { template: "report-build" } });
    expect(t.status).toBe(200);
    // 50 D1 queries free + 200 KV reads x 500 + 1000 GPT-3.5 tokens x 1500
    expect(t.body.total_cost_nano).toBe(0 + 100_000 + 1_500_000);
    expect(t.body.pools).toHaveLength(3);
    const e = await call("POST", "/api/resources/estimate", { token: KEYS.acme, json: { requirements: [{ pool: "sms-twilio", amount: 3 }] } });
    expect(e.body).toMatchObject({ template: null, total_cost_nano: 22_500_000 });
  });

  it("unknown template and unknown pool are 404", async () => {
    expectError(await call("POST", "/api/resources/estimate", { token: KEYS.acme, json: { template: "nope" } }), 404, "template_not_found");
    expectError(await call("POST", "/api/resources/check", { token: KEYS.acme, json: { pool: "no-such-pool", amount: 1 } }), 404, "pool_not_found");
    expectError(await consume("no-such-pool", 1), 404, "pool_not_found");
    expectError(await call("POST", "/internal/consume", { token: INTERNAL, json: { client_id: "nobody", pool: "openai-gpt4", amount: 1 } }), 404, "client_not_found");
  });

  it("serves an OpenAPI document whose error responses come from the code table", async () => {
    const r = await call("GET", "/openapi.json");
    expect(r.status).toBe(200);
    expect(documentedResponse(r.body, "/internal/consume", "post", "429").description).toContain("rate_limited");
    expect(Object.keys(r.body.paths)).toEqual(expect.arrayContaining(["/api/resources/availability", "/internal/release", "/health"]));
  });

  it("an unknown route is a 404 envelope", async () => {
    expectError(await call("GET", "/nope"), 404, "not_found");
  });
});

describe("bad input changes nothing", () => {
  const bad: [string, unknown, string][] = [
    ["negative amount", { amount: -1 }, "amount"],
    ["zero amount", { amount: 0 }, "amount"],
    ["fractional amount", { amount: 1.5 }, "amount"],
    ["string amount", { amount: "5" }, "amount"],
    ["NaN as a string", { amount: "NaN" }, "amount"],
    ["null amount", { amount: null }, "amount"],
    ["huge amount", { amount: 1e300 }, "amount"],
    ["missing pool", { pool: undefined }, "pool"],
    ["bad pool name", { pool: "Bad Pool!" }, "pool"],
    ["unknown field", { surprise: true }, ""],
    ["missing client", { client_id: undefined }, "client_id"],
    ["empty idempotency key", { idempotency_key: "" }, "idempotency_key"],
  ];
  for (const [label, patch, field] of bad) {
    it(`consume with ${label} → 400 naming ${field || "the field"}`, async () => {
      const pool = await makePool({ capacity: 10 });
      const body = { client_id: "acme", pool: pool.id, amount: 1, ...(patch as object) };
      const r = await call("POST", "/internal/consume", { token: INTERNAL, json: body });
      expectError(r, 400, "validation_failed");
      if (field) expect(r.body.error.details.fields.map((f: any) => f.path)).toContain(field);
      expect((await call("POST", "/api/resources/check", { token: KEYS.acme, json: { pool: pool.id, amount: 10 } })).body.allowed).toBe(true);
    });
  }

  it("an amount above capacity is 400 and spends nothing", async () => {
    const pool = await makePool({ capacity: 10 });
    const r = await consume(pool.id, 11);
    expectError(r, 400, "amount_exceeds_capacity");
    expect(r.body.error.details).toMatchObject({ requested: 11, max: 10 });
    expect((await consume(pool.id, 10)).status).toBe(200);
  });

  it("Infinity and NaN literals are malformed JSON → 400", async () => {
    for (const raw of ['{"client_id":"acme","pool":"openai-gpt4","amount":Infinity}', '{"client_id":"acme","pool":"openai-gpt4","amount":NaN}', "{not json"]) {
      const r = await call("POST", "/internal/consume", { token: INTERNAL, body: raw, headers: { "content-type": "application/json" } });
      expectError(r, 400, "bad_request");
    }
  });

  it("a missing body is 400", async () => {
    const r = await call("POST", "/internal/consume", { token: INTERNAL, headers: { "content-type": "application/json" } });
    expectError(r, 400, "bad_request");
    expect(r.body.error.message).toBe("a JSON request body is required");
  });

  it("a wrong content type is 400", async () => {
    const r = await call("POST", "/internal/consume", {
      token: INTERNAL, body: JSON.stringify({ client_id: "acme", pool: "openai-gpt4", amount: 1 }), headers: { "content-type": "text/plain" },
    });
    expectError(r, 400, "bad_request");
    expect(r.body.error.message).toBe("send the body as application/json");
  });

  it("ttl_ms outside 1 s .. 24 h is 400", async () => {
    for (const ttl of [0, 999, 86_400_001, 1.5]) {
      const r = await call("POST", "/internal/reserve", { token: INTERNAL, json: { client_id: "acme", pool: "openai-gpt4", amount: 1, ttl_ms: ttl } });
      expectError(r, 400, "validation_failed");
    }
  });

  it("release with a malformed reservation id or negative actual_used is 400", async () => {
    const base = { client_id: "acme", pool: "openai-gpt4" };
    expectError(await call("POST", "/internal/release", { token: INTERNAL, json: { ...base, reservation_id: "xyz" } }), 400, "validation_failed");
    expectError(await call("POST", "/internal/release", { token: INTERNAL, json: { ...base, reservation_id: `res_${"a".repeat(32)}`, actual_used: -1 } }), 400, "validation_failed");
    expectError(await call("POST", "/internal/release", { token: INTERNAL, json: { ...base, reservation_id: `res_${"a".repeat(32)}` } }), 404, "reservation_not_found");
  });

  it("check needs pool and amount, or requirements, not both", async () => {
    for (const json of [{}, { pool: "openai-gpt4" }, { amount: 1 }, { pool: "openai-gpt4", amount: 1, requirements: [{ pool: "openai-gpt4", amount: 1 }] }, { requirements: [] }]) {
      expectError(await call("POST", "/api/resources/check", { token: KEYS.acme, json }), 400, "validation_failed");
    }
  });

  it("the admin token must name a client to check for", async () => {
    const r = await call("POST", "/api/resources/check", { token: ADMIN, json: { pool: "openai-gpt4", amount: 1 } });
    expectError(r, 400, "validation_failed");
    expect(r.body.error.details.fields[0].path).toBe("client_id");
  });

  it("mismatched idempotency key in body and header is 400", async () => {
    const r = await call("POST", "/internal/consume", {
      token: INTERNAL, headers: { "idempotency-key": "a" }, json: { client_id: "acme", pool: "openai-gpt4", amount: 1, idempotency_key: "b" },
    });
    expectError(r, 400, "validation_failed");
  });
});
