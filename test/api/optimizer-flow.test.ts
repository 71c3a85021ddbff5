import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { clearConfigCache } from "../../src/storage/config";
import { clearOptimizerCache } from "../../src/services/optimizer";
import { ADMIN, call, enqueue, eventually, KEYS, makePool, scheduler, settled } from "../support/helpers";

const start = () => call("POST", "/admin/scheduler/start", { token: ADMIN });
const stop = () => call("POST", "/admin/scheduler/stop", { token: ADMIN });

let n = 0;
/** A template for one test: cacheable and/or batchable, with its optimizer options. */
async function template(opts: { pool: string; amount: number; cacheable?: boolean; batchable?: boolean; batchSize?: number; compressBytes?: number; binding?: string }): Promise<string> {
  n += 1;
  const id = `opt-${crypto.randomUUID().slice(0, 8)}-${n}`;
  await env.DB.batch([
    env.DB.prepare(
      `INSERT INTO templates (id, name, binding, requirements, alternative_id, cacheable, batchable, timeout_ms, updated_at) VALUES (?1, ?1, ?2, ?3, NULL, ?4, ?5, 5000, 0)`,
    ).bind(id, opts.binding ?? "CONTENT_WORKER", JSON.stringify([{ pool: opts.pool, amount: opts.amount }]), opts.cacheable ? 1 : 0, opts.batchable ? 1 : 0),
    env.DB.prepare("INSERT INTO template_options (template_id, cache_ttl_ms, batch_size, compress_threshold_bytes, updated_at) VALUES (?1, 3600000, ?2, ?3, 0)")
      .bind(id, opts.batchSize ?? 10, opts.compressBytes ?? 4096),
  ]);
  clearConfigCache();
  clearOptimizerCache();
  return id;
}

async function savingsOf(requestId: string): Promise<Array<{ strategy: string; saved_nano: number; bytes_saved: number }>> {
  const { results } = await env.DB.prepare("SELECT strategy, saved_nano, bytes_saved FROM optimizer_savings WHERE request_id = ?1 ORDER BY strategy").bind(requestId).all<any>();
  return results;
}

async function storedParams(id: string): Promise<string> {
  return runInDurableObject(scheduler(), (_i: SchedulerObject, state) => state.storage.sql.exec<{ params: string }>("SELECT params FROM request_bodies WHERE id = ?", id).one().params);
}

beforeEach(async () => {
  await start();
});

describe("model downgrade through the request flow", () => {
  it("quality standard runs the cheaper alternative; the saving is recorded when it completes", async () => {
    const r = await enqueue({ template: "content-generate", queue: "fast", quality: "standard", params: { prompt: "hi" } });
    expect(r.status).toBe(202);
    expect(r.body.request.template).toBe("content-generate-lite");
    expect(r.body.request.estimate_nano).toBe(3_000_000);
    expect(r.body.request).toMatchObject({ downgraded_from: "content-generate", downgrade_reason: "quality" });
    expect(r.body.request.optimizer).toMatchObject({ requested_template: "content-generate", cached: false });
    expect(r.body.request.optimizer.strategies).toEqual([expect.objectContaining({ strategy: "downgrade", saved_nano: 57_000_000 })]);
    await scheduler().pass("test");
    await settled(r.body.request.id, ["completed"]);
    await scheduler().pass("test"); // delivers the finished request's records
    await eventually(async () => (await savingsOf(r.body.request.id)).length > 0, 5000, "savings recorded");
    expect(await savingsOf(r.body.request.id)).toEqual([{ strategy: "downgrade", saved_nano: 57_000_000, bytes_saved: 0 }]);
  });

  it("quality premium demands the original: no downgrade, nothing recorded", async () => {
    const r = await enqueue({ template: "content-generate", queue: "batch", quality: "premium" });
    expect(r.body.request.template).toBe("content-generate");
    expect(r.body.request.downgraded_from).toBeNull();
    expect(r.body.request.optimizer.strategies).toEqual([]);
    await call("DELETE", `/api/queue/${r.body.request.id}`, { token: KEYS.acme });
  });
});

