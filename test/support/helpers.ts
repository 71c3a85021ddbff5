import { env, exports } from "cloudflare:workers";
import { expect, vi } from "vitest";
import { sha256Hex } from "../../src/domain/digest";
import { clearConfigCache } from "../../src/storage/config";
import { checkResponse } from "./contract";
import { upsertPool } from "../../src/storage/pools";
import type { PoolConfig } from "../../src/domain/types";
import type { BudgetLimit } from "../../src/domain/budget";
import type { ClientObject } from "../../src/objects/client";
import type { SpendEvent } from "../../src/objects/client/types";
import { ownerShard, shardStub } from "../../src/objects/scheduler/shards";

export const ADMIN = "test-admin-token";
export const INTERNAL = "test-internal-token";
/** Demo keys from seed.sql. */
export const KEYS = {
  acme: "rmk_demo_enterprise_acme",
  globex: "rmk_demo_premium_globex",
  initech: "rmk_demo_standard_initech",
  hooli: "rmk_demo_basic_hooli",
  hooliReadOnly: "rmk_demo_readonly_hooli",
} as const;

export interface Call {
  status: number;
  body: any;
  headers: Headers;
}

/**
 * Call the worker over HTTP and read the whole body (an unread body breaks storage isolation). Every
 * response is checked against the OpenAPI document (test/support/contract.ts): an undeclared status, content
 * type, error code or field fails the test that received it.
 */
export async function call(method: string, path: string, opts: { token?: string; json?: unknown; body?: string; headers?: Record<string, string> } = {}): Promise<Call> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  let body: string | undefined = opts.body;
  if (opts.json !== undefined) {
    body = JSON.stringify(opts.json);
    headers["content-type"] ??= "application/json";
  }
  const res = await exports.default.fetch(new Request(`https://rm.test${path}`, { method, headers, body }));
  const text = await res.text();
  checkResponse(method, path, res.status, res.headers, text);
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON: keep the text */
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

/** Assert the one error envelope with a status and code. */
export function expectError(r: Call, status: number, code: string): void {
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(r.body.error.code).toBe(code);
  expect(typeof r.body.error.message).toBe("string");
  expect(typeof r.body.trace_id).toBe("string");
}

let seq = 0;
/** A fresh pool for one test (unique name, so a fresh Durable Object). */
export async function makePool(overrides: Partial<Omit<PoolConfig, "version">> = {}): Promise<PoolConfig> {
  seq += 1;
  const pool: Omit<PoolConfig, "version"> = {
    id: `t-${crypto.randomUUID().slice(0, 8)}-${seq}`,
    name: "Test pool",
    unit: "units",
    capacity: 100,
    refillPerSec: 0,
    costPerUnitNano: 1000,
    sharing: { mode: "shared" },
    status: "active",
    ...overrides,
  };
  await upsertPool(env.DB, pool);
  // Token leases are a pool setting (pool_settings): "off" sends every consume to the pool's object.
  if (pool.leases === "off") {
    await env.DB.prepare("INSERT INTO pool_settings (pool_id, leases, updated_at) VALUES (?1, 'off', 0)").bind(pool.id).run();
  }
  clearConfigCache();
  return { ...pool, version: 1 };
}

