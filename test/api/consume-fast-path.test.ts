import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app";
import { hotConsume, isHotConsume, plainConsume } from "../../src/routes/consume-fast-path";
import { ConsumeRequest } from "../../src/routes/internal";
import { latencySnapshots } from "../../src/services/latency";
import { checkResponse } from "../support/contract";
import { ADMIN, INTERNAL, KEYS, makePool } from "../support/helpers";

/**
 * POST /internal/consume is served round the router (src/routes/consume-fast-path.ts). The same request sent to the
 * worker (the hot path) and to the app alone must be answered alike: status, body, headers.
 */
const app = createApp();

interface Answer {
  status: number;
  headers: Headers;
  body: Record<string, any>;
}

function request(body: string | undefined, headers: Record<string, string>, path = "/internal/consume"): Request {
  return new Request(`https://rm.test${path}`, { method: "POST", headers, body });
}

async function answer(res: Response, path = "/internal/consume"): Promise<Answer> {
  const text = await res.text();
  checkResponse("POST", path, res.status, res.headers, text);
  return { status: res.status, headers: res.headers, body: JSON.parse(text) };
}

/** Through the worker's fetch: the hot path (which may hand the request to the app). */
async function viaWorker(body: string | undefined, headers: Record<string, string>): Promise<Answer> {
  return answer(await exports.default.fetch(request(body, headers)));
}

/** Through the app alone: the router, middleware and validator. */
async function viaApp(body: string | undefined, headers: Record<string, string>): Promise<Answer> {
  const ctx = createExecutionContext();
  const res = await app.fetch(request(body, headers), env, ctx);
  const out = await answer(res);
  await waitOnExecutionContext(ctx);
  return out;
}

const auth = (token: string) => ({ authorization: `Bearer ${token}`, "content-type": "application/json" });
const json = (o: unknown) => JSON.stringify(o);

async function available(pool: string): Promise<number> {
  const r = await exports.default.fetch(new Request("https://rm.test/api/resources/check", {
    method: "POST", headers: auth(KEYS.acme), body: json({ pool, amount: 1 }),
  }));
  return ((await r.json()) as { results: Array<{ available: number }> }).results[0]!.available;
}

/** The two answers agree in everything but the ids that differ by nature (event id, trace id when not given). */
function expectSame(hot: Answer, plain: Answer): void {
  expect(hot.status).toBe(plain.status);
  expect(hot.headers.get("content-type")).toBe(plain.headers.get("content-type"));
  expect(hot.headers.get("retry-after")).toBe(plain.headers.get("retry-after"));
  expect(hot.headers.get("x-trace-id")).toBe(hot.body.trace_id);
  expect(plain.headers.get("x-trace-id")).toBe(plain.body.trace_id);
  const strip = (b: Record<string, any>) => {
    const { trace_id: _t, event_id: e, ...rest } = b;
    return { ...rest, event_id: typeof e };
  };
  expect(strip(hot.body)).toEqual(strip(plain.body));
}