describe("off-peak scheduling", () => {
  it("a deferred request waits for the off-peak window (22-6 UTC) unless its deadline comes first", async () => {
    await stop();
    const now = Date.now();
    const hour = new Date(now).getUTCHours();
    const inWindow = hour >= 22 || hour < 6;
    const dayStart = Math.floor(now / 86_400_000) * 86_400_000;
    const r = await enqueue({ template: "notify-email", queue: "deferred" });
    if (inWindow) {
      expect(r.body.request.not_before).toBeLessThanOrEqual(Date.now());
    } else {
      expect(r.body.request.not_before).toBe(dayStart + 22 * 3_600_000);
      expect(r.body.request.optimizer.strategies.map((s: any) => s.strategy)).toEqual(["off_peak"]);
    }
    const urgent = await enqueue({ template: "notify-email", queue: "deferred", deadline: now + 60_000 });
    expect(urgent.body.request.not_before).toBeLessThanOrEqual(Date.now());
    expect(urgent.body.request.optimizer.strategies).toEqual([]);
    for (const x of [r, urgent]) await call("DELETE", `/api/queue/${x.body.request.id}`, { token: KEYS.acme });
  });
});

describe("result caching", () => {
  it("a repeat of a completed cacheable request is answered at once from the cache: no pool units, no cost", async () => {
    const pool = await makePool({ capacity: 1000, refillPerSec: 0, costPerUnitNano: 1000 });
    const tpl = await template({ pool: pool.id, amount: 100, cacheable: true });
    const params = { prompt: "the same question", tokens_used: 40 };
    const first = await enqueue({ template: tpl, queue: "fast", params });
    await scheduler().pass("test");
    const done = await settled(first.body.request.id, ["completed"]);
    expect(done.actual_nano).toBe(40_000);
    await scheduler().pass("test"); // delivers the result into the cache
    await eventually(async () => (await env.DB.prepare("SELECT COUNT(*) AS n FROM result_cache WHERE template = ?1").bind(tpl).first<{ n: number }>())!.n === 1, 5000, "cached");
    const level = (await call("POST", "/api/resources/check", { token: KEYS.acme, json: { pool: pool.id, amount: 1 } })).body.results[0].available;
    // same params in another key order: the same canonical key
    const again = await call("POST", "/api/execute", { token: KEYS.acme, json: { template: tpl, params: { tokens_used: 40, prompt: "the same question" } } });
    expect(again.status).toBe(200);
    expect(again.body.request).toMatchObject({ status: "completed", actual_nano: 0, actual: [], result: done.result, dispatch_seq: null });
    expect(again.body.request.optimizer).toMatchObject({ cached: true });
    expect(again.body.request.optimizer.strategies).toEqual([expect.objectContaining({ strategy: "caching", saved_nano: 40_000 })]);
    expect((await call("POST", "/api/resources/check", { token: KEYS.acme, json: { pool: pool.id, amount: 1 } })).body.results[0].available).toBe(level);
    await scheduler().pass("test");
    await eventually(async () => (await savingsOf(again.body.request.id)).length > 0, 5000, "cache hit recorded");
    expect(await savingsOf(again.body.request.id)).toEqual([{ strategy: "caching", saved_nano: 40_000, bytes_saved: 0 }]);
    // different params: a miss
    const other = await enqueue({ template: tpl, queue: "fast", params: { prompt: "another question" } });
    expect(other.body.request.status).toBe("queued");
    await scheduler().pass("test");
    await settled(other.body.request.id, ["completed"]);
  });

  it("concurrent identical requests are coalesced onto one execution", async () => {
    const pool = await makePool({ capacity: 10_000, refillPerSec: 0, costPerUnitNano: 10 });
    const tpl = await template({ pool: pool.id, amount: 100, cacheable: true });
    await stop();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await enqueue({ template: tpl, queue: "fast", params: { prompt: "coalesce me", tokens_used: 50 } })).body.request.id);
    await start();
    await scheduler().pass("test");
    const views = await Promise.all(ids.map((id) => settled(id, ["completed"])));
    const ran = views.filter((v) => v.dispatch_seq !== null);
    expect(ran).toHaveLength(1);
    expect(ran[0].actual_nano).toBe(500);
    for (const v of views.filter((x) => x.dispatch_seq === null)) {
      expect(v).toMatchObject({ actual_nano: 0, result: ran[0].result });
      expect(v.optimizer.cached).toBe(true);
      expect(v.optimizer.strategies).toEqual([expect.objectContaining({ strategy: "caching", saved_nano: 500 })]);
    }
    // the pool gave units once
    expect((await call("POST", "/api/resources/check", { token: KEYS.acme, json: { pool: pool.id, amount: 1 } })).body.results[0].available).toBe(9950);
    // and the client's money in flight is back to nothing
    await eventually(async () => (await call("GET", "/api/usage/acme/current", { token: KEYS.acme })).body.in_flight_nano === 0, 5000, "no money in flight");
  });

  it("with caching switched off for the client, identical requests each run", async () => {
    const pool = await makePool({ capacity: 10_000, refillPerSec: 0, costPerUnitNano: 10 });
    const tpl = await template({ pool: pool.id, amount: 10, cacheable: true });
    expect((await call("PUT", "/admin/clients/globex/optimizer", { token: ADMIN, json: { caching: false } })).status).toBe(200);
    await stop();
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await enqueue({ template: tpl, queue: "fast", params: { p: 1 } }, KEYS.globex)).body.request.id);
    await start();
    await scheduler().pass("test");
    const views = await Promise.all(ids.map((id) => settled(id, ["completed"], 8000, KEYS.globex)));
    expect(views.every((v) => v.dispatch_seq !== null && v.optimizer.cached === false)).toBe(true);
    await call("PUT", "/admin/clients/globex/optimizer", { token: ADMIN, json: { caching: true } });
  });
});

