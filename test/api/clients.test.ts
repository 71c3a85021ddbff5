import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { SCOPES } from "../../src/domain/scopes";
import { sha256Hex } from "../../src/http/auth";
import { ADMIN, call, consume, expectError, INTERNAL, KEYS, makePool, sleep, type Call } from "../support/helpers";

const METRICS = "test-metrics-token";
const FAR_FUTURE = () => Date.now() + 6 * 3600_000;

let seq = 0;
/** A fresh client id per test (storage is shared by the whole file). */
const uid = (prefix = "c") => `${prefix}-${crypto.randomUUID().slice(0, 8)}-${++seq}`;

const admin = (method: string, path: string, json?: unknown) => call(method, path, { token: ADMIN, json });

async function newClient(overrides: Record<string, unknown> = {}): Promise<any> {
  const id = (overrides.id as string | undefined) ?? uid();
  const r = await admin("POST", "/admin/clients", { id, name: `Client ${id}`, email: `ops@${id}.example`, tier: "basic", ...overrides });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body.client;
}

async function newKey(clientId: string, scopes: string[], name?: string): Promise<any> {
  const r = await admin("POST", `/admin/clients/${clientId}/keys`, { scopes, ...(name ? { name } : {}) });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body;
}

/** The paths of a 400's failing fields (each once). */
function fieldsOf(r: Call): string[] {
  expectError(r, 400, "validation_failed");
  return [...new Set<string>(r.body.error.details.fields.map((f: { path: string }) => f.path))];
}

/** Enqueue `n` requests for a client that stay queued (not before hours from now). */
async function enqueueWaiting(token: string, n: number, clientId?: string): Promise<string[]> {
  const r = await call("POST", "/api/queue/enqueue", {
    token,
    json: { requests: Array.from({ length: n }, () => ({ template: "notify-email", not_before: FAR_FUTURE() })), ...(clientId ? { client_id: clientId } : {}) },
  });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  expect(r.body.accepted).toBe(n);
  return r.body.results.map((x: any) => x.request.id);
}

/** The RPC entrypoint's answer (REST's body with ok: true, or its error with ok: false), called from the KAM stand-in. */
const rpc = async (method: string, ...args: unknown[]) => {
  const res = await env.KAM.fetch("https://kam/", { method: "POST", body: JSON.stringify({ method, args }) });
  return ((await res.json()) as { value: any }).value;
};

