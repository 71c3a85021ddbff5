import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { listUsageEvents } from "../../src/storage/usage";
import { ADMIN, call, enqueue, KEYS, makePool, makeTemplate, mulberry32, requestOf, scheduler, settled, sleep } from "../support/helpers";

/**
 * Requests of one template launched together go to their worker in one RPC call (`runMany`), each
 * still a request of its own: its own answer, usage, deadline, failure and cancel.
 */

const start = () => call("POST", "/admin/scheduler/start", { token: ADMIN });
const stop = () => call("POST", "/admin/scheduler/stop", { token: ADMIN });
const available = async (pool: string) =>
  (await call("POST", "/api/resources/check", { token: KEYS.acme, json: { pool, amount: 1 } })).body.results[0].available;

/**
 * Enqueue while the scheduler is stopped, so that one pass launches them all together; 10 to a call,
 * so that large params stay within the API's body limit (MAX_BODY_BYTES, 1 MiB).
 */
async function enqueueStopped(template: string, params: unknown[], extra: Record<string, unknown> = {}): Promise<string[]> {
  await stop();
  const ids: string[] = [];
  for (let i = 0; i < params.length; i += 10) {
    const r = await enqueue({ requests: params.slice(i, i + 10).map((p) => ({ template, queue: "fast", params: p, ...extra })) });
    expect(r.status).toBe(200);
    ids.push(...r.body.results.map((x: any) => x.request.id));
  }
  return ids;
}

describe("runMany: requests launched together, one worker call", () => {
  it("20 requests: one call, each completes with its own result and the usage it reported, counted once", async () => {
    const pool = await makePool({ capacity: 1000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 10 }]);
    const ids = await enqueueStopped(template, Array.from({ length: 20 }, (_, i) => ({ prompt: `p${i}`, tokens_used: (i % 5) + 1 })));
    await start();
    const done = await Promise.all(ids.map((id) => settled(id, ["completed"], 8000)));
    done.forEach((r, i) => {
      expect(r.result).toMatchObject({ transport: "rpc-many", request_id: ids[i], text: expect.stringContaining(`p${i}`) });
      expect(r.attempts).toBe(1);
      expect(r.actual_nano).toBe(((i % 5) + 1) * 1000);
    });
    const used = Array.from({ length: 20 }, (_, i) => (i % 5) + 1).reduce((a, b) => a + b, 0);
    expect(await available(pool.id)).toBe(1000 - used);
    await env.POOL.get(env.POOL.idFromName(pool.id)).flush();
    const events = await listUsageEvents(env.DB, { poolId: pool.id });
    expect(events).toHaveLength(20);
    expect(events.reduce((sum, e) => sum + e.units, 0)).toBe(used);
  });

  it("one request of a group hangs, one throws, one answers an error: each fails alone; the others are not held up", async () => {
    const pool = await makePool({ capacity: 1000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 10 }], { timeoutMs: 700 });
    const ids = await enqueueStopped(template, [
      { tokens_used: 1 },
      { tokens_used: 2, simulate: { fail: "hang", fail_attempts: 1 } },
      { tokens_used: 3, simulate: { fail: "throw" } },
      { tokens_used: 4, simulate: { fail: "error" } },
      { tokens_used: 5 },
    ], { max_attempts: 2 });
    await start();
    const [ok1, hung, threw, errored, ok2] = await Promise.all(ids.map((id) => settled(id, ["completed", "failed"], 10_000)));
    for (const r of [ok1, ok2]) {
      expect(r.status).toBe("completed");
      expect(r.attempts).toBe(1);
      expect(r.finished_at - r.started_at).toBeLessThan(700); // not held up by the hanging one
    }
    // Timed out alone on its first attempt, completed by its retry.
    expect(hung).toMatchObject({ status: "completed", attempts: 2, actual_nano: 2000 });
    expect(threw).toMatchObject({ status: "failed", attempts: 2 });
    expect(threw.error).toMatch(/^worker failed: simulated failure/);
    expect(errored).toMatchObject({ status: "failed", attempts: 2 });
    expect(errored.error).toMatch(/^worker failed: simulated: simulated upstream error/);
    // Only what the completed ones used is spent: 1 + 2 + 5.
    expect(await available(pool.id)).toBe(1000 - 8);
  });

  it("cancelling one running request of a group stops it alone and releases its reservation", async () => {
    const pool = await makePool({ capacity: 1000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 10 }], { timeoutMs: 5000 });
    const ids = await enqueueStopped(template, [
      { tokens_used: 1, simulate: { latency_ms: 400 } },
      { tokens_used: 2, simulate: { latency_ms: 3000 } },
      { tokens_used: 3, simulate: { latency_ms: 400 } },
    ]);
    await start();
    await settled(ids[1]!, ["running"], 3000);
    const r = await call("POST", `/api/execution/${ids[1]}/cancel`, { token: KEYS.acme });
    expect(r.status).toBe(200);
    expect(r.body.request.status).toBe("cancelled");
    const [a, b, c] = await Promise.all(ids.map((id) => settled(id, ["completed", "failed", "cancelled"], 8000)));
    expect(a).toMatchObject({ status: "completed", actual_nano: 1000 });
    expect(b.status).toBe("cancelled");
    expect(c).toMatchObject({ status: "completed", actual_nano: 3000 });
    expect(await available(pool.id)).toBe(1000 - 4);
    // The cancelled request's late answer changes nothing.
    await sleep(3000);
    expect((await requestOf(ids[1]!)).status).toBe("cancelled");
    expect(await available(pool.id)).toBe(1000 - 4);
  });

  it("a worker without runMany gets one call per request, and is remembered as such", async () => {
    const pool = await makePool({ capacity: 100 });
    const template = await makeTemplate([{ pool: pool.id, amount: 5 }], { binding: "NOTIFIER" });
    await runInDurableObject(scheduler(), (instance: SchedulerObject) => (instance as unknown as { calls: { callEach: Map<string, number> } }).calls.callEach.clear());
    const before = Date.now();
    const ids = await enqueueStopped(template, Array.from({ length: 6 }, () => ({ to: ["a@example.com"] })));
    await start();
    const done = await Promise.all(ids.map((id) => settled(id, ["completed"], 8000)));
    for (const [i, r] of done.entries()) expect(r.result).toMatchObject({ transport: "http", request_id: ids[i] });
    expect(await available(pool.id)).toBe(100 - 6);
    const marks = await runInDurableObject(scheduler(), (instance: SchedulerObject) => new Map((instance as unknown as { calls: { callEach: Map<string, number> } }).calls.callEach));
    expect([...marks.keys()]).toEqual(["NOTIFIER"]);
    expect(marks.get("NOTIFIER")! - before).toBeGreaterThanOrEqual(10 * 60 * 1000);
  });
});

