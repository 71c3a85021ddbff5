import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { canonicalJson, jsonTooDeep, MAX_JSON_DEPTH, nestsDeeperThan } from "../../src/domain/json";
import { hotConsume } from "../../src/routes/consume-fast-path";
import { maxBodyBytes } from "../../src/http/limits";
import { checkResponse } from "../support/contract";
import { ADMIN, call, expectError, INTERNAL, makeClient, makePool, makeTemplate, type Call } from "../support/helpers";

const MAX = 1_048_576; // wrangler.toml MAX_BODY_BYTES
const MB50 = 50 * 1024 * 1024;
const HOUR = 3_600_000;


/** A client with one request queued for an hour (1,000 nano-dollars in flight), and its template. */
async function clientWithMoneyInFlight() {
  const pool = await makePool({ capacity: 1000, refillPerSec: 1 });
  const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
  const client = await makeClient("il");
  const queued = await call("POST", "/api/queue/enqueue", { token: client.key, json: { template, not_before: Date.now() + HOUR } });
  expect(queued.status).toBe(202);
  expect(await inFlight(client.id)).toBe(1000);
  return { pool, template, client, firstId: queued.body.request.id as string };
}

async function inFlight(clientId: string): Promise<number> {
  const r = await call("GET", `/api/usage/${clientId}/current`, { token: ADMIN });
  expect(r.status).toBe(200);
  return r.body.in_flight_nano;
}

async function requestCount(clientId: string): Promise<number> {
  const r = await call("GET", `/api/usage/${clientId}/current`, { token: ADMIN });
  return Object.values(r.body.requests_by_status as Record<string, number>).reduce((a, b) => a + b, 0);
}

const deepArray = (n: number) => "[".repeat(n) + "]".repeat(n);
const deepObject = (n: number) => '{"a":'.repeat(n - 1) + "{}" + "}".repeat(n - 1);

/** A raw POST through the worker, its answer held to the OpenAPI document. */
async function post(path: string, body: BodyInit | null, headers: Record<string, string>): Promise<Call> {
  const res = await exports.default.fetch(new Request(`https://rm.test${path}`, { method: "POST", headers, body }));
  const text = await res.text();
  checkResponse("POST", path, res.status, res.headers, text);
  return { status: res.status, body: JSON.parse(text), headers: res.headers };
}

/** A body of `total` bytes made on demand, 64 KiB at a time; `pulled` says how much was read. */
function streamed(total: number): { stream: ReadableStream<Uint8Array>; pulled: () => number } {
  const chunk = new Uint8Array(64 * 1024).fill(0x20);
  let sent = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= total) return controller.close();
      const n = Math.min(chunk.byteLength, total - sent);
      sent += n;
      controller.enqueue(n === chunk.byteLength ? chunk.slice() : chunk.slice(0, n));
    },
  }, { highWaterMark: 0 });
  return { stream, pulled: () => sent };
}

/** JSON text padded with trailing whitespace (valid JSON) to exactly `size` bytes. */
function padded(json: unknown, size: number): string {
  const text = JSON.stringify(json);
  expect(text.length).toBeLessThanOrEqual(size);
  return text + " ".repeat(size - text.length);
}

describe("JSON depth (pure)", () => {
  it("counts objects and arrays outside strings, the body being level 1, and names the top-level key", () => {
    const bytes = (s: string) => new TextEncoder().encode(s);
    expect(jsonTooDeep(bytes(deepArray(64)))).toBeNull();
    expect(jsonTooDeep(bytes(deepArray(65)))).toEqual({ path: "" });
    expect(jsonTooDeep(bytes(`{"template":"x","params":${deepObject(63)}}`))).toBeNull();
    expect(jsonTooDeep(bytes(`{"template":"x","params":${deepObject(64)}}`))).toEqual({ path: "params" });
    // Brackets and escaped quotes inside strings are text, not nesting.
    expect(jsonTooDeep(bytes(JSON.stringify({ s: "[".repeat(500) + '\\"{{{' })))).toBeNull();
    expect(jsonTooDeep(bytes(`{"k\\"ey":${deepArray(64)}}`))).toEqual({ path: 'k\\"ey' });
    expect(nestsDeeperThan(JSON.parse(deepArray(10)), 10)).toBe(false);
    expect(nestsDeeperThan(JSON.parse(deepArray(11)), 10)).toBe(true);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(nestsDeeperThan(cyclic, MAX_JSON_DEPTH)).toBe(true);
    expect(canonicalJson({ b: [1, { d: 1, c: null }], a: "x", u: undefined })).toBe('{"a":"x","b":[1,{"c":null,"d":1}]}');
    expect(maxBodyBytes({ MAX_BODY_BYTES: "nope" } as unknown as Env)).toBe(1_048_576);
    expect(maxBodyBytes(env)).toBe(MAX);
  });
});