describe("create", () => {
  it("creates a client with defaults (active, tier's budget) and reads it back with zero counts", async () => {
    const id = uid();
    const r = await admin("POST", "/admin/clients", { id, name: "  Acme Two  ", email: "ops@acme-two.example", tier: "standard" });
    expect(r.status).toBe(201);
    expect(r.body.client).toEqual({
      id, name: "Acme Two", email: "ops@acme-two.example", tier: "standard", monthly_budget_nano: null, status: "active",
      created_at: expect.any(Number), updated_at: r.body.client.created_at,
    });
    const got = await admin("GET", `/admin/clients/${id}`);
    expect(got.status).toBe(200);
    expect(got.body.client).toEqual(r.body.client);
    expect(got.body.counts).toEqual({ active_keys: 0, queued: 0, running: 0 });
    // null budget: the tier's applies
    const budget = await admin("GET", `/admin/clients/${id}/budget`);
    expect(budget.body).toMatchObject({ budget_source: "tier", budget_nano: 500_000_000_000 });
  });

  it("takes its own budget and a suspended status when given", async () => {
    const c = await newClient({ monthly_budget_nano: 7_000, status: "suspended", tier: "premium" });
    expect(c).toMatchObject({ monthly_budget_nano: 7_000, status: "suspended", tier: "premium" });
    expect((await admin("GET", `/admin/clients/${c.id}/budget`)).body).toMatchObject({ budget_source: "client", budget_nano: 7_000 });
    const zero = await newClient({ monthly_budget_nano: 0 });
    expect(zero.monthly_budget_nano).toBe(0);
  });

  it("every bad field is 400 naming it, and nothing is created", async () => {
    const good = () => ({ id: uid("v"), name: "Valid", email: "ops@valid.example", tier: "basic" });
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ id: "Upper-case" }, "id"], [{ id: "-leading-dash" }, "id"], [{ id: "a" }, "id"], [{ id: "x".repeat(64) }, "id"],
      [{ id: "under_score" }, "id"], [{ id: "sp ace" }, "id"], [{ id: 42 }, "id"],
      [{ name: "" }, "name"], [{ name: "   " }, "name"], [{ name: "n".repeat(201) }, "name"], [{ name: null }, "name"],
      [{ email: "not-an-email" }, "email"], [{ email: "ops@" }, "email"], [{ email: "@acme.example" }, "email"], [{ email: `${"e".repeat(250)}@x.io` }, "email"],
      [{ tier: "gold" }, "tier"], [{ tier: "Basic" }, "tier"],
      [{ monthly_budget_nano: -1 }, "monthly_budget_nano"], [{ monthly_budget_nano: 1.5 }, "monthly_budget_nano"],
      [{ monthly_budget_nano: "100" }, "monthly_budget_nano"], [{ monthly_budget_nano: 2 ** 53 }, "monthly_budget_nano"],
      [{ status: "deleted" }, "status"],
    ];
    const tried: string[] = [];
    for (const [change, field] of cases) {
      const body = { ...good(), ...change };
      tried.push(String(body.id));
      expect(fieldsOf(await admin("POST", "/admin/clients", body)), JSON.stringify(change)).toEqual([field]);
    }
    // unknown fields are named in the message
    const unknown = await admin("POST", "/admin/clients", { ...good(), surprise: 1 });
    expectError(unknown, 400, "validation_failed");
    expect(JSON.stringify(unknown.body.error.details)).toContain("surprise");
    // every required field missing: each is named
    expect(fieldsOf(await admin("POST", "/admin/clients", {})).sort()).toEqual(["email", "id", "name", "tier"]);
    expectError(await call("POST", "/admin/clients", { token: ADMIN, body: "{", headers: { "content-type": "application/json" } }), 400, "bad_request");
    expect((await call("POST", "/admin/clients", { token: ADMIN })).status).toBe(400);

    const { results } = await env.DB.prepare(`SELECT id FROM clients WHERE id IN (${tried.map(() => "?").join(",")})`).bind(...tried).all();
    expect(results).toEqual([]);
  });

  it("a duplicate id is 409 client_exists and changes nothing; concurrent creates of one id: exactly one wins", async () => {
    const c = await newClient({ name: "First" });
    const dup = await admin("POST", "/admin/clients", { id: c.id, name: "Second", email: "x@y.example", tier: "premium" });
    expectError(dup, 409, "client_exists");
    expect(dup.body.error.details).toEqual({ client_id: c.id });
    expect((await admin("GET", `/admin/clients/${c.id}`)).body.client).toEqual(c);

    const id = uid("race");
    const answers = await Promise.all(
      Array.from({ length: 8 }, (_, i) => admin("POST", "/admin/clients", { id, name: `Racer ${i}`, email: "r@race.example", tier: "basic" })),
    );
    expect(answers.filter((a) => a.status === 201)).toHaveLength(1);
    for (const a of answers.filter((a) => a.status !== 201)) expectError(a, 409, "client_exists");
    const winner = answers.find((a) => a.status === 201)!.body.client.name;
    expect((await admin("GET", `/admin/clients/${id}`)).body.client.name).toBe(winner);
  });
});

