import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { ADMIN, call, enqueue, eventually, KEYS, makePool, makeTemplate, requestOf, scheduler, settled } from "../support/helpers";

const MIN = 60_000;

/**
 * Move a queued request's times (creation, ready time, not-before) in storage and in the scheduler's
 * copies in memory, as if it had been made earlier: a request created `created` ms ago that may run
 * from `ready` (relative to now; negative is past).
 */
async function retime(id: string, times: { created: number; ready: number }): Promise<void> {
  await runInDurableObject(scheduler(), (instance: SchedulerObject, state) => {
    const now = Date.now();
    const created = now + times.created;
    const ready = now + times.ready;
    state.storage.sql.exec("UPDATE requests SET created_at = ?, ready_at = ?, not_before = ? WHERE id = ?", created, ready, ready, id);
    const i = instance as unknown as {
      store: { queued: Map<string, { createdAt: number; readyAt: number; notBefore: number }>; live: Map<string, Record<string, unknown>>; epoch: number };
      ranking: { rankCache: unknown };
    };
    Object.assign(i.store.queued.get(id)!, { createdAt: created, readyAt: ready, notBefore: ready });
    Object.assign(i.store.live.get(id)!, { created_at: created, ready_at: ready, not_before: ready });
    i.store.epoch += 1;
    i.ranking.rankCache = null;
  });
}

/** Run the scheduler's alert check now (it runs at most every few seconds on its own). */
async function checkAlerts(): Promise<void> {
  await runInDurableObject(scheduler(), async (instance: SchedulerObject) => {
    const health = (instance as unknown as { health: { alertsCheckedAt: number; checkAlerts(now: number): Promise<void> } }).health;
    health.alertsCheckedAt = 0;
    await health.checkAlerts(Date.now());
  });
}

async function openStarvation(queue: string): Promise<{ oldest_wait_ms: number } | null> {
  const row = await env.DB.prepare("SELECT details FROM alerts WHERE kind = 'starvation' AND subject = ?1 AND state = 'open'").bind(queue).first<{ details: string }>();
  return row ? (JSON.parse(row.details) as { oldest_wait_ms: number }) : null;
}

/** rm_queue_oldest_wait_seconds of one queue, from a real scrape. */
async function oldestWaitGauge(queue: string): Promise<number> {
  const r = await call("GET", "/metrics", { token: "test-metrics-token" });
  expect(r.status).toBe(200);
  const line = (r.body as string).split("\n").find((l) => l.startsWith(`rm_queue_oldest_wait_seconds{queue="${queue}"}`));
  return Number(line!.split(" ").at(-1));
}