describe("nesting deeper than 64 levels", () => {
  it("10,000 levels of params on enqueue, execute and analyze: 400 naming params, nothing booked or queued", async () => {
    const { template, client } = await clientWithMoneyInFlight();
    const auth = { authorization: `Bearer ${client.key}`, "content-type": "application/json" };
    for (const path of ["/api/queue/enqueue", "/api/execute", "/api/optimize/analyze"]) {
      for (const deep of [deepArray(10_000), deepObject(10_000)]) {
        const r = await post(path, `{"template":"${template}","params":${deep}}`, auth);
        expectError(r, 400, "validation_failed");
        expect(r.body.error.message).toBe("the request body nests deeper than 64 levels");
        expect(r.body.error.details).toEqual({
          fields: [{ path: "params", message: "at most 64 levels of objects and arrays, counting the body itself" }], max_depth: 64,
        });
      }
    }
    // In a batch, too.
    const batch = await post("/api/queue/enqueue", `{"requests":[{"template":"${template}","params":${deepArray(10_000)}}]}`, auth);
    expectError(batch, 400, "validation_failed");
    expect(batch.body.error.details.fields[0].path).toBe("requests");
    expect(await inFlight(client.id)).toBe(1000);
    expect(await requestCount(client.id)).toBe(1);
  });

  it("64 levels in all are taken; 65 are not", async () => {
    const { template, client } = await clientWithMoneyInFlight();
    const auth = { authorization: `Bearer ${client.key}`, "content-type": "application/json" };
    const at = await post("/api/queue/enqueue", `{"template":"${template}","not_before":${Date.now() + HOUR},"params":${deepArray(63)}}`, auth);
    expect(at.status, JSON.stringify(at.body)).toBe(202);
    expect(await inFlight(client.id)).toBe(2000);
    const over = await post("/api/queue/enqueue", `{"template":"${template}","not_before":${Date.now() + HOUR},"params":${deepArray(64)}}`, auth);
    expectError(over, 400, "validation_failed");
    expect(await inFlight(client.id)).toBe(2000);
    expect(await requestCount(client.id)).toBe(2);
  });

  it("over RPC (answered by the REST route, so through the body check): validation_failed, nothing booked", async () => {
    const { template, client } = await clientWithMoneyInFlight();
    const rpc = async (method: string, ...args: unknown[]) => {
      const res = await env.KAM.fetch("https://kam/", { method: "POST", body: JSON.stringify({ method, args }) });
      return ((await res.json()) as { value: any }).value;
    };
    const params = JSON.parse(deepArray(200));
    const ran = await rpc("execute", { client_id: client.id, template, params });
    expect(ran).toMatchObject({ ok: false, error: { code: "validation_failed", details: { max_depth: 64 } } });
    const queued = await rpc("enqueue", { client_id: client.id, requests: [{ template, params }] });
    expect(queued).toMatchObject({ ok: false, error: { code: "validation_failed" } });
    expect(await inFlight(client.id)).toBe(1000);
    expect(await requestCount(client.id)).toBe(1);
  });
});