describe("list", () => {
  // Only this test creates enterprise clients, so the filtered listings are exact (acme is the seeded one).
  it("filters by tier and status and pages by cursor in id order, exactly", async () => {
    const tag = crypto.randomUUID().slice(0, 6);
    const active = Array.from({ length: 5 }, (_, i) => `ls-${tag}-a${i}`);
    const suspended = [`ls-${tag}-s0`, `ls-${tag}-s1`];
    const others = [`ls-${tag}-o0`, `ls-${tag}-o1`];
    await Promise.all([
      ...active.map((id) => newClient({ id, tier: "enterprise" })),
      ...suspended.map((id) => newClient({ id, tier: "enterprise", status: "suspended" })),
      ...others.map((id) => newClient({ id, tier: "standard" })),
    ]);

    const walk = async (query: string) => {
      const pages: string[][] = [];
      let cursor: string | null = null;
      do {
        const r: Call = await admin("GET", `/admin/clients?${query}${cursor ? `&cursor=${cursor}` : ""}`);
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        pages.push(r.body.clients.map((c: any) => c.id));
        cursor = r.body.next_cursor;
      } while (cursor && pages.length < 50);
      return pages;
    };

    expect(await walk("tier=enterprise&status=active&limit=2")).toEqual([["acme", active[0]], [active[1], active[2]], [active[3], active[4]]]);
    expect(await walk("tier=enterprise&status=suspended&limit=1")).toEqual([[suspended[0]], [suspended[1]]]);
    expect((await walk("tier=enterprise&limit=200")).flat()).toEqual(["acme", ...active, ...suspended]);

    // unfiltered: every client exactly once, in id order, default page size 50
    const all = (await walk("limit=3")).flat();
    const { results } = await env.DB.prepare("SELECT id FROM clients ORDER BY id").all<{ id: string }>();
    expect(all).toEqual(results.map((r) => r.id));
    const first = await admin("GET", "/admin/clients");
    expect(first.body.clients).toHaveLength(Math.min(50, results.length));
    expect(first.body.clients[0]).toEqual({
      id: results[0]!.id, name: expect.any(String), email: expect.any(String), tier: expect.any(String),
      monthly_budget_nano: expect.toSatisfy((v: unknown) => v === null || typeof v === "number"), status: expect.any(String),
      created_at: expect.any(Number), updated_at: expect.any(Number),
    });
  });

  it("bad filters, limits and cursors are 400 naming the parameter", async () => {
    expect(fieldsOf(await admin("GET", "/admin/clients?limit=0"))).toEqual(["query.limit"]);
    expect(fieldsOf(await admin("GET", "/admin/clients?limit=201"))).toEqual(["query.limit"]);
    expect(fieldsOf(await admin("GET", "/admin/clients?limit=ten"))).toEqual(["query.limit"]);
    expect(fieldsOf(await admin("GET", "/admin/clients?tier=gold"))).toEqual(["query.tier"]);
    expect(fieldsOf(await admin("GET", "/admin/clients?status=deleted"))).toEqual(["query.status"]);
    expect(fieldsOf(await admin("GET", "/admin/clients?cursor=not-a-cursor"))).toEqual(["query.cursor"]);
    expect(fieldsOf(await admin("GET", `/admin/clients?cursor=${btoa("c:bad id!")}`))).toEqual(["query.cursor"]);
    const unknown = await admin("GET", "/admin/clients?tiers=basic");
    expectError(unknown, 400, "validation_failed");
    expect(JSON.stringify(unknown.body.error.details)).toContain("tiers");
  });
});

describe("update", () => {
  it("changes only the fields given, bumps updated_at, and a tier or budget change applies at once", async () => {
    const c = await newClient({ monthly_budget_nano: 5_000 });
    await sleep(5);
    const r = await admin("PATCH", `/admin/clients/${c.id}`, { name: "Renamed", tier: "premium" });
    expect(r.status).toBe(200);
    expect(r.body.client).toEqual({ ...c, name: "Renamed", tier: "premium", updated_at: r.body.client.updated_at });
    expect(r.body.client.updated_at).toBeGreaterThan(c.updated_at);
    expect((await admin("GET", `/admin/clients/${c.id}`)).body.client).toEqual(r.body.client);

    // null budget: back to the tier's (premium: $1,000)
    const back = await admin("PATCH", `/admin/clients/${c.id}`, { monthly_budget_nano: null, email: "new@x.example" });
    expect(back.body.client).toMatchObject({ monthly_budget_nano: null, email: "new@x.example", name: "Renamed" });
    expect((await admin("GET", `/admin/clients/${c.id}/budget`)).body).toMatchObject({ budget_source: "tier", budget_nano: 1_000_000_000_000 });
    await admin("PATCH", `/admin/clients/${c.id}`, { monthly_budget_nano: 9 });
    expect((await admin("GET", `/admin/clients/${c.id}/budget`)).body).toMatchObject({ budget_source: "client", budget_nano: 9 });
  });

  it("an empty or bad body is 400 naming the fields, and changes nothing", async () => {
    const c = await newClient();
    const empty = await admin("PATCH", `/admin/clients/${c.id}`, {});
    expectError(empty, 400, "validation_failed");
    for (const field of ["name", "email", "tier", "monthly_budget_nano", "status"]) expect(empty.body.error.details.fields[0].message).toContain(field);
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ name: "" }, "name"], [{ email: "nope" }, "email"], [{ tier: "gold" }, "tier"], [{ monthly_budget_nano: -5 }, "monthly_budget_nano"],
      [{ status: "deleted" }, "status"], [{ name: "ok", tier: "platinum" }, "tier"],
    ];
    for (const [body, field] of cases) expect(fieldsOf(await admin("PATCH", `/admin/clients/${c.id}`, body))).toEqual([field]);
    const unknown = await admin("PATCH", `/admin/clients/${c.id}`, { name: "ok", id: "renamed" });
    expectError(unknown, 400, "validation_failed");
    expect(JSON.stringify(unknown.body.error.details)).toContain("id");
    expect((await call("PATCH", `/admin/clients/${c.id}`, { token: ADMIN })).status).toBe(400);
    expectError(await call("PATCH", `/admin/clients/${c.id}`, { token: ADMIN, body: "{", headers: { "content-type": "application/json" } }), 400, "bad_request");
    expect((await admin("GET", `/admin/clients/${c.id}`)).body.client).toEqual(c);
  });
});

