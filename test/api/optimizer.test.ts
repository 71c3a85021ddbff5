import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { DAY_MS, dayKey, dayStart } from "../../src/domain/calendar";
import { cacheKey, modelOf } from "../../src/domain/optimizer";
import type { Caller, PoolAmount } from "../../src/domain/types";
import { sha256Hex } from "../../src/http/auth";
import { compressText } from "../../src/domain/compression";
import { clearConfigCache } from "../../src/storage/config";
import {
  clearOptimizerCache, optimizerConfig, planRequest, sweepCache, type PlanInput, type SavingsRow,
} from "../../src/services/optimizer";
import { cacheGet, cachePut, DEFAULT_TEMPLATE_OPTIONS, recordSavings } from "../../src/storage/optimizer-cache";
import { insertRequestLog, type FinishedRequest } from "../../src/storage/request-log";
import { ADMIN, call, consume, expectError, KEYS, makePool } from "../support/helpers";

const H = 3_600_000;

let cseq = 0;
/** A fresh client with its own API key, so that no other test's figures mix into its own. */
async function makeClient(opts: { budgetNano?: number; scopes?: string[] } = {}): Promise<{ id: string; key: string; caller: Caller }> {
  cseq += 1;
  const id = `o-${crypto.randomUUID().slice(0, 8)}-${cseq}`;
  const key = `rmk_test_${crypto.randomUUID().replace(/-/g, "")}`;
  await env.DB.batch([
    env.DB.prepare(
      `INSERT INTO clients (id, name, email, tier, monthly_budget_nano, status, created_at, updated_at)
       VALUES (?1, ?1, 'ops@example.com', 'standard', ?2, 'active', 0, 0)`,
    ).bind(id, opts.budgetNano ?? null),
    env.DB.prepare(`INSERT INTO api_keys (id, client_id, key_hash, prefix, scopes, created_at) VALUES (?1, ?2, ?3, 'rmk_test', ?4, 0)`)
      .bind(`key_${id}`, id, await sha256Hex(key), JSON.stringify(opts.scopes ?? ["resources:read", "execute", "usage:read"])),
  ]);
  clearConfigCache();
  return { id, key, caller: { clientId: id, tier: "standard", via: "api" } };
}

let tseq = 0;
/** A template for one test; an alternative must exist before the template that names it. */
async function makeTemplate(requirements: PoolAmount[], opts: { cacheable?: boolean; batchable?: boolean; alternative?: string } = {}): Promise<string> {
  tseq += 1;
  const id = `opt-${crypto.randomUUID().slice(0, 8)}-${tseq}`;
  await env.DB.prepare(
    `INSERT INTO templates (id, name, binding, requirements, alternative_id, cacheable, batchable, timeout_ms, updated_at)
     VALUES (?1, ?1, 'CONTENT_WORKER', ?2, ?3, ?4, ?5, 5000, 0)`,
  ).bind(id, JSON.stringify(requirements), opts.alternative ?? null, opts.cacheable ? 1 : 0, opts.batchable ? 1 : 0).run();
  clearConfigCache();
  return id;
}

/**
 * A GPT-4-like template (100 units at 30 = 3,000 nano) with a GPT-3.5-like alternative (100 units at
 * 2 = 200 nano): a downgrade saves 2,800. Both cacheable; the lite one batchable.
 */
async function templatePair(expensive: { capacity?: number; refillPerSec?: number; amount?: number } = {}) {
  const big = await makePool({ costPerUnitNano: 30, capacity: expensive.capacity ?? 1_000_000, refillPerSec: expensive.refillPerSec ?? 1000 });
  const cheap = await makePool({ costPerUnitNano: 2, capacity: 1_000_000, refillPerSec: 1000 });
  const lite = await makeTemplate([{ pool: cheap.id, amount: 100 }], { cacheable: true, batchable: true });
  const full = await makeTemplate([{ pool: big.id, amount: expensive.amount ?? 100 }], { cacheable: true, alternative: lite });
  return { full, lite, big: big.id, cheap: cheap.id };
}

const clientStub = (id: string) => env.CLIENT.get(env.CLIENT.idFromName(id));
const plan = (caller: Caller, template: string, extra: Partial<PlanInput> = {}) =>
  planRequest(env, { caller, template, params: null, queue: "normal", now: Date.now(), ...extra });
const setSwitches = (clientId: string, json: unknown, token: string = ADMIN) => call("PUT", `/admin/clients/${clientId}/optimizer`, { token, json });