describe("the body limit (MAX_BODY_BYTES, 1 MiB)", () => {
  it("a 50 MB body streamed without Content-Length: 413 after about 1 MiB is read, nothing booked", async () => {
    const { client } = await clientWithMoneyInFlight();
    for (const path of ["/api/queue/enqueue", "/api/execute", "/api/optimize/analyze", "/admin/clients"]) {
      const body = streamed(MB50);
      const token = path.startsWith("/admin") ? ADMIN : client.key;
      const r = await post(path, body.stream, { authorization: `Bearer ${token}`, "content-type": "application/json" });
      expectError(r, 413, "payload_too_large");
      expect(r.body.error).toEqual({ code: "payload_too_large", message: `the request body is over ${MAX} bytes`, details: { max_bytes: MAX } });
      expect(body.pulled()).toBeLessThan(MAX + 4 * 64 * 1024);
    }
    expect(await inFlight(client.id)).toBe(1000);
    expect(await requestCount(client.id)).toBe(1);
  });

  it("a Content-Length over the limit is refused before the body is read", async () => {
    const { client } = await clientWithMoneyInFlight();
    const body = streamed(MB50);
    const r = await post("/api/queue/enqueue", body.stream, { authorization: `Bearer ${client.key}`, "content-type": "application/json", "content-length": String(MB50) });
    expectError(r, 413, "payload_too_large");
    expect(body.pulled()).toBeLessThanOrEqual(64 * 1024);
    // A 50 MB string, sent whole.
    const big = await post("/api/execute", "x".repeat(MB50), { authorization: `Bearer ${client.key}`, "content-type": "application/json" });
    expectError(big, 413, "payload_too_large");
    expect(await inFlight(client.id)).toBe(1000);
  });

  it("Content-Length that lies: a small claim does not let a big body through; the bytes are counted", async () => {
    const { client } = await clientWithMoneyInFlight();
    const app = (await import("../../src/app")).createApp();
    const body = streamed(2 * MAX);
    // In process (as a service binding can send it): the header says 100 bytes, the stream carries 2 MiB.
    const res = await app.fetch(new Request("https://rm.test/api/queue/enqueue", {
      method: "POST", headers: { authorization: `Bearer ${client.key}`, "content-type": "application/json", "content-length": "100" }, body: body.stream,
    }), env, createExecutionContext());
    const text = await res.text();
    checkResponse("POST", "/api/queue/enqueue", res.status, res.headers, text);
    expect(res.status).toBe(413);
    expect(JSON.parse(text).error.code).toBe("payload_too_large");
    expect(body.pulled()).toBeLessThan(MAX + 4 * 64 * 1024);
    // A claim over the limit is refused even when the body is small: the caller said it would send more.
    const claim = await app.fetch(new Request("https://rm.test/api/queue/enqueue", {
      method: "POST", headers: { authorization: `Bearer ${client.key}`, "content-type": "application/json", "content-length": String(MAX + 1) }, body: "{}",
    }), env, createExecutionContext());
    expect(claim.status).toBe(413);
    expect((await claim.json() as any).error.code).toBe("payload_too_large");
    expect(await inFlight(client.id)).toBe(1000);
  });

  it("a body of exactly 1 MiB is taken; one byte more is not", async () => {
    const { template, client } = await clientWithMoneyInFlight();
    const auth = { authorization: `Bearer ${client.key}`, "content-type": "application/json" };
    const spec = { template, not_before: Date.now() + HOUR };
    const at = await post("/api/queue/enqueue", padded(spec, MAX), auth);
    expect(at.status, JSON.stringify(at.body)).toBe(202);
    expect(await inFlight(client.id)).toBe(2000);
    const over = await post("/api/queue/enqueue", padded(spec, MAX + 1), auth);
    expectError(over, 413, "payload_too_large");
    expect(await inFlight(client.id)).toBe(2000);
    expect(await requestCount(client.id)).toBe(2);
  });

  it("the hot consume path enforces the same limit itself, and spends nothing", async () => {
    const pool = await makePool({ capacity: 100 });
    const headers = { authorization: `Bearer ${INTERNAL}`, "content-type": "application/json" };
    const notTheApp = () => {
      throw new Error("handed to the app");
    };
    const cases: Array<[string, () => Request, () => number]> = [];
    const streamedBody = streamed(MB50);
    cases.push(["streamed, no Content-Length", () => new Request("https://rm.test/internal/consume", { method: "POST", headers, body: streamedBody.stream }), streamedBody.pulled]);
    const claimed = streamed(MB50);
    cases.push(["Content-Length 50 MB", () => new Request("https://rm.test/internal/consume", { method: "POST", headers: { ...headers, "content-length": String(MB50) }, body: claimed.stream }), claimed.pulled]);
    const lying = streamed(2 * MAX);
    cases.push(["Content-Length 10, 2 MiB sent", () => new Request("https://rm.test/internal/consume", { method: "POST", headers: { ...headers, "content-length": "10" }, body: lying.stream }), lying.pulled]);
    for (const [what, make, pulled] of cases) {
      const ctx = createExecutionContext();
      const res = await hotConsume(make(), env, ctx, notTheApp);
      await waitOnExecutionContext(ctx);
      const text = await res.text();
      checkResponse("POST", "/internal/consume", res.status, res.headers, text);
      expect(res.status, what).toBe(413);
      expect(JSON.parse(text).error).toEqual({ code: "payload_too_large", message: `the request body is over ${MAX} bytes`, details: { max_bytes: MAX } });
      expect(pulled(), what).toBeLessThan(MAX + 4 * 64 * 1024);
    }
    // Through the worker: 413 over the limit, a spend at exactly the limit.
    const spend = { client_id: "acme", pool: pool.id, amount: 3 };
    const over = await post("/internal/consume", padded(spend, MAX + 1), headers);
    expectError(over, 413, "payload_too_large");
    const big = streamed(MB50);
    expectError(await post("/internal/consume", big.stream, headers), 413, "payload_too_large");
    const at = await post("/internal/consume", padded(spend, MAX), headers);
    expect(at.status, JSON.stringify(at.body)).toBe(200);
    // Only the last one spent.
    expect(at.body.remaining).toBe(97);
  });
});