describe("unknown clients and bad ids", () => {
  it("every route answers 404 client_not_found for an unknown client and 400 for a malformed id", async () => {
    const id = uid("ghost");
    const routes: Array<[string, string, unknown?]> = [
      ["GET", `/admin/clients/${id}`], ["PATCH", `/admin/clients/${id}`, { name: "x" }], ["DELETE", `/admin/clients/${id}`],
      ["DELETE", `/admin/clients/${id}?force=true`], ["POST", `/admin/clients/${id}/keys`, { scopes: ["execute"] }],
      ["GET", `/admin/clients/${id}/keys`], ["DELETE", `/admin/clients/${id}/keys/key_demo_acme`],
    ];
    for (const [method, path, json] of routes) expectError(await admin(method, path, json), 404, "client_not_found");
    expect((await env.DB.prepare("SELECT COUNT(*) AS n FROM api_keys WHERE client_id = ?1").bind(id).first<{ n: number }>())!.n).toBe(0);
    expect(fieldsOf(await admin("GET", "/admin/clients/bad.id"))).toEqual(["param.clientId"]);
    expect(fieldsOf(await admin("DELETE", "/admin/clients/acme/keys/nope"))).toEqual(["param.keyId"]);
    expect(fieldsOf(await admin("DELETE", "/admin/clients/acme?force=yes"))).toEqual(["query.force"]);
  });
});

describe("authorization", () => {
  it("every client and key route is admin only: 401 without or with a bad credential, 403 for a key, internal or metrics token", async () => {
    const routes: Array<[string, string, unknown?]> = [
      ["POST", "/admin/clients", { id: uid(), name: "x", email: "x@y.example", tier: "basic" }], ["GET", "/admin/clients"],
      ["GET", "/admin/clients/acme"], ["PATCH", "/admin/clients/acme", { name: "Hacked" }], ["DELETE", "/admin/clients/acme?force=true"],
      ["POST", "/admin/clients/acme/keys", { scopes: ["execute"] }], ["GET", "/admin/clients/acme/keys"],
      ["DELETE", "/admin/clients/acme/keys/key_demo_acme"],
    ];
    for (const [method, path, json] of routes) {
      expectError(await call(method, path, { json }), 401, "unauthorized");
      expectError(await call(method, path, { json, token: "rmk_not_a_key" }), 401, "unauthorized");
      for (const token of [KEYS.acme, INTERNAL, METRICS]) expectError(await call(method, path, { json, token }), 403, "forbidden");
    }
    const acme = (await admin("GET", "/admin/clients/acme")).body;
    expect(acme.client.name).toBe("Acme Corp");
    expect(acme.counts.active_keys).toBe(1);
  });

  it("/status needs resources:read from a key (the scope audit)", async () => {
    const r = await call("GET", "/status", { token: KEYS.hooliReadOnly });
    expectError(r, 403, "forbidden");
    expect(r.body.error.details.required_scope).toBe("resources:read");
    expect((await call("GET", "/status", { token: KEYS.hooli })).status).toBe(200);
  });
});