describe("planRequest: model downgrade", () => {
  it("downgrades for quality standard and for the batch and deferred queues, saving original - alternative exactly", async () => {
    const { caller } = await makeClient();
    const { full, lite } = await templatePair();
    const standard = await plan(caller, full, { quality: "standard" });
    expect(standard).toMatchObject({ template: lite, downgraded_from: full, downgrade_reason: "quality" });
    expect(standard.estimate.total_cost_nano).toBe(200);
    expect(standard.strategies).toEqual([{ strategy: "downgrade", saved_nano: 2800, detail: `quality: ${full} → ${lite}` }]);
    for (const queue of ["batch", "deferred"] as const) {
      const p = await plan(caller, full, { queue });
      expect([p.template, p.downgrade_reason, p.strategies.find((s) => s.strategy === "downgrade")?.saved_nano]).toEqual([lite, "queue", 2800]);
    }
  });

  it("does not downgrade a request that demands the original, nor one no rule applies to", async () => {
    const { caller } = await makeClient();
    const { full } = await templatePair();
    for (const queue of ["immediate", "fast", "normal", "batch", "deferred"] as const) {
      const p = await plan(caller, full, { queue, quality: "premium" });
      expect([p.template, p.downgraded_from, p.downgrade_reason], queue).toEqual([full, null, null]);
      expect(p.strategies.filter((s) => s.strategy === "downgrade")).toEqual([]);
      expect(p.estimate.total_cost_nano).toBe(3000);
    }
    for (const queue of ["immediate", "fast", "normal"] as const) expect((await plan(caller, full, { queue })).template).toBe(full);
  });

  it("never downgrades to an alternative that is not cheaper, or a template without one", async () => {
    const { caller } = await makeClient();
    const pool = await makePool({ costPerUnitNano: 5, capacity: 1_000_000 });
    const same = await makeTemplate([{ pool: pool.id, amount: 10 }]);
    const costly = await makeTemplate([{ pool: pool.id, amount: 10 }], { alternative: same });
    const p = await plan(caller, costly, { quality: "standard", queue: "batch" });
    expect([p.template, p.downgrade_reason, p.strategies]).toEqual([costly, null, []]);
    expect((await plan(caller, same, { quality: "standard" })).template).toBe(same);
  });

  it("downgrades when the client's budget use is above the threshold (80%), not at it", async () => {
    const { id, caller } = await makeClient({ budgetNano: 1_000_000 });
    const { full, lite } = await templatePair();
    const limit = { limitNano: 1_000_000, source: "client" as const };
    expect(await clientStub(id).admit(limit, [{ requestId: "req_budget_a", estimateNano: 800_000 }])).toEqual([{ ok: true }]);
    expect((await plan(caller, full)).template).toBe(full);
    await clientStub(id).admit(limit, [{ requestId: "req_budget_b", estimateNano: 1 }]);
    const p = await plan(caller, full);
    expect([p.template, p.downgrade_reason, p.strategies[0]?.saved_nano]).toEqual([lite, "budget", 2800]);
    // A premium request is not downgraded, whatever the budget.
    expect((await plan(caller, full, { quality: "premium" })).template).toBe(full);
  });

  it("downgrades when the expensive pool is exhausted and the wait would pass the queue's target", async () => {
    const { caller } = await makeClient();
    // 1,000 units refilling at 100/s; the template needs 500: once drained, about 5 s to wait.
    const slow = await templatePair({ capacity: 1000, refillPerSec: 100, amount: 500 });
    expect((await plan(caller, slow.full, { queue: "immediate" })).template).toBe(slow.full);
    expect((await consume(slow.big, 1000)).status).toBe(200);
    const immediate = await plan(caller, slow.full, { queue: "immediate" });
    expect([immediate.template, immediate.downgrade_reason]).toEqual([slow.lite, "capacity"]);
    expect(immediate.strategies[0]?.saved_nano).toBe(500 * 30 - 200);
    // 5 s is within the fast queue's 10 s and the normal queue's 60 s.
    expect((await plan(caller, slow.full, { queue: "fast" })).template).toBe(slow.full);
    expect((await plan(caller, slow.full, { queue: "normal" })).template).toBe(slow.full);
    expect((await plan(caller, slow.full, { queue: "immediate", quality: "premium" })).template).toBe(slow.full);

    // A pool that never refills: every queue with a target is past it.
    const dry = await templatePair({ capacity: 100, refillPerSec: 0, amount: 50 });
    expect((await plan(caller, dry.full, { queue: "normal" })).template).toBe(dry.full);
    expect((await consume(dry.big, 100)).status).toBe(200);
    expect((await plan(caller, dry.full, { queue: "normal" })).downgrade_reason).toBe("capacity");
    expect((await plan(caller, dry.full, { queue: "fast" })).downgrade_reason).toBe("capacity");
  });
});

describe("optimizer configuration", () => {
  it("reads OFF_PEAK_HOURS and DOWNGRADE_BUDGET_PERCENT, falling back to 22-6 and 80 when they do not parse", async () => {
    expect(optimizerConfig(env)).toEqual({ offPeak: { startHour: 22, endHour: 6 }, downgradeBudgetPercent: 80 });
    expect(optimizerConfig({ ...env, OFF_PEAK_HOURS: "1-5", DOWNGRADE_BUDGET_PERCENT: "50" })).toEqual({ offPeak: { startHour: 1, endHour: 5 }, downgradeBudgetPercent: 50 });
    for (const [hours, percent] of [["25-3", "x"], ["", ""], ["6-6", "-1"]]) {
      expect(optimizerConfig({ ...env, OFF_PEAK_HOURS: hours!, DOWNGRADE_BUDGET_PERCENT: percent! })).toEqual({ offPeak: { startHour: 22, endHour: 6 }, downgradeBudgetPercent: 80 });
    }
  });

  it("applies the configured threshold and window to the plan", async () => {
    const { id, caller } = await makeClient({ budgetNano: 1_000_000 });
    const { full, lite } = await templatePair();
    await clientStub(id).admit({ limitNano: 1_000_000, source: "client" }, [{ requestId: "req_cfg_a", estimateNano: 500_001 }]);
    const half = { ...env, DOWNGRADE_BUDGET_PERCENT: "50", OFF_PEAK_HOURS: "1-5" };
    expect((await plan(caller, full)).template).toBe(full);
    expect((await planRequest(half, { caller, template: full, params: null, queue: "normal", now: Date.now() })).template).toBe(lite);
    const today = dayStart(Date.now());
    const p = await planRequest(half, { caller, template: full, params: null, queue: "deferred", quality: "premium", now: today + 12 * H });
    expect(p.not_before).toBe(today + DAY_MS + H);
  });
});

