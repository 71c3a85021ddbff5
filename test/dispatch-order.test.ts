import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { QUEUE_POINTS, QUEUES, STARVATION_MS, DEFAULT_TIER_POINTS } from "../src/domain/priority";
import type { Tier } from "../src/domain/types";
import type { SchedulerObject } from "../src/objects/scheduler";
import { clearConfigCache } from "../src/services/config";
import { ADMIN, call, enqueue, eventually, KEYS, makePool, makeTemplate, scheduler } from "./helpers";

const CLIENTS: Array<[string, Tier]> = [["acme", "enterprise"], ["globex", "premium"], ["initech", "standard"], ["hooli", "basic"]];
const TOKEN: Record<string, string> = { acme: KEYS.acme, globex: KEYS.globex, initech: KEYS.initech, hooli: KEYS.hooli };

interface Row { id: string; client_id: string; tier: Tier; queue: keyof typeof QUEUE_POINTS; created_at: number; dispatch_seq: number | null; status: string }

async function rowsOf(template: string): Promise<Row[]> {
  return runInDurableObject(scheduler(), (_i: SchedulerObject, state) =>
    state.storage.sql.exec("SELECT id, client_id, tier, queue, created_at, dispatch_seq, status FROM requests WHERE template = ?", template).toArray() as unknown as Row[]);
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
    expect(new Set(rows.map((r) => r.dispatch_seq)).size).toBe(1000);
    const points = (r: Row) => DEFAULT_TIER_POINTS[r.tier] + QUEUE_POINTS[r.queue];
    const actual = [...rows].sort((a, b) => a.dispatch_seq! - b.dispatch_seq!);
    // Each client's own requests go strictly by tier + queue points, then the oldest: fairness only
    // decides between clients.
    for (const [client] of CLIENTS) {
      const mine = actual.filter((r) => r.client_id === client);
      const expected = [...mine].sort((a, b) => points(b) - points(a) || a.created_at - b.created_at || (a.id < b.id ? -1 : 1));
      expect(mine.map((r) => r.id)).toEqual(expected.map((r) => r.id));
    }
    // Between clients, the fairness term (0-10 points, weighted by tier) is all that may reorder: nothing
    // among the first 256 dispatched has more than 10 points less than anything left for later.
    const first = actual.slice(0, 256);
    const later = actual.slice(256);
    expect(Math.min(...first.map(points))).toBeGreaterThanOrEqual(Math.max(...later.map(points)) - 10);
    // and the top of the order is the highest tier + queue
    expect(points(actual[0]!)).toBe(Math.max(...rows.map(points)));
  });

  it("anti-starvation: a basic batch request waiting 10 minutes dispatches ahead of a stream of enterprise fast work", async () => {
    const pool = await makePool({ capacity: 1, refillPerSec: 50 }); // one request at a time: every pass is a contest
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    await call("POST", "/admin/scheduler/stop", { token: ADMIN });
    await enqueue({ requests: Array.from({ length: 40 }, () => ({ template, queue: "fast" })) }, KEYS.acme);
    const basic = (await enqueue({ template, queue: "batch" }, KEYS.hooli)).body.request.id;
    const backdate = async (ms: number) => runInDurableObject(scheduler(), (instance: SchedulerObject, state) => {
      state.storage.sql.exec("UPDATE requests SET created_at = created_at - ? WHERE id = ?", ms, basic);
      const internals = instance as unknown as { queued: Map<string, { createdAt: number }>; rankCache: unknown };
      internals.queued.get(basic)!.createdAt -= ms;
      internals.rankCache = null;
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
