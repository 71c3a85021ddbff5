import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { QUEUE_POINTS, QUEUES, STARVATION_MS, DEFAULT_TIER_POINTS } from "../../src/domain/priority";
import type { Tier } from "../../src/domain/types";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { clearConfigCache } from "../../src/storage/config";
import { shardStub } from "../../src/objects/scheduler/shards";
import { ADMIN, call, enqueue, eventually, KEYS, makePool, makeTemplate, scheduler, STORED_REQUESTS } from "../support/helpers";

/** This file runs with one scheduler shard and again with four (vitest.config.ts). */
const SHARDS = Number(env.SCHEDULER_SHARDS);

const CLIENTS: Array<[string, Tier]> = [["acme", "enterprise"], ["globex", "premium"], ["initech", "standard"], ["hooli", "basic"]];
const TOKEN: Record<string, string> = { acme: KEYS.acme, globex: KEYS.globex, initech: KEYS.initech, hooli: KEYS.hooli };

interface Row { id: string; client_id: string; tier: Tier; queue: keyof typeof QUEUE_POINTS; created_at: number; dispatch_seq: number | null; status: string; shard: number }

/** Every shard's rows of a template (each shard numbers its own dispatches). */
async function rowsOf(template: string): Promise<Row[]> {
  const all = await Promise.all(Array.from({ length: SHARDS }, (_, shard) => runInDurableObject(shardStub(env, shard), (_i: SchedulerObject, state) =>
    state.storage.sql.exec(`SELECT id, client_id, tier, queue, created_at, dispatch_seq, status FROM ${STORED_REQUESTS} WHERE template = ?`, template).toArray()
      .map((r) => ({ ...r, shard })) as unknown as Row[])));
  return all.flat();
}

describe("dispatch order", () => {
  it("1,000 requests across tiers and queues: each client's in priority order, and fairness moves nothing more than its 10 points", async () => {
    // Client concurrency out of the way so that the order alone decides.
    await env.DB.prepare("UPDATE tiers SET max_concurrent = 1000").run();
    clearConfigCache();
    // Deferred work runs now, not at the off-peak window: the order alone is under test.
    for (const [client] of CLIENTS) expect((await call("PUT", `/admin/clients/${client}/optimizer`, { token: ADMIN, json: { off_peak: false } })).status).toBe(200);
    const pool = await makePool({ capacity: 100_000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    await call("POST", "/admin/scheduler/stop", { token: ADMIN });
    for (let b = 0; b < 10; b++) {
      const [client] = CLIENTS[b % 4]!;
      const requests = Array.from({ length: 100 }, (_, i) => ({ template, queue: QUEUES[(i * 7 + b) % 5], params: { simulate: { latency_ms: 0 } } }));
      expect((await enqueue({ requests }, TOKEN[client]!)).body.accepted).toBe(100);
    }
    await call("POST", "/admin/scheduler/start", { token: ADMIN });
    await eventually(async () => (await rowsOf(template)).every((r) => r.status === "completed"), 30_000, "all 1,000 to complete");
    const rows = await rowsOf(template);
    expect(rows).toHaveLength(1000);
    expect(new Set(rows.map((r) => `${r.shard}:${r.dispatch_seq}`)).size).toBe(1000);
    const points = (r: Row) => DEFAULT_TIER_POINTS[r.tier] + QUEUE_POINTS[r.queue];
    const actual = [...rows].sort((a, b) => a.shard - b.shard || a.dispatch_seq! - b.dispatch_seq!);
    // Each client's own requests go strictly by tier + queue points, then the oldest: fairness only
    // decides between clients.
    for (const [client] of CLIENTS) {
      const mine = actual.filter((r) => r.client_id === client);
      const expected = [...mine].sort((a, b) => points(b) - points(a) || a.created_at - b.created_at || (a.id < b.id ? -1 : 1));
      expect(mine.map((r) => r.id)).toEqual(expected.map((r) => r.id));
    }
    // Between clients of a shard, the fairness term (0-10 points, weighted by tier) is all that may
    // reorder: nothing among the first quarter (256 of 1,000 with one shard) dispatched has more than 10
    // points less than anything left for later. (Across shards, order matters only when capacity is
    // scarce: then the pools arbitrate, test/shards.test.ts.)
    for (let shard = 0; shard < SHARDS; shard++) {
      const mine = actual.filter((r) => r.shard === shard);
      if (mine.length === 0) continue;
      const cut = Math.floor((mine.length * 256) / 1000);
      const first = mine.slice(0, cut);
      const later = mine.slice(cut);
      if (first.length && later.length) expect(Math.min(...first.map(points))).toBeGreaterThanOrEqual(Math.max(...later.map(points)) - 10);
      // and the top of each shard's order is its highest tier + queue
      expect(points(mine[0]!)).toBe(Math.max(...mine.map(points)));
    }
  });

  // One shard: the order is the scheduler's alone. With shards, acme's and hooli's requests sit in two
  // shards and the pool decides between them (a starved request is held for: test/objects/shards.test.ts).
  it.skipIf(SHARDS > 1)("anti-starvation: a basic batch request waiting 10 minutes dispatches ahead of a stream of enterprise fast work", async () => {
    const pool = await makePool({ capacity: 1, refillPerSec: 50 }); // one request at a time: every pass is a contest
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    await call("POST", "/admin/scheduler/stop", { token: ADMIN });
    await enqueue({ requests: Array.from({ length: 40 }, () => ({ template, queue: "fast" })) }, KEYS.acme);
    const basic = (await enqueue({ template, queue: "batch" }, KEYS.hooli)).body.request.id;
    const backdate = async (ms: number) => runInDurableObject(scheduler(), (instance: SchedulerObject, state) => {
      // Waiting counts from the ready time (here its creation): both move back.
      state.storage.sql.exec("UPDATE requests SET created_at = created_at - ?1, ready_at = ready_at - ?1, not_before = not_before - ?1 WHERE id = ?2", ms, basic);
      const internals = instance as unknown as { store: { queued: Map<string, { createdAt: number; readyAt: number; notBefore: number }> }; ranking: { rankCache: unknown } };
      const q = internals.store.queued.get(basic)!;
      q.createdAt -= ms;
      q.readyAt -= ms;
      q.notBefore -= ms;
      internals.ranking.rankCache = null;
    });
    await backdate(STARVATION_MS / 2);
    const half = (await call("GET", `/api/queue/position/${basic}`, { token: KEYS.hooli })).body;
    expect(half.priority.wait).toBeCloseTo(10, 1);
    expect(half.priority.starved).toBe(false);
    expect(half.position).toBe(41);
    await backdate(STARVATION_MS / 2);
    const full = (await call("GET", `/api/queue/position/${basic}`, { token: KEYS.hooli })).body;
    expect(full.priority).toMatchObject({ wait: 20, starved: true });
    expect(full.position).toBe(1);
    await call("POST", "/admin/scheduler/start", { token: ADMIN });
    // the stream keeps coming while the queue drains
    await enqueue({ requests: Array.from({ length: 20 }, () => ({ template, queue: "fast" })) }, KEYS.acme);
    await eventually(async () => (await rowsOf(template)).every((r) => r.status === "completed"), 20_000, "the stream to drain");
    const order = (await rowsOf(template)).sort((a, b) => a.dispatch_seq! - b.dispatch_seq!);
    expect(order[0]!.id).toBe(basic);
  });
});