describe("planRequest: off-peak, cache key, batching, compression", () => {
  const today = dayStart(Date.now());

  it("defers deferred work to the off-peak window (22-6 UTC) unless inside it or the deadline comes first", async () => {
    const { caller } = await makeClient();
    const pool = await makePool({ costPerUnitNano: 1, capacity: 1_000_000 });
    const plain = await makeTemplate([{ pool: pool.id, amount: 10 }]);
    const noon = today + 12 * H;
    const p = await plan(caller, plain, { queue: "deferred", now: noon });
    expect(p.not_before).toBe(today + 22 * H);
    expect(p.strategies).toEqual([{ strategy: "off_peak", saved_nano: 0, detail: expect.stringContaining(new Date(today + 22 * H).toISOString()) }]);
    expect((await plan(caller, plain, { queue: "deferred", now: noon, deadline: today + 22 * H + 1 })).not_before).toBe(today + 22 * H);
    for (const deadline of [today + 22 * H, today + 13 * H, noon - 1]) {
      const atOnce = await plan(caller, plain, { queue: "deferred", now: noon, deadline });
      expect([atOnce.not_before, atOnce.strategies]).toEqual([noon, []]);
    }
    const inside = await plan(caller, plain, { queue: "deferred", now: today + 22 * H });
    expect([inside.not_before, inside.strategies]).toEqual([today + 22 * H, []]);
    expect((await plan(caller, plain, { queue: "deferred", now: today + 6 * H })).not_before).toBe(today + 22 * H);
    expect((await plan(caller, plain, { queue: "deferred", now: today + 6 * H - 1 })).not_before).toBe(today + 6 * H - 1);
    expect((await plan(caller, plain, { queue: "batch", now: noon })).not_before).toBeNull();
  });

  it("gives cacheable templates a key over template, model and params, scoped to the client", async () => {
    const a = await makeClient();
    const b = await makeClient();
    const { full, lite, cheap, big } = await templatePair();
    const p = await plan(a.caller, full, { quality: "premium", params: { topic: "x", n: [1, 2] } });
    expect(p.cache_key).toBe(await cacheKey(full, big, { n: [1, 2], topic: "x" }, a.id));
    expect((await plan(a.caller, full, { quality: "premium", params: { n: [1, 2], topic: "x" } })).cache_key).toBe(p.cache_key);
    expect((await plan(b.caller, full, { quality: "premium", params: { topic: "x", n: [1, 2] } })).cache_key).not.toBe(p.cache_key);
    expect((await plan(a.caller, full, { quality: "premium", params: { topic: "y", n: [1, 2] } })).cache_key).not.toBe(p.cache_key);
    // Downgraded: the key of the template that runs, the same as asking for it directly.
    const down = await plan(a.caller, full, { quality: "standard", params: { q: 1 } });
    expect(down.cache_key).toBe(await cacheKey(lite, modelOf([{ pool: cheap, amount: 100 }]), { q: 1 }, a.id));
    expect((await plan(a.caller, lite, { params: { q: 1 } })).cache_key).toBe(down.cache_key);
    const pool = await makePool({ costPerUnitNano: 1, capacity: 1000 });
    expect((await plan(a.caller, await makeTemplate([{ pool: pool.id, amount: 1 }]))).cache_key).toBeNull();
  });

  it("marks batchable templates in the batch queue, with the template's batch size and compression threshold", async () => {
    const { caller } = await makeClient();
    const pool = await makePool({ costPerUnitNano: 1, capacity: 1_000_000 });
    const batchy = await makeTemplate([{ pool: pool.id, amount: 1 }], { batchable: true });
    const single = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    expect(await plan(caller, batchy, { queue: "batch" })).toMatchObject({ batchable: true, batch_size: 10, cache_ttl_ms: 3_600_000, compress_threshold_bytes: 4096 });
    expect(DEFAULT_TEMPLATE_OPTIONS).toEqual({ cacheTtlMs: 3_600_000, batchSize: 10, compressThresholdBytes: 4096 });
    for (const queue of ["immediate", "fast", "normal", "deferred"] as const) expect((await plan(caller, batchy, { queue })).batchable).toBe(false);
    expect((await plan(caller, single, { queue: "batch" })).batchable).toBe(false);
    await env.DB.prepare("INSERT INTO template_options (template_id, cache_ttl_ms, batch_size, compress_threshold_bytes, updated_at) VALUES (?1, 5000, 25, 100, 0)").bind(batchy).run();
    clearOptimizerCache();
    expect(await plan(caller, batchy, { queue: "batch" })).toMatchObject({ batchable: true, batch_size: 25, cache_ttl_ms: 5000, compress_threshold_bytes: 100 });
    // The demo templates' seeded options.
    expect(await plan(caller, "report-build")).toMatchObject({ batchable: false, batch_size: 1, cache_ttl_ms: 900_000, compress_threshold_bytes: 2048 });
  });

  it("follows the client's switches: each strategy off changes only its own part of the plan", async () => {
    const { id, caller } = await makeClient();
    const pool = await makePool({ costPerUnitNano: 1, capacity: 1_000_000 });
    const lite = await makeTemplate([{ pool: pool.id, amount: 1 }], { cacheable: true, batchable: true });
    const full = await makeTemplate([{ pool: pool.id, amount: 5 }], { cacheable: true, batchable: true, alternative: lite });
    const noon = today + 12 * H;
    const on = await plan(caller, full, { queue: "deferred", now: noon });
    expect([on.template, on.not_before, on.cache_key !== null, on.compress_threshold_bytes]).toEqual([lite, today + 22 * H, true, 4096]);
    expect((await plan(caller, lite, { queue: "batch" })).batchable).toBe(true);

    const off = async (strategy: string) => {
      const r = await setSwitches(id, { [strategy]: false });
      expect(r.status).toBe(200);
      return plan(caller, full, { queue: "deferred", now: noon });
    };
    expect((await off("downgrade")).template).toBe(full);
    const noOffPeak = await off("off_peak");
    expect([noOffPeak.not_before, noOffPeak.cache_key !== null]).toEqual([null, true]);
    expect((await off("caching")).cache_key).toBeNull();
    expect((await off("compression")).compress_threshold_bytes).toBeNull();
    await setSwitches(id, { batching: false });
    expect((await plan(caller, lite, { queue: "batch" })).batchable).toBe(false);
    await setSwitches(id, { downgrade: true });
    expect((await plan(caller, full, { queue: "deferred", now: noon })).template).toBe(lite);
  });

  it("refuses an unknown template (404)", async () => {
    const { caller } = await makeClient();
    await expect(plan(caller, "no-such-template")).rejects.toMatchObject({ code: "template_not_found" });
  });
});