describe("API keys", () => {
  it("issues a secret shown once; only its SHA-256 is stored; it works for its scopes and is 403 for the others", async () => {
    const c = await newClient();
    const k = await newKey(c.id, ["usage:read", "resources:read"], "ci");
    expect(k).toEqual({
      key: expect.stringMatching(/^rmk_[A-Za-z0-9_-]{43}$/), id: expect.stringMatching(/^key_[a-f0-9]{32}$/), client_id: c.id, name: "ci",
      prefix: k.key.slice(0, 12), scopes: ["usage:read", "resources:read"], created_at: expect.any(Number), revoked_at: null, trace_id: expect.any(String),
    });
    const row = await env.DB.prepare("SELECT * FROM api_keys WHERE id = ?1").bind(k.id).first<Record<string, unknown>>();
    expect(row!.key_hash).toBe(await sha256Hex(k.key));
    expect(Object.values(row!)).not.toContain(k.key);

    expect((await call("GET", `/api/usage/${c.id}/current`, { token: k.key })).status).toBe(200);
    expect((await call("GET", "/api/resources/availability", { token: k.key })).status).toBe(200);
    const exec = await call("POST", "/api/execute", { token: k.key, json: { template: "notify-email" } });
    expectError(exec, 403, "forbidden");
    expect(exec.body.error.details.required_scope).toBe("execute");
    expectError(await call("POST", "/api/queue/enqueue", { token: k.key, json: { template: "notify-email" } }), 403, "forbidden");
    // its own client only
    expectError(await call("GET", "/api/usage/acme/current", { token: k.key }), 403, "forbidden");

    // an execute key runs work for its client
    const e = await newKey(c.id, ["execute"]);
    const ran = await call("POST", "/api/execute", { token: e.key, json: { template: "notify-email", params: { to: ["a@x"] } } });
    expect(ran.status, JSON.stringify(ran.body)).toBe(200);
    expect(ran.body.request).toMatchObject({ client_id: c.id, status: "completed" });
    expectError(await call("GET", `/api/usage/${c.id}/current`, { token: e.key }), 403, "forbidden");
    expect((await admin("GET", `/admin/clients/${c.id}`)).body.counts.active_keys).toBe(2);
  });

  it("keys issued concurrently are all distinct and all work", async () => {
    const c = await newClient();
    const issued = await Promise.all(Array.from({ length: 6 }, () => newKey(c.id, ["usage:read"])));
    expect(new Set(issued.map((k) => k.key)).size).toBe(6);
    expect(new Set(issued.map((k) => k.id)).size).toBe(6);
    const reads = await Promise.all(issued.map((k) => call("GET", `/api/usage/${c.id}/current`, { token: k.key })));
    expect(reads.map((r) => r.status)).toEqual(Array(6).fill(200));
  });

  it("the list shows prefix, scopes and dates, never the secret or its hash", async () => {
    const c = await newClient();
    const a = await newKey(c.id, ["execute"], "first");
    const b = await newKey(c.id, [...SCOPES]);
    const r = await admin("GET", `/admin/clients/${c.id}/keys`);
    expect(r.status).toBe(200);
    expect(r.body.client_id).toBe(c.id);
    expect(r.body.keys).toEqual([
      { id: a.id, client_id: c.id, name: "first", prefix: a.prefix, scopes: ["execute"], created_at: a.created_at, revoked_at: null },
      { id: b.id, client_id: c.id, name: null, prefix: b.prefix, scopes: [...SCOPES], created_at: b.created_at, revoked_at: null },
    ].sort((x, y) => x.created_at - y.created_at || x.id.localeCompare(y.id)));
    const text = JSON.stringify(r.body);
    for (const k of [a, b]) {
      expect(text).not.toContain(k.key);
      expect(text).not.toContain(await sha256Hex(k.key));
    }
  });

  it("revoke stops the key at once (401); again is the same answer; unknown or another client's key is 404", async () => {
    const c = await newClient();
    const k = await newKey(c.id, ["usage:read"]);
    const keep = await newKey(c.id, ["usage:read"]);
    expect((await call("GET", `/api/usage/${c.id}/current`, { token: k.key })).status).toBe(200); // now cached in this isolate
    const r = await admin("DELETE", `/admin/clients/${c.id}/keys/${k.id}`);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ id: k.id, client_id: c.id, prefix: k.prefix, revoked_at: expect.any(Number) });
    expect(r.body.key).toBeUndefined();
    expectError(await call("GET", `/api/usage/${c.id}/current`, { token: k.key }), 401, "unauthorized");
    expect((await call("GET", `/api/usage/${c.id}/current`, { token: keep.key })).status).toBe(200);

    await sleep(5);
    const again = await admin("DELETE", `/admin/clients/${c.id}/keys/${k.id}`);
    expect(again.status).toBe(200);
    expect(again.body.revoked_at).toBe(r.body.revoked_at);
    expectError(await admin("DELETE", `/admin/clients/${c.id}/keys/key_${"0".repeat(32)}`), 404, "key_not_found");
    // another client's key through this client's path: 404, and it still works
    expectError(await admin("DELETE", `/admin/clients/${c.id}/keys/key_demo_hooli`), 404, "key_not_found");
    expect((await call("GET", "/api/usage/hooli/current", { token: KEYS.hooli })).status).toBe(200);

    const list = (await admin("GET", `/admin/clients/${c.id}/keys`)).body.keys;
    const byAge = [{ ...k, revoked_at: r.body.revoked_at }, keep].sort((x, y) => x.created_at - y.created_at || x.id.localeCompare(y.id));
    expect(list.map((x: any) => [x.id, x.revoked_at])).toEqual(byAge.map((x) => [x.id, x.revoked_at]));
    expect((await admin("GET", `/admin/clients/${c.id}`)).body.counts.active_keys).toBe(1);
  });

  it("bad key requests are 400 naming the field and issue nothing", async () => {
    const c = await newClient();
    const cases: Array<[unknown, string]> = [
      [{ scopes: [] }, "scopes"], [{ scopes: ["admin"] }, "scopes.0"], [{ scopes: ["execute", "execute"] }, "scopes"],
      [{ scopes: "execute" }, "scopes"], [{}, "scopes"], [{ scopes: ["execute"], name: "" }, "name"], [{ scopes: ["execute"], name: "n".repeat(101) }, "name"],
    ];
    for (const [body, field] of cases) expect(fieldsOf(await admin("POST", `/admin/clients/${c.id}/keys`, body)), JSON.stringify(body)).toEqual([field]);
    const unknown = await admin("POST", `/admin/clients/${c.id}/keys`, { scopes: ["execute"], key: "rmk_chosen_by_me" });
    expectError(unknown, 400, "validation_failed");
    expect(JSON.stringify(unknown.body.error.details)).toContain("key");
    expect((await admin("GET", `/admin/clients/${c.id}/keys`)).body.keys).toEqual([]);
  });
});