describe("the hot path: POST /internal/consume round the router", () => {
  afterEach(() => vi.restoreAllMocks());

  it("takes exactly POST /internal/consume", () => {
    expect(isHotConsume(request("{}", {}))).toBe(true);
    expect(isHotConsume(new Request("https://rm.test/internal/consume", { method: "GET" }))).toBe(false);
    expect(isHotConsume(request("{}", {}, "/internal/consume?x=1"))).toBe(false);
    expect(isHotConsume(request("{}", {}, "/internal/consume/"))).toBe(false);
    expect(isHotConsume(request("{}", {}, "/x/internal/consume"))).toBe(false);
    expect(isHotConsume(request("{}", {}, "/internal/reserve"))).toBe(false);
  });

  it("a spend answers as the app does, with the caller's trace id, and spends once per call", async () => {
    const a = await makePool({ capacity: 100, costPerUnitNano: 250 });
    const b = await makePool({ capacity: 100, costPerUnitNano: 250 });
    const headers = { ...auth(INTERNAL), "x-trace-id": "trace-hot-1" };
    const hot = await viaWorker(json({ client_id: "acme", pool: a.id, amount: 7 }), headers);
    const plain = await viaApp(json({ client_id: "acme", pool: b.id, amount: 7 }), headers);
    expect(hot.body).toMatchObject({ pool: a.id, units: 7, cost_nano: 1750, remaining: 93, trace_id: "trace-hot-1" });
    expect(hot.body.event_id).toMatch(/^evt_[a-f0-9]{32}$/);
    expectSame(hot, { ...plain, body: { ...plain.body, pool: a.id } });
    expect(await available(a.id)).toBe(93);
    // The admin token spends too (as the route allows); without a trace id one is made.
    const admin = await viaWorker(json({ client_id: "acme", pool: a.id, amount: 3 }), auth(ADMIN));
    expect(admin.status).toBe(200);
    expect(admin.body.trace_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(await available(a.id)).toBe(90);
  });

  it("denials and errors after the decision carry the same envelope and Retry-After", async () => {
    const a = await makePool({ capacity: 5, refillPerSec: 1 });
    const b = await makePool({ capacity: 5, refillPerSec: 1 });
    const spend = (id: string, amount: number) => json({ client_id: "acme", pool: id, amount });
    expect((await viaWorker(spend(a.id, 5), auth(INTERNAL))).status).toBe(200);
    expect((await viaApp(spend(b.id, 5), auth(INTERNAL))).status).toBe(200);
    const hot = await viaWorker(spend(a.id, 3), auth(INTERNAL));
    const plain = await viaApp(spend(b.id, 3), auth(INTERNAL));
    expect(hot.status).toBe(429);
    expect(hot.body.error).toMatchObject({ code: "rate_limited", details: { pool: a.id, requested: 3 } });
    expect(Number(hot.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(hot.body.error.code).toBe(plain.body.error.code);
    expect(hot.headers.get("retry-after")).toBe(plain.headers.get("retry-after"));
    // Unknown pool, unknown client, amount above capacity, a dedicated pool of another client.
    const dedicated = await makePool({ capacity: 10, sharing: { mode: "dedicated", clientId: "globex" } });
    for (const body of [
      { client_id: "acme", pool: "no-such-pool", amount: 1 },
      { client_id: "nobody", pool: a.id, amount: 1 },
      { client_id: "acme", pool: a.id, amount: 6 },
      { client_id: "acme", pool: dedicated.id, amount: 1 },
    ]) {
      expectSame(await viaWorker(json(body), auth(INTERNAL)), await viaApp(json(body), auth(INTERNAL)));
    }
  });

  it("an idempotent retry on the hot path is answered the same and spends once", async () => {
    const pool = await makePool({ capacity: 100 });
    const body = json({ client_id: "acme", pool: pool.id, amount: 4, idempotency_key: "hot-retry-1" });
    const first = await viaWorker(body, auth(INTERNAL));
    const again = await viaWorker(body, { ...auth(INTERNAL), "idempotency-key": "hot-retry-1" });
    expect(again.body.event_id).toBe(first.body.event_id);
    expect(again.body.remaining).toBe(96);
    expect(await available(pool.id)).toBe(96);
  });

  it("what it is not sure of goes to the app, which answers as always, and nothing is spent", async () => {
    const pool = await makePool({ capacity: 100 });
    const ok = { client_id: "acme", pool: pool.id, amount: 1 };
    const cases: Array<[string, string | undefined, Record<string, string>, number, string]> = [
      ["malformed JSON", "{not json", auth(INTERNAL), 400, "bad_request"],
      ["no body", undefined, auth(INTERNAL), 400, "bad_request"],
      ["another content type", json(ok), { authorization: `Bearer ${INTERNAL}`, "content-type": "text/plain" }, 400, "bad_request"],
      ["no credential", json(ok), { "content-type": "application/json" }, 401, "unauthorized"],
      ["a wrong token", json(ok), auth("not-a-token"), 401, "unauthorized"],
      ["a client's API key", json(ok), auth(KEYS.acme), 403, "forbidden"],
      ["a negative amount", json({ ...ok, amount: -1 }), auth(INTERNAL), 400, "validation_failed"],
      ["a fractional amount", json({ ...ok, amount: 1.5 }), auth(INTERNAL), 400, "validation_failed"],
      ["an unknown field", json({ ...ok, extra: 1 }), auth(INTERNAL), 400, "validation_failed"],
      ["JSON null", "null", auth(INTERNAL), 400, "validation_failed"],
      ["keys that differ", json({ ...ok, idempotency_key: "a" }), { ...auth(INTERNAL), "idempotency-key": "b" }, 400, "validation_failed"],
      ["an empty key header", json(ok), { ...auth(INTERNAL), "idempotency-key": "" }, 400, "validation_failed"],
    ];
    for (const [name, body, headers, status, code] of cases) {
      const hot = await viaWorker(body, headers);
      const plain = await viaApp(body, headers);
      expect({ name, status: hot.status, code: hot.body.error?.code }).toEqual({ name, status, code });
      expect({ name, body: { ...hot.body, trace_id: 0 } }).toEqual({ name, body: { ...plain.body, trace_id: 0 } });
    }
    expect(await available(pool.id)).toBe(100);
  });

  it("its plain-body check accepts only what the route's schema accepts, with the same data", () => {
    const ok = { client_id: "acme", pool: "openai-gpt4", amount: 5 };
    const long = "k".repeat(128);
    const inputs: unknown[] = [
      ok,
      { ...ok, request_id: "req_1", idempotency_key: "job-1" },
      { ...ok, request_id: long, idempotency_key: long },
      { ...ok, request_id: long + "k" },
      { ...ok, idempotency_key: "" },
      { ...ok, request_id: undefined },
      { ...ok, request_id: null },
      { ...ok, request_id: 5 },
      { ...ok, amount: 1_000_000_000_000 },
      { ...ok, amount: 1_000_000_000_001 },
      { ...ok, amount: 0 },
      { ...ok, amount: -3 },
      { ...ok, amount: 2.5 },
      { ...ok, amount: "5" },
      { ...ok, amount: Number.NaN },
      { ...ok, amount: Number.POSITIVE_INFINITY },
      { ...ok, amount: 2 ** 53 },
      { ...ok, pool: "Upper" },
      { ...ok, pool: "-lead" },
      { ...ok, pool: "p".repeat(64) },
      { ...ok, pool: "p".repeat(65) },
      { ...ok, pool: "pool\n" },
      { ...ok, client_id: "Acme_Corp-1" },
      { ...ok, client_id: "_x" },
      { ...ok, client_id: "c".repeat(65) },
      { ...ok, client_id: undefined },
      { ...ok, extra: 1 },
      { client_id: "acme", pool: "p" },
      JSON.parse('{"client_id":"acme","pool":"p","amount":1,"__proto__":{"x":1}}'),
      Object.assign(Object.create({ inherited: 1 }), ok),
      [ok],
      null,
      "acme",
      7,
    ];
    let accepted = 0;
    for (const input of inputs) {
      const plain = plainConsume(input);
      if (plain === null) continue;
      accepted += 1;
      const schema = ConsumeRequest.safeParse(input);
      expect({ input, success: schema.success }).toEqual({ input, success: true });
      expect(plain).toEqual(schema.data);
    }
    // The usual bodies do take the plain path.
    expect(accepted).toBeGreaterThanOrEqual(6);
    expect(plainConsume(ok)).toEqual(ok);
  });

  it("a credential lookup that fails goes to the app (its envelope), untouched", async () => {
    const failingDb = { prepare: () => { throw new Error("D1 down"); }, batch: async () => { throw new Error("D1 down"); } } as unknown as D1Database;
    let handed: Request | null = null;
    const res = await hotConsume(
      request(json({ client_id: "acme", pool: "p", amount: 1 }), auth(`rmk_unknown_${crypto.randomUUID()}`)),
      { ...env, DB: failingDb },
      createExecutionContext(),
      (r) => {
        handed = r;
        return new Response("from the app", { status: 599 });
      },
    );
    expect(res.status).toBe(599);
    expect(await res.text()).toBe("from the app");
    // The body was not read: the app gets the request as it came.
    expect(await handed!.json()).toEqual({ client_id: "acme", pool: "p", amount: 1 });
  });

  it("logs one request line and counts the latency under the route, as the app does", async () => {
    const pool = await makePool({ capacity: 100 });
    const count = () => latencySnapshots()
      .filter((s) => s.labels.route === "/internal/consume" && s.labels.method === "POST" && s.labels.status_class === "2xx")
      .reduce((n, s) => n + s.value.count, 0);
    const before = count();
    const spy = vi.spyOn(console, "log");
    // REQUEST_LOG=all: the shipped default (errors) logs a fast success only as one of its sample.
    const ctx = createExecutionContext();
    const res = await hotConsume(request(json({ client_id: "acme", pool: pool.id, amount: 1 }), { ...auth(INTERNAL), "x-trace-id": "trace-hot-log" }), { ...env, REQUEST_LOG: "all" }, ctx, (r) => app.fetch(r, env, ctx));
    const hot = await answer(res);
    await waitOnExecutionContext(ctx);
    const lines = spy.mock.calls.map((args) => JSON.parse(String(args[0])) as Record<string, unknown>).filter((l) => l.msg === "request");
    expect(hot.status).toBe(200);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: "info", trace_id: "trace-hot-log", method: "POST", path: "/internal/consume", route: "/internal/consume", status: 200, principal: "internal" });
    expect(JSON.stringify(lines)).not.toContain(INTERNAL);
    expect(count()).toBe(before + 1);
  });
});