describe("result cache", () => {
  it("answers until the entry expires, then misses; a later put replaces it", async () => {
    const key = `k-${crypto.randomUUID()}`;
    const t0 = 1_000_000;
    expect(await cacheGet(env, key, t0)).toBeNull();
    expect(await cachePut(env, key, "content-generate", { text: "hello", n: [1, 2] }, 60_000, 1000, t0)).toEqual({ stored: true, compressed: false, bytesSaved: 0 });
    expect(await cacheGet(env, key, t0)).toEqual({ result: { text: "hello", n: [1, 2] }, costNano: 60_000 });
    expect(await cacheGet(env, key, t0 + 999)).toEqual({ result: { text: "hello", n: [1, 2] }, costNano: 60_000 });
    expect(await cacheGet(env, key, t0 + 1000)).toBeNull();
    await cachePut(env, key, "content-generate", "second", 7, 500, t0 + 2000);
    expect(await cacheGet(env, key, t0 + 2499)).toEqual({ result: "second", costNano: 7 });
    expect(await cacheGet(env, key, t0 + 2500)).toBeNull();
  });

  it("stores large results compressed above the template's threshold and returns them exactly", async () => {
    const key = `k-${crypto.randomUUID()}`;
    const result = { rows: Array.from({ length: 2000 }, (_, i) => ({ i, s: `línea ${i} 😀` })) };
    const put = await cachePut(env, key, "content-generate", result, 123, 60_000, 5_000_000);
    const text = JSON.stringify(result);
    const row = await env.DB.prepare("SELECT result FROM result_cache WHERE key = ?1").bind(key).first<{ result: string }>();
    expect(row!.result.startsWith("gz:")).toBe(true);
    expect(put).toEqual({ stored: true, compressed: true, bytesSaved: new TextEncoder().encode(text).length - row!.result.length });
    expect(await cacheGet(env, key, 5_000_001)).toEqual({ result, costNano: 123 });
    // null results are cached too; a TTL of 0 caches nothing.
    await cachePut(env, `${key}-null`, "content-generate", null, 1, 1000, 5_000_000);
    expect(await cacheGet(env, `${key}-null`, 5_000_000)).toEqual({ result: null, costNano: 1 });
    expect((await cachePut(env, `${key}-zero`, "content-generate", 1, 1, 0, 5_000_000)).stored).toBe(false);
    expect(await cacheGet(env, `${key}-zero`, 5_000_000)).toBeNull();
  });

  it("sweeps expired entries only", async () => {
    // Earlier than every other test's entries in this file, so that they are not swept here.
    const base = 10;
    const keys = Array.from({ length: 5 }, () => `sweep-${crypto.randomUUID()}`);
    await Promise.all(keys.map((k, i) => cachePut(env, k, "content-generate", i, 1, 100 * (i + 1), base)));
    // Entries expire at base+100 ... base+500; at base+300 three have expired (expiry at or before now).
    expect(await sweepCache(env, base + 300)).toBe(3);
    const left = await env.DB.prepare("SELECT key FROM result_cache WHERE key IN (SELECT value FROM json_each(?1)) ORDER BY expires_at").bind(JSON.stringify(keys)).all<{ key: string }>();
    expect(left.results.map((r) => r.key)).toEqual(keys.slice(3));
    expect(await sweepCache(env, base + 300)).toBe(0);
  });
});