describe("batching", () => {
  it("batchable requests in the batch queue go to the worker together (up to the batch size); results and costs go to the right requests", async () => {
    const pool = await makePool({ capacity: 10_000, refillPerSec: 0, costPerUnitNano: 1000 });
    const tpl = await template({ pool: pool.id, amount: 100, batchable: true, batchSize: 3 });
    await stop();
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push((await enqueue({ template: tpl, queue: "batch", params: { prompt: `item ${i}`, tokens_used: 10 + i } })).body.request.id);
    await start();
    await scheduler().pass("test");
    const views = await Promise.all(ids.map((id) => settled(id, ["completed"])));
    views.forEach((v, i) => {
      expect(v.result.request_id).toBe(ids[i]);
      expect(v.result.text).toContain(`item ${i}`);
      expect(v.actual_nano).toBe((10 + i) * 1000);
    });
    expect(views.map((v) => v.optimizer.batch_size).sort()).toEqual([1, 3, 3, 3, 3, 3, 3]);
    expect((await call("POST", "/api/resources/check", { token: KEYS.acme, json: { pool: pool.id, amount: 1 } })).body.results[0].available).toBe(10_000 - 91);
    await scheduler().pass("test");
    await eventually(async () => (await savingsOf(ids[0]!)).length > 0, 5000, "batching recorded");
    expect((await savingsOf(ids[0]!)).map((s) => s.strategy)).toEqual(["batching"]);
  });

  it("outside the batch queue, the same template runs one request per call", async () => {
    const pool = await makePool({ capacity: 10_000, refillPerSec: 0 });
    const tpl = await template({ pool: pool.id, amount: 1, batchable: true, batchSize: 3 });
    await stop();
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await enqueue({ template: tpl, queue: "fast" })).body.request.id);
    await start();
    await scheduler().pass("test");
    const views = await Promise.all(ids.map((id) => settled(id, ["completed"])));
    expect(views.map((v) => v.optimizer.batch_size)).toEqual([1, 1, 1]);
  });
});

describe("compression", () => {
  it("params and results above the threshold are stored compressed and come back exactly; the bytes saved are recorded", async () => {
    const pool = await makePool({ capacity: 10_000, refillPerSec: 0 });
    const tpl = await template({ pool: pool.id, amount: 10, compressBytes: 64 });
    const prompt = "Rate limits are a shared resource. ".repeat(200) + "é✓";
    const r = await enqueue({ template: tpl, queue: "fast", params: { prompt } });
    expect((await storedParams(r.body.request.id)).startsWith("gz:")).toBe(true);
    await scheduler().pass("test");
    const done = await settled(r.body.request.id, ["completed"]);
    // the worker got the params as sent: it echoes the first 200 characters of the prompt
    expect(done.result.text).toBe(`Generated ${tpl} for: ${prompt.slice(0, 200)}`);
    await scheduler().pass("test");
    await eventually(async () => (await savingsOf(r.body.request.id)).length > 0, 5000, "compression recorded");
    const [row] = await savingsOf(r.body.request.id);
    expect(row!.strategy).toBe("compression");
    expect(row!.bytes_saved).toBeGreaterThan(5000);
    // below the threshold: stored as is
    const small = await enqueue({ template: tpl, queue: "fast", params: { p: 1 } });
    expect(await storedParams(small.body.request.id)).toBe('{"p":1}');
    await scheduler().pass("test");
    await settled(small.body.request.id, ["completed"]);
  });
});

describe("request fields", () => {
  it("bad quality or deadline is refused with the field named", async () => {
    const r = await enqueue({ template: "notify-email", quality: "best", deadline: -1 });
    expect(r.status).toBe(400);
    expect(JSON.stringify(r.body.error.details)).toContain("quality");
    expect(JSON.stringify(r.body.error.details)).toContain("deadline");
  });
});
