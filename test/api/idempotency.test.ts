import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { ADMIN, call, expectError, makeClient, makePool, makeTemplate, scheduler, type Call } from "../support/helpers";

const HOUR = 3_600_000;
const ESTIMATE = 2000; // 2 units at 1,000 nano-dollars


async function setup() {
  const pool = await makePool({ capacity: 1000, refillPerSec: 1 });
  const template = await makeTemplate([{ pool: pool.id, amount: 2 }]);
  return { pool, template, client: await makeClient("idem"), later: Date.now() + HOUR };
}

async function current(clientId: string): Promise<{ in_flight_nano: number; requests: number }> {
  const r = await call("GET", `/api/usage/${clientId}/current`, { token: ADMIN });
  expect(r.status).toBe(200);
  const requests = Object.values(r.body.requests_by_status as Record<string, number>).reduce((a, b) => a + b, 0);
  return { in_flight_nano: r.body.in_flight_nano, requests };
}

const enqueue = (key: string, json: unknown, headers: Record<string, string> = {}) => call("POST", "/api/queue/enqueue", { token: key, json, headers });
const execute = (key: string, json: unknown, headers: Record<string, string> = {}) => call("POST", "/api/execute", { token: key, json, headers });
const view = async (key: string, id: string) => (await call("GET", `/api/execution/${id}`, { token: key })).body.request;

function expectConflict(r: Call, key: string, firstId: string): void {
  expectError(r, 409, "idempotency_conflict");
  expect(r.body.error.details).toEqual({ idempotency_key: key, request_id: firstId });
  expect(r.body.error.message).toBe(`idempotency key ${key} was already used for request ${firstId} with a different request; use a new key for a new request`);
}

/** The RPC entrypoint's answer (REST's body with ok: true, or its error with ok: false), called from the KAM stand-in. */
const rpc = async (method: string, ...args: unknown[]) => {
  const res = await env.KAM.fetch("https://kam/", { method: "POST", body: JSON.stringify({ method, args }) });
  return ((await res.json()) as { value: any }).value;
};