describe("savings ledger", () => {
  const row = (requestId: string, strategy: SavingsRow["strategy"], savedNano: number, clientId = "acme"): SavingsRow =>
    ({ requestId, clientId, template: "content-generate", strategy, savedNano, at: 1_700_000_000_000 });

  it("records each (request, strategy) once, however often and concurrently it is reported", async () => {
    const tag = crypto.randomUUID().slice(0, 8);
    const rows = [row(`${tag}-1`, "downgrade", 2800), row(`${tag}-1`, "off_peak", 0), row(`${tag}-2`, "caching", 3000), row(`${tag}-2`, "caching", 3000)];
    expect(await recordSavings(env, rows)).toBe(3);
    expect(await recordSavings(env, [row(`${tag}-1`, "downgrade", 9999), row(`${tag}-3`, "batching", 0)])).toBe(1);
    const again = await Promise.all(Array.from({ length: 10 }, () => recordSavings(env, [row(`${tag}-4`, "compression", 0), row(`${tag}-1`, "downgrade", 1)])));
    expect(again.reduce((a, b) => a + b, 0)).toBe(1);
    const { results } = await env.DB.prepare("SELECT request_id, strategy, saved_nano FROM optimizer_savings WHERE request_id LIKE ?1 ORDER BY request_id, strategy")
      .bind(`${tag}-%`).all();
    expect(results).toEqual([
      { request_id: `${tag}-1`, strategy: "downgrade", saved_nano: 2800 },
      { request_id: `${tag}-1`, strategy: "off_peak", saved_nano: 0 },
      { request_id: `${tag}-2`, strategy: "caching", saved_nano: 3000 },
      { request_id: `${tag}-3`, strategy: "batching", saved_nano: 0 },
      { request_id: `${tag}-4`, strategy: "compression", saved_nano: 0 },
    ]);
  });

  it("records many rows in a few statements (1,200 rows)", async () => {
    const tag = crypto.randomUUID().slice(0, 8);
    const rows = Array.from({ length: 1200 }, (_, i) => row(`${tag}-${i}`, "caching", i));
    expect(await recordSavings(env, rows)).toBe(1200);
    const sum = await env.DB.prepare("SELECT COUNT(*) AS n, SUM(saved_nano) AS s FROM optimizer_savings WHERE request_id LIKE ?1").bind(`${tag}-%`).first();
    expect(sum).toEqual({ n: 1200, s: (1199 * 1200) / 2 });
    expect(await recordSavings(env, [])).toBe(0);
  });
});

let lseq = 0;
function finished(clientId: string, template: string, fields: Partial<FinishedRequest> = {}): FinishedRequest {
  lseq += 1;
  const at = fields.finished_at ?? Date.now();
  return {
    id: `req_o${lseq}_${crypto.randomUUID().slice(0, 8)}`, client_id: clientId, template, queue: "normal", status: "completed",
    estimate_nano: 0, actual_nano: 0, attempts: 1, created_at: at - 1000, finished_at: at, error: null, ...fields,
  };
}