export function consume(pool: string, amount: number, extra: Record<string, unknown> = {}, clientId = "acme"): Promise<Call> {
  return call("POST", "/internal/consume", { token: INTERNAL, json: { client_id: clientId, pool, amount, ...extra } });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

let tseq = 0;
/** A template for one test, served by a sample worker (CONTENT_WORKER by default). */
export async function makeTemplate(requirements: Array<{ pool: string; amount: number }>, opts: { timeoutMs?: number; binding?: string } = {}): Promise<string> {
  tseq += 1;
  const id = `tpl-${crypto.randomUUID().slice(0, 8)}-${tseq}`;
  await env.DB.prepare(
    `INSERT INTO templates (id, name, binding, requirements, alternative_id, cacheable, batchable, timeout_ms, updated_at)
     VALUES (?1, ?1, ?2, ?3, NULL, 0, 0, ?4, 0)`,
  ).bind(id, opts.binding ?? "CONTENT_WORKER", JSON.stringify(requirements), opts.timeoutMs ?? 5000).run();
  clearConfigCache();
  return id;
}

/** Poll until `fn` returns a truthy value, or fail after `timeoutMs`. */
export async function eventually<T>(fn: () => Promise<T | null | undefined | false>, timeoutMs = 5000, label = "condition"): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${label}`);
    await sleep(25);
  }
}

export const scheduler = () => env.SCHEDULER.get(env.SCHEDULER.idFromName("scheduler"));

/** The scheduler shard that owns a client under the project's SCHEDULER_SHARDS. */
export const shardOf = (clientId: string) => shardStub(env, ownerShard(env, clientId));

export async function requestOf(id: string, token: string = KEYS.acme): Promise<any> {
  return (await call("GET", `/api/execution/${id}`, { token })).body.request;
}

/** Wait until a request reaches one of the given statuses. */
export function settled(id: string, statuses = ["completed", "failed", "cancelled"], timeoutMs = 8000, token: string = KEYS.acme): Promise<any> {
  return eventually(async () => {
    const r = await requestOf(id, token);
    return statuses.includes(r?.status) ? r : null;
  }, timeoutMs, `request ${id} to reach ${statuses.join("/")}`);
}

export function enqueue(json: unknown, token: string = KEYS.acme): Promise<Call> {
  return call("POST", "/api/queue/enqueue", { token, json });
}

/** The first `limit` ids of a lazy order (fairIds, fairIdsOf), as a dispatch pass reads them. */
export function headIds(next: () => string | undefined, limit: number): string[] {
  const ids: string[] = [];
  while (ids.length < limit) {
    const id = next();
    if (id === undefined) break;
    ids.push(id);
  }
  return ids;
}

/** A small seeded generator, so that a failing run can be replayed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A response an OpenAPI document declares, following a $ref into components.responses (shared error responses). */
export function documentedResponse(doc: any, path: string, method: string, status: string): any {
  const declared = doc.paths[path][method].responses[status];
  return declared?.$ref ? doc.components.responses[declared.$ref.replace("#/components/responses/", "")] : declared;
}

let clientSeq = 0;
/**
 * A fresh standard-tier client with its own API key (scopes resources:read, execute, usage:read), so
 * its requests and money in flight are only the calling test's.
 */
export async function makeClient(prefix: string): Promise<{ id: string; key: string }> {
  clientSeq += 1;
  const id = `${prefix}-${crypto.randomUUID().slice(0, 8)}-${clientSeq}`;
  const key = `rmk_test_${crypto.randomUUID().replace(/-/g, "")}`;
  await env.DB.batch([
    env.DB.prepare(`INSERT INTO clients (id, name, email, tier, monthly_budget_nano, status, created_at, updated_at) VALUES (?1, ?1, 'ops@example.com', 'standard', NULL, 'active', 0, 0)`).bind(id),
    env.DB.prepare(`INSERT INTO api_keys (id, client_id, key_hash, prefix, scopes, created_at) VALUES (?1, ?2, ?3, 'rmk_test', ?4, 0)`)
      .bind(`key_${id}`, id, await sha256Hex(key), JSON.stringify(["resources:read", "execute", "usage:read"])),
  ]);
  clearConfigCache();
  return { id, key };
}

/**
 * What an execute test starts from: a fresh pool (`pool` overrides), a template needing one unit of
 * it, a fresh client (`prefix`), and the scheduler running.
 */
export async function readyToExecute(prefix: string, pool: Partial<Omit<PoolConfig, "version">> = {}): Promise<{ pool: PoolConfig; template: string; client: { id: string; key: string } }> {
  const made = await makePool(pool);
  const template = await makeTemplate([{ pool: made.id, amount: 1 }]);
  const client = await makeClient(prefix);
  expect((await call("POST", "/admin/scheduler/start", { token: ADMIN })).status).toBe(200);
  return { pool: made, template, client };
}

/**
 * A backlog of `n` requests of `template` for the client of `token`, each holding its job `latencyMs` in
 * the sample worker, enqueued 100 a call (the batch limit); their ids, in order.
 */
export async function enqueueHeld(template: string, token: string, n: number, latencyMs: number): Promise<string[]> {
  const ids: string[] = [];
  for (let left = n; left > 0; left -= 100) {
    const requests = Array.from({ length: Math.min(100, left) }, () => ({ template, params: { tokens_used: 1, simulate: { latency_ms: latencyMs } } }));
    const res = await call("POST", "/api/queue/enqueue", { token, json: { requests } });
    expect(res.status).toBe(200);
    ids.push(...(res.body.results as Array<{ request: { id: string } }>).map((r) => r.request.id));
  }
  return ids;
}

/** The service's log lines while a test runs (every line goes through console.log, src/log.ts); vi.restoreAllMocks() ends it. */
export function captureLog(): Array<Record<string, unknown>> {
  const lines: Array<Record<string, unknown>> = [];
  vi.spyOn(console, "log").mockImplementation((line: unknown) => {
    if (line && typeof line === "object") lines.push({ ...(line as Record<string, unknown>) });
  });
  return lines;
}

/** A client's spend this month, as GET /api/usage/{clientId}/current answers it (the admin's view). */
export const spendOf = async (clientId: string) => (await call("GET", `/api/usage/${clientId}/current`, { token: ADMIN })).body;

/**
 * A shard's requests as they stand, for reading its SQLite in a test: a request completed the usual way
 * keeps its row as it was and has its end in an end record (src/objects/scheduler/ends.ts), applied here.
 * Use as a table: `SELECT ... FROM ${STORED_REQUESTS} WHERE ...`.
 */
export const STORED_REQUESTS = `(SELECT r.id, r.client_id, r.tier, r.queue, r.template, r.created_at, r.spec_hash,
    CASE WHEN e.seq IS NULL THEN r.status ELSE 'completed' END AS status,
    CASE WHEN e.seq IS NULL THEN r.attempts ELSE COALESCE(x.value ->> 4, r.attempts) END AS attempts,
    CASE WHEN e.seq IS NULL THEN r.started_at ELSE x.value ->> 5 END AS started_at,
    CASE WHEN e.seq IS NULL THEN r.first_started_at ELSE x.value ->> 6 END AS first_started_at,
    CASE WHEN e.seq IS NULL THEN r.dispatch_seq ELSE x.value ->> 7 END AS dispatch_seq,
    CASE WHEN e.seq IS NULL THEN r.finished_at ELSE en.finished_at END AS finished_at
  FROM requests r LEFT JOIN end_ids e ON e.id = r.id LEFT JOIN ends en ON en.seq = e.seq
    LEFT JOIN json_each(en.rows) x ON x.value ->> 0 = r.id)`;

/**
 * Put spend on a client object as a retried attempt's settlement counts it (ClientObject.settle with
 * keepInFlight: each event once by its id, no estimate landed): how tests give a client spend to start from.
 */
export function addSpend(stub: DurableObjectStub<ClientObject>, limit: BudgetLimit | null, events: SpendEvent[]): Promise<void> {
  return stub.settle(limit, [{ requestId: "test-added-spend", events, keepInFlight: true }]);
}