describe("suspension", () => {
  it("a suspended client's key reads but may not start work (403 client_suspended); nor may the admin, internal token or RPC act for it; reactivating restores", async () => {
    const c = await newClient();
    const k = await newKey(c.id, ["execute", "usage:read", "resources:read"]);
    const pool = await makePool({ capacity: 1000 });
    expect((await call("POST", "/api/execute", { token: k.key, json: { template: "notify-email" } })).status).toBe(200); // cache warm while active

    const s = await admin("PATCH", `/admin/clients/${c.id}`, { status: "suspended" });
    expect(s.body.client.status).toBe("suspended");

    // its key: new work refused at once in this isolate...
    for (const [method, path, json] of [
      ["POST", "/api/execute", { template: "notify-email" }],
      ["POST", "/api/queue/enqueue", { template: "notify-email" }],
      ["POST", "/api/resources/check", { pool: pool.id, amount: 1 }],
    ] as const) {
      const r = await call(method, path, { token: k.key, json });
      expectError(r, 403, "client_suspended");
      expect(r.body.error.details).toEqual({ client_id: c.id });
    }
    // ...reads still answer
    expect((await call("GET", `/api/usage/${c.id}/current`, { token: k.key })).status).toBe(200);
    expect((await call("GET", "/api/resources/availability", { token: k.key })).status).toBe(200);
    expect((await call("GET", "/api/queue/status", { token: k.key })).status).toBe(200);

    // the admin and internal tokens acting for it: new work refused, reads and checks allowed
    expectError(await call("POST", "/api/queue/enqueue", { token: ADMIN, json: { template: "notify-email", client_id: c.id } }), 403, "client_suspended");
    expectError(await call("POST", "/api/queue/enqueue", { token: ADMIN, json: { requests: [{ template: "notify-email" }], client_id: c.id } }), 403, "client_suspended");
    expectError(await call("POST", "/api/execute", { token: ADMIN, json: { template: "notify-email", client_id: c.id } }), 403, "client_suspended");
    expectError(await consume(pool.id, 1, {}, c.id), 403, "client_suspended");
    expectError(await call("POST", "/internal/reserve", { token: INTERNAL, json: { client_id: c.id, pool: pool.id, amount: 1 } }), 403, "client_suspended");
    expect((await call("GET", `/api/usage/${c.id}/current`, { token: ADMIN })).status).toBe(200);
    expect((await call("POST", "/api/cost/estimate", { token: ADMIN, json: { template: "notify-email", client_id: c.id } })).status).toBe(200);
    expect((await call("POST", "/api/resources/check", { token: ADMIN, json: { pool: pool.id, amount: 1, client_id: c.id } })).status).toBe(200);

    // RPC: the same rule (client operations act as the client's key would: reads only)
    expect((await rpc("execute", { client_id: c.id, template: "notify-email" })).error.code).toBe("client_suspended");
    expect((await rpc("enqueue", { client_id: c.id, requests: [{ template: "notify-email" }] })).error.code).toBe("client_suspended");
    expect((await rpc("consume", { client_id: c.id, pool: pool.id, amount: 1 })).error.code).toBe("client_suspended");
    expect((await rpc("reserve", { client_id: c.id, pool: pool.id, amount: 1 })).error.code).toBe("client_suspended");
    expect((await rpc("currentUsage", { client_id: c.id })).ok).toBe(true);

    // nothing was spent or enqueued meanwhile
    expect((await admin("GET", `/admin/clients/${c.id}`)).body.counts).toMatchObject({ queued: 0, running: 0 });

    await admin("PATCH", `/admin/clients/${c.id}`, { status: "active" });
    const again = await call("POST", "/api/execute", { token: k.key, json: { template: "notify-email" } });
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    const queued = await enqueueWaiting(ADMIN, 1, c.id);
    expect((await consume(pool.id, 1, {}, c.id)).status).toBe(200);
    expect((await rpc("consume", { client_id: c.id, pool: pool.id, amount: 1 })).ok).toBe(true);
    expect((await call("POST", `/api/execution/${queued[0]}/cancel`, { token: k.key })).status).toBe(200);
  });

  it("a reservation made before the suspension can still be released (settling starts nothing)", async () => {
    const c = await newClient();
    const pool = await makePool({ capacity: 10 });
    const held = await call("POST", "/internal/reserve", { token: INTERNAL, json: { client_id: c.id, pool: pool.id, amount: 4 } });
    expect(held.status).toBe(200);
    await admin("PATCH", `/admin/clients/${c.id}`, { status: "suspended" });
    const released = await call("POST", "/internal/release", { token: INTERNAL, json: { client_id: c.id, pool: pool.id, reservation_id: held.body.reservation_id, actual_used: 1 } });
    expect(released.status, JSON.stringify(released.body)).toBe(200);
    expect(released.body).toMatchObject({ consumed: 1, refunded: 3 });
  });
});