describe("GET /api/optimize/stats/{clientId}", () => {
  it("sums savings by strategy and period, counts requests per strategy, and the cache hit rate", async () => {
    const s = await makeClient();
    const other = await makeClient();
    const at = (iso: string) => Date.parse(iso);
    const r = (requestId: string, strategy: SavingsRow["strategy"], savedNano: number, iso: string, bytesSaved = 0, clientId = s.id): SavingsRow =>
      ({ requestId: `${s.id}-${requestId}`, clientId, template: "content-generate", strategy, savedNano, bytesSaved, at: at(iso) });
    const hitLogged = r("r2", "caching", 3000, "2026-03-01T23:59:59.999Z");
    await recordSavings(env, [
      r("r1", "downgrade", 2800, "2026-03-01T10:00:00Z"), r("r1", "off_peak", 0, "2026-03-01T10:00:00Z"), hitLogged,
      r("r3", "compression", 0, "2026-03-02T00:00:00Z", 5000), r("r4", "batching", 0, "2026-04-10T12:00:00Z"), r("r5", "caching", 200, "2026-04-10T12:00:00Z"),
      r("r6", "downgrade", 999, "2026-05-01T00:00:00Z"), r("r7", "downgrade", 111, "2026-02-28T23:59:59.999Z"),
      r("r8", "downgrade", 5555, "2026-03-05T00:00:00Z", 0, other.id),
    ]);
    const inRange = at("2026-03-15T00:00:00Z");
    await insertRequestLog(env.DB, [
      { ...finished(s.id, "content-generate", { finished_at: at("2026-03-01T23:59:59.999Z") }), id: hitLogged.requestId },
      finished(s.id, "content-generate", { finished_at: inRange }),
      finished(s.id, "content-generate-lite", { finished_at: inRange }),
      finished(s.id, "report-build", { finished_at: at("2026-04-30T23:59:59.999Z") }),
      finished(s.id, "content-generate", { finished_at: inRange, status: "failed", actual_nano: null }),
      finished(s.id, "notify-email", { finished_at: inRange }),
      finished(s.id, "content-generate", { finished_at: at("2026-05-01T00:00:00Z") }),
      finished(other.id, "content-generate", { finished_at: inRange }),
    ]);

    const byDay = await call("GET", `/api/optimize/stats/${s.id}?from=2026-03-01&to=2026-04-30`, { token: s.key });
    expect(byDay.status, JSON.stringify(byDay.body)).toBe(200);
    expect(byDay.body.periods).toEqual([
      { period: "2026-03-01", saved_nano: 5800, bytes_saved: 0, strategies: [
        { strategy: "caching", requests: 1, saved_nano: 3000, bytes_saved: 0 },
        { strategy: "downgrade", requests: 1, saved_nano: 2800, bytes_saved: 0 },
        { strategy: "off_peak", requests: 1, saved_nano: 0, bytes_saved: 0 },
      ] },
      { period: "2026-03-02", saved_nano: 0, bytes_saved: 5000, strategies: [{ strategy: "compression", requests: 1, saved_nano: 0, bytes_saved: 5000 }] },
      { period: "2026-04-10", saved_nano: 200, bytes_saved: 0, strategies: [
        { strategy: "batching", requests: 1, saved_nano: 0, bytes_saved: 0 },
        { strategy: "caching", requests: 1, saved_nano: 200, bytes_saved: 0 },
      ] },
    ]);
    expect(byDay.body.totals).toEqual({
      saved_nano: 6000, bytes_saved: 5000, strategies: [
        { strategy: "downgrade", requests: 1, saved_nano: 2800, bytes_saved: 0 },
        { strategy: "batching", requests: 1, saved_nano: 0, bytes_saved: 0 },
        { strategy: "caching", requests: 2, saved_nano: 3200, bytes_saved: 0 },
        { strategy: "compression", requests: 1, saved_nano: 0, bytes_saved: 5000 },
        { strategy: "off_peak", requests: 1, saved_nano: 0, bytes_saved: 0 },
      ],
    });
    expect(byDay.body.requests).toEqual({ downgraded: 1, batched: 1, deferred: 1, cache_hits: 2, compressed: 1 });
    // Executions of cacheable templates: content-generate (in range, completed), -lite and report-build; not the hit, the failure, notify-email or May.
    expect(byDay.body.cache).toEqual({ hits: 2, executions: 3, hit_rate: 0.4 });

    const byMonth = await call("GET", `/api/optimize/stats/${s.id}?from=2026-03-01&to=2026-04-30&granularity=month`, { token: ADMIN });
    expect(byMonth.body.periods.map((p: any) => [p.period, p.saved_nano, p.bytes_saved])).toEqual([["2026-03", 5800, 5000], ["2026-04", 200, 0]]);
    const empty = await call("GET", `/api/optimize/stats/${s.id}?from=2026-06-01&to=2026-06-30`, { token: s.key });
    expect([empty.body.periods, empty.body.totals.saved_nano, empty.body.cache]).toEqual([[], 0, { hits: 0, executions: 0, hit_rate: null }]);
    const defaults = await call("GET", `/api/optimize/stats/${s.id}`, { token: s.key });
    expect([defaults.status, defaults.body.to, defaults.body.from]).toEqual([200, dayKey(Date.now()), `${dayKey(Date.now()).slice(0, 7)}-01`]);
  });

  it("refuses bad ranges (400), other clients' keys and keys without usage:read (403), no credential (401), unknown clients (404)", async () => {
    const s = await makeClient();
    const narrow = await makeClient({ scopes: ["resources:read"] });
    const fields = (r: any) => r.body.error.details.fields.map((f: any) => f.path);
    const bad = [
      ["?from=2026-02-30", "query.from"], ["?to=2026-13-01", "query.to"], ["?from=2026-03-02&to=2026-03-01", "query.to"],
      ["?from=2025-01-01&to=2026-03-01", "query.to"], ["?granularity=week", "query.granularity"], ["?foo=1", "query"],
    ];
    for (const [query, field] of bad) {
      const r = await call("GET", `/api/optimize/stats/${s.id}${query}`, { token: s.key });
      expectError(r, 400, "validation_failed");
      expect(fields(r).join(","), query).toContain(field);
    }
    expectError(await call("GET", `/api/optimize/stats/bad%20id`, { token: ADMIN }), 400, "validation_failed");
    expectError(await call("GET", `/api/optimize/stats/${s.id}`), 401, "unauthorized");
    expectError(await call("GET", `/api/optimize/stats/${s.id}`, { token: KEYS.acme }), 403, "forbidden");
    expectError(await call("GET", `/api/optimize/stats/${narrow.id}`, { token: narrow.key }), 403, "forbidden");
    expectError(await call("GET", `/api/optimize/stats/no-such-client`, { token: ADMIN }), 404, "client_not_found");
  });
});

