import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ADMIN, call, captureLog, enqueueHeld, eventually, readyToExecute, settled, sleep } from "../support/helpers";

/**
 * Slow start (src/objects/scheduler/dispatcher.ts): a shard that launched nothing for a second and finds
 * more ready work than its pacing limit (512 with one shard) takes at most 16 requests in its next pass,
 * and each pass after that twice as many as the last, up to the limit. The requests the ramp holds back
 * run in the passes that follow; a backlog within the limit goes at once.
 */

type PassLine = { msg: string; trigger: string; launched: number };

/** A client whose requests each hold their job `latencyMs`; `enqueueAll(n)` enqueues n of them while dispatch is stopped. */
async function backlog(latencyMs: number) {
  const { template, client } = await readyToExecute("slow-start", { capacity: 100_000 });
  expect((await call("PUT", `/admin/clients/${client.id}/quota`, { token: ADMIN, json: { max_concurrent: 1000, cpu_millicores: null, memory_mb: null } })).status).toBe(200);
  const enqueueAll = async (n: number) => {
    expect((await call("POST", "/admin/scheduler/stop", { token: ADMIN })).status).toBe(200);
    return enqueueHeld(template, client.key, n, latencyMs);
  };
  return { client, enqueueAll };
}

/** Every one of these requests completed: nothing queued or in flight any more, and a sample of them completed. */
async function allCompleted(ids: string[], key: string): Promise<void> {
  await eventually(async () => {
    const { scheduler } = (await call("GET", "/api/queue/status", { token: key })).body as { scheduler: { queued: number; in_flight: number } };
    return scheduler.queued + scheduler.in_flight === 0 || null;
  }, 20_000, "the backlog drained");
  for (const id of [ids[0]!, ids[ids.length - 1]!]) await settled(id, ["completed"], 5000, key);
}

/** Start dispatch, wait until these requests completed, and return what each pass launched meanwhile. */
async function drain(ids: string[], key: string): Promise<number[]> {
  const lines = captureLog();
  expect((await call("POST", "/admin/scheduler/start", { token: ADMIN })).status).toBe(200);
  await allCompleted(ids, key);
  vi.restoreAllMocks();
  return lines.filter((l) => l.msg === "dispatch_pass").map((l) => l.launched as number);
}

describe("a shard's slow start after a quiet spell", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("on a backlog above its pacing limit launches 16 in its first pass, then twice as many per pass, and runs every request once", async () => {
    const { client, enqueueAll } = await backlog(600);
    const ids = await enqueueAll(600);
    const passes = await drain(ids, client.key);
    // Calls of 600 ms stay young (250 ms) and in flight through the ramp: each pass takes at most what the doubled ramp allows.
    expect(passes[0]).toBe(16);
    let ramp = 16;
    for (const launched of passes.slice(0, 4)) {
      expect(launched).toBeLessThanOrEqual(ramp);
      ramp *= 2;
    }
    expect(passes.reduce((a, b) => a + b, 0)).toBe(600);
    // The ramp grows while work keeps being launched: later passes take more than the first.
    expect(Math.max(...passes)).toBeGreaterThan(16);
    // Dispatched once each: one attempt per request.
    const attempts = await Promise.all(ids.slice(0, 20).map(async (id) => (await call("GET", `/api/execution/${id}`, { token: client.key })).body.request.attempts));
    expect(attempts).toEqual(Array(20).fill(1));
  });

  it("keeps ramping while another client is at its concurrency limit (the pass comes back when its calls have aged, not at the next settlement)", async () => {
    const { client, enqueueAll } = await backlog(3000);
    // Another client, at its limit: its one slot held for the whole test.
    const { template: otherTemplate, client: other } = await readyToExecute("slow-start-full", { capacity: 100_000 });
    expect((await call("PUT", `/admin/clients/${other.id}/quota`, { token: ADMIN, json: { max_concurrent: 1, cpu_millicores: null, memory_mb: null } })).status).toBe(200);
    const holder = await env.CLIENT.get(env.CLIENT.idFromName(other.id)).acquireJobs({ maxConcurrent: 1, cpuMillicores: null, memoryMb: null, poolDaily: {}, weight: null }, [{ jobId: "holder", kind: "request", expiresAt: Date.now() + 60_000 }]);
    expect(holder[0]!.ok).toBe(true);
    await sleep(1200);
    const ids = await enqueueAll(600);
    const blocked = await call("POST", "/api/queue/enqueue", { token: other.key, json: { requests: Array.from({ length: 5 }, () => ({ template: otherTemplate, params: {} })) } });
    expect(blocked.status).toBe(200);
    expect((await call("POST", "/admin/scheduler/start", { token: ADMIN })).status).toBe(200);
    // The calls last 3 s: no settlement wakes the shard before then. The ramp (16, 32, 64, ...) goes on meanwhile.
    await sleep(1500);
    const { scheduler } = (await call("GET", "/api/queue/status", { token: client.key })).body as { scheduler: { in_flight: number } };
    expect(scheduler.in_flight).toBeGreaterThanOrEqual(200);
    await env.CLIENT.get(env.CLIENT.idFromName(other.id)).releaseJobs(["holder"]);
    await allCompleted(ids, client.key);
    for (const r of blocked.body.results as Array<{ request: { id: string } }>) await settled(r.request.id, ["completed"], 8000, other.key);
  });

  it("ramps again from 16 after a second with nothing launched; a backlog within the limit goes in one pass", async () => {
    const { client, enqueueAll } = await backlog(50);
    await sleep(1200);
    const first = await enqueueAll(520);
    expect((await drain(first, client.key))[0]).toBe(16);
    // Quiet for over a second, a backlog within the limit (512): all of it in the first pass.
    await sleep(1200);
    const small = await enqueueAll(100);
    expect((await drain(small, client.key))[0]).toBe(100);
    // Quiet again, above the limit: 16 first again.
    await sleep(1200);
    const again = await enqueueAll(520);
    const passes = await drain(again, client.key);
    expect(passes[0]).toBe(16);
    expect(passes.reduce((a, b) => a + b, 0)).toBe(520);
  });
});