describe("delete", () => {
  it("an idle client is deleted with its keys, budget and quota rows; its usage history stays; its object forgets", async () => {
    const c = await newClient();
    const k = await newKey(c.id, ["usage:read"]);
    expect((await call("GET", `/api/usage/${c.id}/current`, { token: k.key })).status).toBe(200);
    expect((await admin("PUT", `/admin/clients/${c.id}/budget`, { monthly_budget_nano: 123 })).status).toBe(200);
    await env.DB.prepare("INSERT INTO client_quotas (client_id, max_concurrent, updated_at) VALUES (?1, 3, 0)").bind(c.id).run();
    await env.DB.prepare("INSERT INTO usage_events (event_id, pool_id, client_id, request_id, via, kind, units, cost_nano, at) VALUES (?1, 'openai-gpt4', ?2, NULL, 'api', 'consume', 1, 30000, 1)")
      .bind(`evt-${c.id}`, c.id).run();
    const stub = env.CLIENT.get(env.CLIENT.idFromName(c.id));
    await runInDurableObject(stub, async (_o, state) => state.storage.put("marker", 1));

    const r = await admin("DELETE", `/admin/clients/${c.id}`);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ client_id: c.id, deleted: true, queued: 0, running: 0, cancelled: 0 });

    expectError(await admin("GET", `/admin/clients/${c.id}`), 404, "client_not_found");
    expectError(await admin("DELETE", `/admin/clients/${c.id}`), 404, "client_not_found");
    expectError(await call("GET", `/api/usage/${c.id}/current`, { token: k.key }), 401, "unauthorized");
    const left = await env.DB.prepare(
      `SELECT (SELECT COUNT(*) FROM api_keys WHERE client_id = ?1) AS keys, (SELECT COUNT(*) FROM client_budgets WHERE client_id = ?1) AS budgets,
              (SELECT COUNT(*) FROM client_quotas WHERE client_id = ?1) AS quotas, (SELECT COUNT(*) FROM usage_events WHERE client_id = ?1) AS events`,
    ).bind(c.id).first();
    expect(left).toEqual({ keys: 0, budgets: 0, quotas: 0, events: 1 });
    expect(await runInDurableObject(stub, async (_o, state) => state.storage.get("marker"))).toBeUndefined();
  });

  it("with a live allocation only: 409 client_busy; force=true releases it and the capacity comes back", async () => {
    const c = await newClient();
    const alloc = await admin("POST", "/api/resources/allocate", { client_id: c.id, job_id: "job-1", workers: 2 });
    expect(alloc.status, JSON.stringify(alloc.body)).toBe(201);
    const busy = await admin("DELETE", `/admin/clients/${c.id}`);
    expectError(busy, 409, "client_busy");
    expect(busy.body.error.details).toEqual({ client_id: c.id, queued: 0, running: 0, allocations: 1 });
    const forced = await admin("DELETE", `/admin/clients/${c.id}?force=true`);
    expect(forced.status, JSON.stringify(forced.body)).toBe(200);
    const after = await admin("GET", `/api/resources/allocations/${alloc.body.allocation.id}`);
    expect(after.body.allocation.state).toBe("released");
  });

  it("with queued work: 409 client_busy naming the counts and nothing changes; force=true cancels it all, deletes, and the key stops", async () => {
    const c = await newClient();
    const k = await newKey(c.id, ["execute", "usage:read"]);
    const ids = await enqueueWaiting(k.key, 3);
    expect((await admin("GET", `/admin/clients/${c.id}`)).body.counts).toEqual({ active_keys: 1, queued: 3, running: 0 });

    const busy = await admin("DELETE", `/admin/clients/${c.id}`);
    expectError(busy, 409, "client_busy");
    expect(busy.body.error.details).toEqual({ client_id: c.id, queued: 3, running: 0, allocations: 0 });
    expectError(await admin("DELETE", `/admin/clients/${c.id}?force=false`), 409, "client_busy");
    expect((await admin("GET", `/admin/clients/${c.id}`)).body.counts).toEqual({ active_keys: 1, queued: 3, running: 0 });
    expect((await call("GET", `/api/execution/${ids[0]}`, { token: k.key })).body.request.status).toBe("queued");

    const other = await newClient();
    const othersWork = await enqueueWaiting(ADMIN, 2, other.id);

    const forced = await admin("DELETE", `/admin/clients/${c.id}?force=true`);
    expect(forced.status, JSON.stringify(forced.body)).toBe(200);
    expect(forced.body).toMatchObject({ client_id: c.id, deleted: true, queued: 3, running: 0, cancelled: 3 });
    for (const id of ids) expect((await admin("GET", `/api/execution/${id}`)).body.request.status).toBe("cancelled");
    expectError(await admin("GET", `/admin/clients/${c.id}`), 404, "client_not_found");
    expectError(await call("GET", `/api/execution/${ids[0]}`, { token: k.key }), 401, "unauthorized");
    expectError(await call("POST", "/api/queue/enqueue", { token: k.key, json: { template: "notify-email" } }), 401, "unauthorized");
    expectError(await call("POST", "/api/queue/enqueue", { token: ADMIN, json: { template: "notify-email", client_id: c.id } }), 404, "client_not_found");

    // another client's work is untouched
    expect((await admin("GET", `/admin/clients/${other.id}`)).body.counts.queued).toBe(2);
    for (const id of othersWork) expect((await admin("POST", `/api/execution/${id}/cancel`)).status).toBe(200);

    // the id is retired: never used again (test/api/tenant-lifecycle.test.ts)
    expectError(await admin("POST", "/admin/clients", { id: c.id, name: "Reborn", email: "ops@reborn.example", tier: "premium" }), 409, "client_id_retired");
  });
});