describe("ready time: waiting counts from when a request may first run", () => {
  it("a deferred request earns no wait points while held back: an enterprise immediate request ready at the same moment goes first", async () => {
    const pool = await makePool({ capacity: 1, refillPerSec: 50 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    expect((await call("POST", "/admin/scheduler/stop", { token: ADMIN })).status).toBe(200);
    // A basic batch request deferred 20 minutes: made 20 minutes ago, ready now.
    const held = await enqueue({ template, queue: "batch", not_before: Date.now() + 20 * MIN }, KEYS.hooli);
    expect(held.status).toBe(202);
    const basic = held.body.request.id as string;
    await retime(basic, { created: -20 * MIN, ready: 0 });
    const enterprise = (await enqueue({ template, queue: "immediate" }, KEYS.acme)).body.request.id as string;

    const b = (await call("GET", `/api/queue/position/${basic}`, { token: KEYS.hooli })).body;
    const e = (await call("GET", `/api/queue/position/${enterprise}`, { token: KEYS.acme })).body;
    // Counted from creation it would have 20 wait points and be starved (first of all); from ready time, none.
    expect(b.priority).toMatchObject({ tier: 10, queue: 8, starved: false });
    expect(b.priority.wait).toBeLessThan(0.1);
    expect(e.priority).toMatchObject({ tier: 40, queue: 30, starved: false });
    expect(e.position).toBe(1);
    expect(b.position).toBe(2);

    expect((await call("POST", "/admin/scheduler/start", { token: ADMIN })).status).toBe(200);
    const [eDone, bDone] = [await settled(enterprise, ["completed"]), await settled(basic, ["completed"], 8000, KEYS.hooli)];
    expect(eDone.dispatch_seq).toBeLessThan(bDone.dispatch_seq);
  });

  it("no starvation alert for a queue whose oldest ready request is younger than 10 minutes, while older held-back work waits; the status and gauge agree", async () => {
    const pool = await makePool({ capacity: 100 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    expect((await call("POST", "/admin/scheduler/stop", { token: ADMIN })).status).toBe(200);
    const stillHeld = (await enqueue({ template, queue: "normal" }, KEYS.initech)).body.request.id as string;
    const readyLately = (await enqueue({ template, queue: "normal" }, KEYS.initech)).body.request.id as string;
    await retime(stillHeld, { created: -30 * MIN, ready: 60 * MIN }); // made 30 min ago, runs in an hour
    await retime(readyLately, { created: -30 * MIN, ready: -5 * MIN }); // made 30 min ago, ready 5 min ago

    await checkAlerts();
    expect(await openStarvation("normal")).toBeNull();
    const status = (await call("GET", "/api/queue/status", { token: ADMIN })).body;
    const normal = status.queues.find((q: { queue: string }) => q.queue === "normal");
    expect(normal).toMatchObject({ depth: 2, ready: 1 });
    expect(normal.oldest_wait_ms).toBeGreaterThanOrEqual(5 * MIN);
    expect(normal.oldest_wait_ms).toBeLessThan(5 * MIN + 10_000);
    const gauge = await oldestWaitGauge("normal");
    expect(gauge).toBeGreaterThanOrEqual(300);
    expect(gauge).toBeLessThan(310);

    // Ready for 11 minutes: now it starves.
    await retime(readyLately, { created: -30 * MIN, ready: -11 * MIN });
    await checkAlerts();
    const alert = await openStarvation("normal");
    expect(alert!.oldest_wait_ms).toBeGreaterThanOrEqual(11 * MIN);
    expect(alert!.oldest_wait_ms).toBeLessThan(11 * MIN + 10_000);
    expect(await oldestWaitGauge("normal")).toBeGreaterThan(600);

    for (const id of [stillHeld, readyLately]) expect((await call("DELETE", `/api/queue/${id}`, { token: KEYS.initech })).status).toBe(200);
    await checkAlerts();
    expect(await openStarvation("normal")).toBeNull();
    expect((await call("POST", "/admin/scheduler/start", { token: ADMIN })).status).toBe(200);
  });

  it("the SLA wait counts from ready time; while held back a request is not waiting in its queue's figures", async () => {
    const pool = await makePool({ capacity: 100 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    const r = await enqueue({ template, queue: "fast", not_before: Date.now() + 1500 }, KEYS.acme);
    const id = r.body.request.id as string;
    await retime(id, { created: -60 * MIN, ready: 1500 });
    const status = (await call("GET", "/api/queue/status", { token: ADMIN })).body;
    expect(status.queues.find((q: { queue: string }) => q.queue === "fast")).toMatchObject({ depth: 1, ready: 0, oldest_wait_ms: 0 });

    const done = await settled(id, ["completed"], 10_000);
    expect(done.started_at - done.created_at).toBeGreaterThan(60 * MIN);
    const sla = await call("GET", `/api/execution/${id}/sla`, { token: KEYS.acme });
    expect(sla.status).toBe(200);
    expect(sla.body).toMatchObject({ tier: "enterprise", queue: "fast", wait: "met", status: "met" });
    expect(sla.body.wait_ms).toBeGreaterThanOrEqual(0);
    expect(sla.body.wait_ms).toBeLessThan(sla.body.target.max_wait_ms);
    await eventually(async () => (await requestOf(id)).status === "completed", 1000);
  });
});