describe("GET /api/optimize/recommendations/{clientId}", () => {
  it("derives downgrade, caching and off-peak savings from seeded usage, matching hand-computed figures", async () => {
    const r = await makeClient();
    const q = await makeClient();
    const { full } = await templatePair();
    const otherPool = await makePool({ costPerUnitNano: 5, capacity: 1000 });
    const other = await makeTemplate([{ pool: otherPool.id, amount: 100 }]);
    const today = dayStart(Date.now());
    const yesterday = today - DAY_MS;
    const at = (created: number) => ({ created_at: created, finished_at: created + 1000 });
    await insertRequestLog(env.DB, [
      // 4 completed requests of the GPT-4-like template in the fast queue: 12,000 spent.
      ...[3000, 3000, 2900, 3100].map((actual) => finished(r.id, full, { queue: "fast", actual_nano: actual, estimate_nano: 3000, ...at(yesterday + 12 * H) })),
      finished(r.id, full, { status: "failed", actual_nano: null, estimate_nano: 3000, ...at(yesterday + 12 * H) }),
      finished(r.id, full, { actual_nano: 3000, ...at(today - 8 * DAY_MS) }),
      // 6 of another template in the normal queue: 4 created at 12:00 (one priced by its estimate), 2 at 23:00, inside 22-6.
      ...[500, 500, 500].map((actual) => finished(r.id, other, { actual_nano: actual, ...at(yesterday + 12 * H) })),
      finished(r.id, other, { actual_nano: null, estimate_nano: 500, ...at(yesterday + 12 * H) }),
      ...[500, 500].map((actual) => finished(r.id, other, { actual_nano: actual, ...at(yesterday + 23 * H) })),
      // Another client: 2 executions of the template, and 2 cache hits on it.
      ...[3000, 3000].map((actual) => finished(q.id, full, { actual_nano: actual, ...at(yesterday + 12 * H) })),
    ]);
    await recordSavings(env, ["h1", "h2"].map((h) => ({ requestId: `${q.id}-${h}`, clientId: q.id, template: full, strategy: "caching" as const, savedNano: 3000, at: yesterday + 13 * H })));
    await env.DB.batch([
      env.DB.prepare("INSERT INTO usage_daily (client_id, pool_id, day, units, cost_nano, events) VALUES (?1, 'p', ?2, 1, 5000, 1)").bind(r.id, dayKey(yesterday)),
      env.DB.prepare("INSERT INTO usage_daily (client_id, pool_id, day, units, cost_nano, events) VALUES (?1, 'p', ?2, 1, 999, 1)").bind(r.id, dayKey(today - 10 * DAY_MS)),
    ]);

    const downgrade = {
      kind: "downgrade", template: full, alternative: expect.any(String), requests: 4, share_percent: 40, window_cost_nano: 12_000,
      // 12,000 - ceil(12,000 × 200 / 3,000) = 11,200; × 30 / 7 = 48,000.
      window_saving_nano: 11_200, monthly_saving_nano: 48_000, detail: expect.any(String),
    };
    const offPeak = {
      kind: "off_peak", template: null, alternative: null, requests: 4, share_percent: 40, window_cost_nano: 2000,
      window_saving_nano: 0, monthly_saving_nano: 0, detail: expect.stringContaining("moves load, not money"),
    };
    const first = await call("GET", `/api/optimize/recommendations/${r.id}?days=7`, { token: r.key });
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body).toMatchObject({
      client_id: r.id, days: 7, from_day: dayKey(today - 6 * DAY_MS), to_day: dayKey(today), window_spend_nano: 5000, completed_requests: 10,
      total_monthly_saving_nano: 48_000,
    });
    expect(first.body.recommendations).toEqual([downgrade, offPeak]);

    // With caching off, the template's spend × every client's hit rate on it: 12,000 × 2 / (2 + 6) = 3,000; × 30 / 7 = 12,857.
    expect((await setSwitches(r.id, { caching: false })).status).toBe(200);
    const second = await call("GET", `/api/optimize/recommendations/${r.id}?days=7`, { token: r.key });
    expect(second.body.recommendations).toEqual([
      downgrade,
      { kind: "caching", template: full, alternative: null, requests: 4, share_percent: 40, window_cost_nano: 12_000, window_saving_nano: 3000, monthly_saving_nano: 12_857, detail: expect.any(String) },
      offPeak,
    ]);
    expect(second.body.total_monthly_saving_nano).toBe(60_857);

    // The analysis of the client is the same figures.
    const analysis = await call("POST", "/api/optimize/analyze", { token: r.key, json: { days: 7 } });
    expect(analysis.status).toBe(200);
    const { client_id: _c, trace_id: _t, ...figures } = second.body;
    expect(analysis.body).toMatchObject({ client_id: r.id, mode: "client", request: null, recommendations: figures });

    // A 30-day default window and no usage: nothing to recommend.
    const fresh = await makeClient();
    const none = await call("GET", `/api/optimize/recommendations/${fresh.id}`, { token: ADMIN });
    expect(none.body).toMatchObject({ days: 30, completed_requests: 0, window_spend_nano: 0, recommendations: [], total_monthly_saving_nano: 0 });
  });

  it("refuses bad windows (400), other clients (403), no credential (401), unknown clients (404)", async () => {
    const s = await makeClient();
    for (const days of ["0", "91", "1.5", "x"]) expectError(await call("GET", `/api/optimize/recommendations/${s.id}?days=${days}`, { token: s.key }), 400, "validation_failed");
    expectError(await call("GET", `/api/optimize/recommendations/${s.id}`), 401, "unauthorized");
    expectError(await call("GET", `/api/optimize/recommendations/${s.id}`, { token: KEYS.globex }), 403, "forbidden");
    expectError(await call("GET", `/api/optimize/recommendations/no-such-client`, { token: ADMIN }), 404, "client_not_found");
  });
});

