import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { clearConfigCache } from "../../src/storage/config";
import { listUsageEvents } from "../../src/storage/usage";
import { ADMIN, call, enqueue, eventually, KEYS, makePool, makeTemplate, scheduler } from "../support/helpers";

/**
 * Issue 20: many long jobs in flight at once. HOLD_WORKER is the content generator with ACCEPT_MANY
 * (vitest.config.ts): its runMany answers `{ accepted }` at once and reports each job when it ends, so
 * the scheduler holds no call open while the jobs run (docs/kam.md: the worker protocol). The bench runs
 * 10,000 (bench/queue.mjs, QUEUE_BENCH_HOLD_S); the suite runs 1,500.
 */
describe("held jobs", () => {
  it("1,500 jobs held 4 s each run at the same time: none lost, none run twice, every one settled", async () => {
    const N = 1500;
    await env.DB.prepare("UPDATE tiers SET max_concurrent = 2000").run();
    clearConfigCache();
    const pool = await makePool({ capacity: 100_000, costPerUnitNano: 1 });
    const template = await makeTemplate([{ pool: pool.id, amount: 2 }], { binding: "HOLD_WORKER", timeoutMs: 30_000 });
    await call("POST", "/admin/scheduler/stop", { token: ADMIN });
    const ids: string[] = [];
    for (let b = 0; b < N / 100; b++) {
      const r = await enqueue({ requests: Array.from({ length: 100 }, () => ({ template, queue: "normal", params: { simulate: { hold_s: 4 }, tokens_used: 1 } })) }, KEYS.acme);
      expect(r.body.accepted).toBe(100);
      ids.push(...r.body.results.map((x: { request: { id: string } }) => x.request.id));
    }
    await call("POST", "/admin/scheduler/start", { token: ADMIN });
    // All of them running at once: in flight in the scheduler, slots held in the client, units reserved in the pool.
    const peak = await eventually(async () => {
      const s = (await call("GET", "/admin/scheduler/status", { token: ADMIN })).body;
      return s.in_flight === N ? s : null;
    }, 15_000, `all ${N} in flight`);
    expect(peak).toMatchObject({ queued: 0, in_flight: N });
    expect((await call("GET", "/api/usage/acme/current", { token: ADMIN })).body.concurrency_in_use).toBe(N);
    const level = (await call("POST", "/api/resources/check", { token: KEYS.acme, json: { pool: pool.id, amount: 1 } })).body.results[0];
    expect(level.available).toBe(100_000 - 2 * N);
    // Then every one completes once.
    const views = await eventually(async () => {
      const all = (await Promise.all(ids.map((id) => scheduler().get(id, null)))) as unknown as Array<{ status: string; attempts: number; actual_nano: number }>;
      return all.every((v) => v.status === "completed") ? all : null;
    }, 30_000, "all settled");
    expect(views).toHaveLength(N);
    expect(views.every((v) => v.attempts === 1 && v.actual_nano === 1)).toBe(true);
    expect((await call("GET", "/api/usage/acme/current", { token: ADMIN })).body.concurrency_in_use).toBe(0);
    const after = (await call("POST", "/api/resources/check", { token: KEYS.acme, json: { pool: pool.id, amount: 1 } })).body.results[0];
    expect(after.available).toBe(100_000 - N); // one unit used by each, the other refunded
    await env.POOL.get(env.POOL.idFromName(pool.id)).flush();
    const events = await listUsageEvents(env.DB, { poolId: pool.id });
    expect(events).toHaveLength(N);
    expect(new Set(events.map((e) => e.request_id)).size).toBe(N);
  }, 90_000);
});