describe("runMany: one call carries at most 4 MiB of params", () => {
  it("70 requests of about 62 KB of params each go in two calls, 67 and 3, each within 4 MiB; all complete", async () => {
    const template = await makeTemplate([], { binding: "BAD_MANY", timeoutMs: 10_000 });
    // Printable ASCII without quote or backslash, drawn at random: gzip cannot make it smaller once
    // base64-encoded, so the params are stored as they are (compressed params would each go alone).
    const random = mulberry32(7);
    const CHARS = Array.from({ length: 0x7f - 0x23 }, (_, k) => String.fromCharCode(0x23 + k)).filter((c) => c !== "\\").join("");
    const pad = () => Array.from({ length: 62_000 }, () => CHARS[Math.floor(random() * CHARS.length)]).join("");
    const ids = await enqueueStopped(template, Array.from({ length: 70 }, (_, i) => ({ mode: "sizes", i, pad: pad() })), { max_attempts: 1 });
    await start();
    const done = await Promise.all(ids.map((id) => settled(id, ["completed", "failed"], 20_000)));
    expect(done.every((r) => r.status === "completed")).toBe(true);
    const perCall = new Map<number, { requests: number; chars: number }>();
    for (const r of done) perCall.set(r.result.group, { requests: (perCall.get(r.result.group)?.requests ?? 0) + 1, chars: r.result.params_chars });
    // Each params is {"mode":"sizes","i":N,"pad":"…"}: 62,031-62,032 characters; 67 of them fit in 4 MiB, 68 do not.
    expect([...perCall.keys()].sort((a, b) => a - b)).toEqual([3, 67]);
    expect(perCall.get(67)).toMatchObject({ requests: 67 });
    expect(perCall.get(3)).toMatchObject({ requests: 3 });
    for (const { chars } of perCall.values()) expect(chars).toBeLessThanOrEqual(4 * 1024 * 1024);
    expect(perCall.get(67)!.chars + 62_031).toBeGreaterThan(4 * 1024 * 1024);
  });
});

describe("runMany: a worker that breaks the protocol fails only the requests it left unanswered", () => {
  // test/support/fixtures/bad-many-worker.js, bound as BAD_MANY; one attempt each, so a failure is final.
  const cases = [
    { mode: "garbage", completed: 1, reason: /^worker failed: runMany ended without answering this request$/ },
    { mode: "short", completed: 1, reason: /^worker failed: runMany ended without answering this request$/ },
    { mode: "throws", completed: 1, reason: /^worker failed: .*broke after one answer/ },
    { mode: "reverse", completed: 4, reason: null },
  ] as const;
  for (const { mode, completed, reason } of cases) {
    it(`${mode}: ${completed} of 4 completed${reason ? ", the rest failed with the reason" : ""}; nothing stays held`, async () => {
      const pool = await makePool({ capacity: 100 });
      const template = await makeTemplate([{ pool: pool.id, amount: 5 }], { binding: "BAD_MANY", timeoutMs: 3000 });
      const ids = await enqueueStopped(template, Array.from({ length: 4 }, () => ({ mode })), { max_attempts: 1 });
      await start();
      const done = await Promise.all(ids.map((id) => settled(id, ["completed", "failed"], 8000)));
      expect(done.filter((r) => r.status === "completed")).toHaveLength(completed);
      for (const r of done.filter((d) => d.status === "failed")) expect(r.error).toMatch(reason!);
      if (completed > 0) expect(done[0]).toMatchObject({ status: "completed", result: { transport: "bad-many", request_id: ids[0] } });
      // The worker reports no usage: a completed request is charged what it reserved, a failed one nothing.
      expect(await available(pool.id)).toBe(100 - 5 * completed);
    });
  }
});