describe("POST /api/optimize/analyze", () => {
  it("lists every strategy for a proposed request with what it would save, enqueueing nothing", async () => {
    const a = await makeClient();
    const { full, lite } = await templatePair();
    const params = { prompt: "Summarize ".repeat(1000) };
    const before = await env.DB.prepare("SELECT COUNT(*) AS n FROM optimizer_savings").first<{ n: number }>();
    const r = await call("POST", "/api/optimize/analyze", { token: a.key, json: { template: full, params, quality: "standard", queue: "batch" } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const packed = await compressText(JSON.stringify(params), 4096);
    expect(packed.compressed).toBe(true);
    expect(r.body.request).toMatchObject({
      template: full, queue: "batch", quality: "standard", original_estimate_nano: 3000, planned_template: lite, planned_estimate_nano: 200,
      downgrade_reason: "quality", not_before: null, batchable: true, total_saved_nano: 2800,
    });
    expect(r.body.request.strategies.map((s: any) => [s.strategy, s.enabled, s.applies, s.saved_nano, s.bytes_saved])).toEqual([
      ["downgrade", true, true, 2800, 0],
      ["caching", true, false, 0, 0],
      ["batching", true, true, 0, 0],
      ["compression", true, true, 0, packed.bytesSaved],
      ["off_peak", true, false, 0, 0],
    ]);

    // Once the result is cached, a hit would save what its execution cost.
    const p = await planRequest(env, { caller: a.caller, template: full, params, queue: "batch", quality: "standard", now: Date.now() });
    await cachePut(env, p.cache_key!, lite, { text: "done" }, 210, 60_000, Date.now());
    const cached = await call("POST", "/api/optimize/analyze", { token: a.key, json: { template: full, params, quality: "standard", queue: "batch" } });
    expect(cached.body.request.strategies[1]).toMatchObject({ strategy: "caching", applies: true, saved_nano: 210 });
    expect(cached.body.request.total_saved_nano).toBe(3010);

    // Premium in the normal queue with small params: nothing applies.
    const premium = await call("POST", "/api/optimize/analyze", { token: ADMIN, json: { client_id: a.id, template: full, params: { p: 1 }, quality: "premium" } });
    expect(premium.body.request.strategies.map((s: any) => s.applies)).toEqual([false, false, false, false, false]);
    expect(premium.body.request).toMatchObject({ planned_template: full, planned_estimate_nano: 3000, total_saved_nano: 0 });
    const after = await env.DB.prepare("SELECT COUNT(*) AS n FROM optimizer_savings").first<{ n: number }>();
    expect(after!.n).toBe(before!.n);
  });

  it("refuses bad input (400 naming the field), missing or wrong credentials (401/403), unknown clients and templates (404)", async () => {
    const a = await makeClient();
    const noRead = await makeClient({ scopes: ["usage:read"] });
    const cases: Array<[unknown, string]> = [
      [{ template: "content-generate", days: 7 }, "days"],
      [{ params: { a: 1 } }, "params"],
      [{ queue: "fast" }, "queue"],
      [{ template: "content-generate", queue: "soon" }, "queue"],
      [{ template: "content-generate", quality: "best" }, "quality"],
      [{ template: "content-generate", deadline: -1 }, "deadline"],
      [{ template: "" }, "template"],
      [{ days: 0 }, "days"],
      [{ surprise: 1 }, ""],
      [{ client_id: "bad id" }, "client_id"],
    ];
    for (const [json, field] of cases) {
      const r = await call("POST", "/api/optimize/analyze", { token: a.key, json });
      expectError(r, 400, "validation_failed");
      if (field) expect(r.body.error.details.fields.map((f: any) => f.path), JSON.stringify(json)).toContain(field);
    }
    expectError(await call("POST", "/api/optimize/analyze", { token: a.key, headers: { "content-type": "application/json" } }), 400, "bad_request");
    expectError(await call("POST", "/api/optimize/analyze", { token: a.key, body: "{", headers: { "content-type": "application/json" } }), 400, "bad_request");
    expectError(await call("POST", "/api/optimize/analyze", { json: {} }), 401, "unauthorized");
    expectError(await call("POST", "/api/optimize/analyze", { token: noRead.key, json: {} }), 403, "forbidden");
    expectError(await call("POST", "/api/optimize/analyze", { token: a.key, json: { client_id: "acme" } }), 403, "forbidden");
    const admin = await call("POST", "/api/optimize/analyze", { token: ADMIN, json: {} });
    expectError(admin, 400, "validation_failed");
    expect(admin.body.error.details.fields[0].path).toBe("client_id");
    expectError(await call("POST", "/api/optimize/analyze", { token: ADMIN, json: { client_id: "no-such-client" } }), 404, "client_not_found");
    expectError(await call("POST", "/api/optimize/analyze", { token: a.key, json: { template: "no-such-template" } }), 404, "template_not_found");
  });
});

describe("/admin/clients/{clientId}/optimizer", () => {
  it("has every strategy on by default; a PUT changes only the strategies it names", async () => {
    const c = await makeClient();
    const all = { downgrade: true, batching: true, caching: true, compression: true, off_peak: true };
    const first = await call("GET", `/admin/clients/${c.id}/optimizer`, { token: ADMIN });
    expect(first.body).toMatchObject({ client_id: c.id, strategies: all, updated_at: null });
    const put = await setSwitches(c.id, { caching: false, off_peak: false });
    expect(put.status).toBe(200);
    expect(put.body.strategies).toEqual({ ...all, caching: false, off_peak: false });
    expect(put.body.updated_at).toBeGreaterThan(0);
    expect((await setSwitches(c.id, { off_peak: true })).body.strategies).toEqual({ ...all, caching: false });
    expect((await call("GET", `/admin/clients/${c.id}/optimizer`, { token: ADMIN })).body.strategies).toEqual({ ...all, caching: false });
  });

  it("refuses bad bodies (400), non-admins (401/403) and unknown clients (404), changing nothing", async () => {
    const c = await makeClient();
    for (const [json, field] of [[{}, ""], [{ caching: "no" }, "caching"], [{ turbo: true }, ""], [{ caching: null }, "caching"]] as const) {
      const r = await setSwitches(c.id, json);
      expectError(r, 400, "validation_failed");
      if (field) expect(r.body.error.details.fields.map((f: any) => f.path)).toContain(field);
    }
    expectError(await call("PUT", `/admin/clients/${c.id}/optimizer`, { token: ADMIN, headers: { "content-type": "application/json" } }), 400, "bad_request");
    expectError(await setSwitches(c.id, { caching: false }, c.key), 403, "forbidden");
    expectError(await call("PUT", `/admin/clients/${c.id}/optimizer`, { json: { caching: false } }), 401, "unauthorized");
    expectError(await call("GET", `/admin/clients/${c.id}/optimizer`, { token: c.key }), 403, "forbidden");
    expectError(await setSwitches("no-such-client", { caching: false }), 404, "client_not_found");
    expectError(await call("GET", "/admin/clients/no-such-client/optimizer", { token: ADMIN }), 404, "client_not_found");
    expect((await call("GET", `/admin/clients/${c.id}/optimizer`, { token: ADMIN })).body).toMatchObject({ strategies: { caching: true }, updated_at: null });
  });
});