describe("idempotency keys on enqueue and execute", () => {
  it("the same key with the same request returns the first request, once booked (field order does not matter)", async () => {
    const { template, client, later } = await setup();
    const spec = { template, params: { to: "a@x", n: [1, 2] }, not_before: later, idempotency_key: "job-1" };
    const first = await enqueue(client.key, spec);
    expect(first.status).toBe(202);
    expect(first.body.duplicate).toBe(false);
    const again = await enqueue(client.key, { idempotency_key: "job-1", not_before: later, params: { n: [1, 2], to: "a@x" }, template });
    expect(again.status).toBe(202);
    expect(again.body.duplicate).toBe(true);
    expect(again.body.request.id).toBe(first.body.request.id);
    // Explicit default queue is the same request as an absent one.
    const explicit = await enqueue(client.key, { ...spec, queue: "normal" });
    expect(explicit.body.request.id).toBe(first.body.request.id);
    expect(await current(client.id)).toEqual({ in_flight_nano: ESTIMATE, requests: 1 });
  });

  it("the same key with different params, queue or template: 409 naming the first request; nothing booked, the first untouched", async () => {
    const { template, client, later } = await setup();
    const other = await makeTemplate([{ pool: (await makePool()).id, amount: 1 }]);
    const spec = { template, params: { to: "a@x" }, not_before: later, idempotency_key: "job-2" };
    const first = await enqueue(client.key, spec);
    const firstId = first.body.request.id;
    const before = await view(client.key, firstId);
    for (const changed of [
      { ...spec, params: { to: "b@x" } },
      { ...spec, params: undefined },
      { ...spec, queue: "fast" },
      { ...spec, template: other },
      { ...spec, max_attempts: 5 },
    ]) {
      expectConflict(await enqueue(client.key, changed), "job-2", firstId);
      expectConflict(await execute(client.key, changed), "job-2", firstId);
    }
    // execute's default queue is immediate: the same fields on execute are another request.
    expectConflict(await execute(client.key, spec), "job-2", firstId);
    expect(await current(client.id)).toEqual({ in_flight_nano: ESTIMATE, requests: 1 });
    expect(await view(client.key, firstId)).toEqual(before);
  });

  it("execute: a retry with the same key and request gets the first request; another request gets 409", async () => {
    const { template, client, later } = await setup();
    const spec = { template, params: { p: 1 }, queue: "fast", not_before: later, idempotency_key: "exec-1" };
    const first = await execute(client.key, spec);
    expect(first.status).toBe(202);
    const again = await execute(client.key, spec);
    expect(again.status).toBe(202);
    expect(again.body).toMatchObject({ duplicate: true, request: { id: first.body.request.id } });
    expectConflict(await execute(client.key, { ...spec, params: { p: 2 } }), "exec-1", first.body.request.id);
    expect(await current(client.id)).toEqual({ in_flight_nano: ESTIMATE, requests: 1 });
  });

  it("the Idempotency-Key header is the same key as the body's field", async () => {
    const { template, client, later } = await setup();
    const spec = { template, params: { p: 1 }, not_before: later };
    const first = await enqueue(client.key, spec, { "idempotency-key": "hdr-1" });
    expect(first.body.request.idempotency_key).toBe("hdr-1");
    expect((await enqueue(client.key, { ...spec, idempotency_key: "hdr-1" })).body.request.id).toBe(first.body.request.id);
    expectConflict(await enqueue(client.key, { ...spec, params: { p: 2 } }, { "idempotency-key": "hdr-1" }), "hdr-1", first.body.request.id);
    const differ = await enqueue(client.key, { ...spec, idempotency_key: "a" }, { "idempotency-key": "b" });
    expectError(differ, 400, "validation_failed");
    const batch = await enqueue(client.key, { requests: [spec] }, { "idempotency-key": "hdr-2" });
    expectError(batch, 400, "validation_failed");
    expect(batch.body.error.details.fields).toEqual([{ path: "header.idempotency-key", message: "not with a batch" }]);
    expect(await current(client.id)).toEqual({ in_flight_nano: ESTIMATE, requests: 1 });
  });

  it("different clients with the same key are independent", async () => {
    const { template, client, later } = await setup();
    const other = await makeClient("idem");
    const a = await enqueue(client.key, { template, params: { who: "a" }, not_before: later, idempotency_key: "shared" });
    const b = await enqueue(other.key, { template, params: { who: "b" }, not_before: later, idempotency_key: "shared" });
    expect(a.status).toBe(202);
    expect(b.status).toBe(202);
    expect(b.body.duplicate).toBe(false);
    expect(b.body.request.id).not.toBe(a.body.request.id);
    expect(await current(client.id)).toEqual({ in_flight_nano: ESTIMATE, requests: 1 });
    expect(await current(other.id)).toEqual({ in_flight_nano: ESTIMATE, requests: 1 });
  });

  it("a batch answers a conflicting item 409 on its own, also two uses of one key within the batch", async () => {
    const { template, client, later } = await setup();
    const first = await enqueue(client.key, { template, params: { n: 0 }, not_before: later, idempotency_key: "b-0" });
    const r = await enqueue(client.key, {
      requests: [
        { template, params: { n: 1 }, not_before: later, idempotency_key: "b-0" },
        { template, params: { n: 0 }, not_before: later, idempotency_key: "b-0" },
        { template, params: { n: 2 }, not_before: later, idempotency_key: "b-2" },
        { template, params: { n: 3 }, not_before: later, idempotency_key: "b-2" },
      ],
    });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ accepted: 2, rejected: 2 });
    const [conflict, same, fresh, within] = r.body.results;
    expect(conflict).toEqual({ index: 0, ok: false, error: expect.objectContaining({ code: "idempotency_conflict", details: { idempotency_key: "b-0", request_id: first.body.request.id } }) });
    expect(same).toMatchObject({ index: 1, ok: true, duplicate: true, request: { id: first.body.request.id } });
    expect(fresh).toMatchObject({ index: 2, ok: true, duplicate: false });
    expect(within).toEqual({ index: 3, ok: false, error: expect.objectContaining({ code: "idempotency_conflict", details: { idempotency_key: "b-2", request_id: fresh.request.id } }) });
    expect(await current(client.id)).toEqual({ in_flight_nano: 2 * ESTIMATE, requests: 2 });
  });

  it("two concurrent first uses of a key with different requests: one is queued, the other 409, one booking", async () => {
    const { template, client, later } = await setup();
    const [a, b] = await Promise.all([
      enqueue(client.key, { template, params: { v: "a" }, not_before: later, idempotency_key: "race" }),
      enqueue(client.key, { template, params: { v: "b" }, not_before: later, idempotency_key: "race" }),
    ]);
    const statuses = [a.status, b.status].sort();
    expect(statuses).toEqual([202, 409]);
    const won = a.status === 202 ? a : b;
    const lost = a.status === 202 ? b : a;
    expectConflict(lost, "race", won.body.request.id);
    expect(await current(client.id)).toEqual({ in_flight_nano: ESTIMATE, requests: 1 });
  });

  it("a request made before specs were hashed (no hash) is answered as before: the first request", async () => {
    const { template, client, later } = await setup();
    const first = await enqueue(client.key, { template, params: { v: 1 }, not_before: later, idempotency_key: "legacy" });
    await runInDurableObject(scheduler(), (_o: SchedulerObject, state) => {
      state.storage.sql.exec("UPDATE requests SET spec_hash = NULL WHERE id = ?", first.body.request.id);
    });
    const again = await enqueue(client.key, { template, params: { v: 2 }, not_before: later, idempotency_key: "legacy" });
    expect(again.status).toBe(202);
    expect(again.body).toMatchObject({ duplicate: true, request: { id: first.body.request.id } });
    expect(await current(client.id)).toEqual({ in_flight_nano: ESTIMATE, requests: 1 });
  });

  it("over RPC: enqueue answers the item idempotency_conflict, execute refuses with it; nothing booked", async () => {
    const { template, client, later } = await setup();
    const first = await rpc("enqueue", { client_id: client.id, requests: [{ template, params: { v: 1 }, not_before: later, idempotency_key: "rpc-1" }] });
    expect(first.ok).toBe(true);
    const firstId = first.results[0].request.id;
    const same = await rpc("enqueue", { client_id: client.id, requests: [{ template, params: { v: 1 }, not_before: later, idempotency_key: "rpc-1" }] });
    expect(same.results[0]).toMatchObject({ ok: true, duplicate: true, request: { id: firstId } });
    const conflict = await rpc("enqueue", { client_id: client.id, requests: [{ template, params: { v: 2 }, not_before: later, idempotency_key: "rpc-1" }] });
    expect(conflict.ok).toBe(true);
    expect(conflict.results[0]).toEqual({ ok: false, index: 0, error: expect.objectContaining({ code: "idempotency_conflict", details: { idempotency_key: "rpc-1", request_id: firstId } }) });
    const ran = await rpc("execute", { client_id: client.id, template, params: { v: 3 }, queue: "normal", not_before: later, idempotency_key: "rpc-1" });
    expect(ran).toMatchObject({ ok: false, error: { code: "idempotency_conflict", message: `idempotency key rpc-1 was already used for request ${firstId} with a different request; use a new key for a new request` } });
    expect(await current(client.id)).toEqual({ in_flight_nano: ESTIMATE, requests: 1 });
  });

  it("the scheduler keeps the spec's hash with the request; requests without a key have none", async () => {
    const { template, client, later } = await setup();
    const keyed = await enqueue(client.key, { template, not_before: later, idempotency_key: "stored" });
    const plain = await enqueue(client.key, { template, not_before: later });
    const hashes = await runInDurableObject(scheduler(), (_o: SchedulerObject, state) =>
      state.storage.sql.exec<{ id: string; spec_hash: string | null }>("SELECT id, spec_hash FROM requests WHERE id IN (?, ?)", keyed.body.request.id, plain.body.request.id).toArray());
    const byId = new Map(hashes.map((h) => [h.id, h.spec_hash]));
    expect(byId.get(keyed.body.request.id)).toMatch(/^[0-9a-f]{64}$/);
    expect(byId.get(plain.body.request.id)).toBeNull();
  });
});
