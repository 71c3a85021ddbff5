// Runs in the "resource-manager-shards" project: SCHEDULER_SHARDS = 4 (vitest.config.ts).
import { abortAllDurableObjects, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { ownerShard, shardIndexOf, shardStub } from "../../src/objects/scheduler/shards";
import type { NewRequest } from "../../src/objects/scheduler/types";
import { clearConfigCache, poolConfigs, templateConfigs } from "../../src/storage/config";
import { enqueueMany } from "../../src/services/requests";
import { clearShardSpan, getRequestView, passAll, purgeFinished, retireEmptyShards, setRunning, shardSpan } from "../../src/services/scheduler";
import { listUsageEvents } from "../../src/storage/usage";
import { ADMIN, call, captureLog, enqueue, enqueueHeld, eventually, KEYS, makePool, makeTemplate, readyToExecute, sleep, STORED_REQUESTS } from "../support/helpers";

const CLIENTS = [["acme", KEYS.acme], ["globex", KEYS.globex], ["initech", KEYS.initech], ["hooli", KEYS.hooli]] as const;
const start = () => call("POST", "/admin/scheduler/start", { token: ADMIN });
const stop = () => call("POST", "/admin/scheduler/stop", { token: ADMIN });

/** Every request row of a template in one shard, with the shard's index. */
async function rowsIn(shard: number, template: string): Promise<Array<{ id: string; client_id: string; status: string; attempts: number; dispatch_seq: number | null; shard: number }>> {
  return runInDurableObject(shardStub(env, shard), (_i: SchedulerObject, state) =>
    state.storage.sql.exec(`SELECT id, client_id, status, attempts, dispatch_seq FROM ${STORED_REQUESTS} WHERE template = ?`, template).toArray().map((r) => ({ ...(r as object), shard })) as never);
}

async function allRows(template: string, shards = 4) {
  return (await Promise.all(Array.from({ length: shards }, (_, k) => rowsIn(k, template)))).flat();
}

describe("scheduler shards (SCHEDULER_SHARDS = 4)", () => {
  it("the suite runs this file with four shards, and clients are spread by a stable hash", () => {
    expect(env.SCHEDULER_SHARDS).toBe("4");
    expect(CLIENTS.map(([c]) => ownerShard(env, c))).toEqual([3, 2, 1, 2]);
    expect(shardIndexOf("acme", 1)).toBe(0);
    expect(shardIndexOf("acme", 4)).toBe(shardIndexOf("acme", 4));
  });

  it("each client's requests are held by its owner shard; status sums every shard; reads find a request wherever it is held", async () => {
    expect((await stop()).body).toMatchObject({ running: false, shards: 4, max_in_flight: 4 * 10_240 });
    const pool = await makePool({ capacity: 1000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    const ids = new Map<string, string>();
    for (const [client, key] of CLIENTS) {
      const r = await enqueue({ template, queue: "fast" }, key);
      expect(r.status).toBe(202);
      ids.set(client, r.body.request.id);
    }
    const rows = await allRows(template);
    expect(rows.map((r) => [r.client_id, r.shard]).sort()).toEqual([["acme", 3], ["globex", 2], ["hooli", 2], ["initech", 1]]);
    const status = (await call("GET", "/api/queue/status", { token: ADMIN })).body;
    expect(status.queues.find((q: { queue: string }) => q.queue === "fast").depth).toBe(4);
    expect(status.scheduler).toMatchObject({ queued: 4, shards: 4, running: false });
    // An admin reads and cancels by id without knowing the client: every shard is asked.
    const hooli = ids.get("hooli")!;
    expect((await call("GET", `/api/execution/${hooli}`, { token: ADMIN })).body.request).toMatchObject({ id: hooli, client_id: "hooli", status: "queued" });
    // Its position is in its shard's order: behind globex's (premium) request, which shard 2 also holds.
    expect((await call("GET", `/api/queue/position/${hooli}`, { token: KEYS.hooli })).body).toMatchObject({ id: hooli, position: 2, queued_total: 2 });
    // Another client's request is not found from its key, whichever shard holds it.
    expect((await call("GET", `/api/execution/${hooli}`, { token: KEYS.acme })).status).toBe(404);
    expect((await call("DELETE", `/api/queue/${hooli}`, { token: ADMIN })).body.request.status).toBe("cancelled");
    expect((await start()).body).toMatchObject({ running: true, shards: 4 });
    await eventually(async () => (await allRows(template)).filter((r) => r.status === "completed").length === 3, 8000, "the other three to complete");
    const metrics = await call("GET", "/metrics", { token: ADMIN });
    expect(metrics.status).toBe(200);
    // Metrics sum the shards' counters: three dispatches of this template, in three shards.
    expect(String(metrics.body)).toContain(`rm_scheduler_dispatches_total{template="${template}"} 3`);
  });

  it("a pool short of units keeps them for the best waiting request of any shard: higher class first, then least weighted service", async () => {
    const pool = await makePool({ capacity: 1, refillPerSec: 0 });
    const cfg = { ...pool };
    type Answer = { ok: boolean; value?: { reservationId: string }; error?: unknown };
    const pools = (id: string) => env.POOL.get(env.POOL.idFromName(id)) as unknown as { reserveMany(c: unknown, items: unknown[]): Promise<Answer[]>; releaseMany(c: unknown, items: unknown[]): Promise<Answer[]> };
    const stub = pools(pool.id);
    const item = (clientId: string, shard: string, priority: number, weight = 1) => ({
      caller: { clientId, tier: "basic" as const, via: "scheduler" }, amount: 1, ttlMs: 60_000, requestId: null, wait: { clientId, shard, priority, weight },
    });
    const [first] = await stub.reserveMany(cfg, [item("acme", "scheduler-3", 45)]);
    expect(first!.ok).toBe(true);
    // hooli (shard 2) is starved (class > 100): refused for lack of units, it now waits.
    const [starved] = await stub.reserveMany(cfg, [item("hooli", "scheduler-2", 118)]);
    expect(starved).toMatchObject({ ok: false, error: { code: "rate_limited", details: { available: 0 } } });
    // The unit comes back; acme (another shard, lower class) asks first but is held back for hooli.
    await stub.releaseMany(cfg, [{ caller: { clientId: "acme", tier: "basic", via: "scheduler" }, reservationId: first!.value!.reservationId, actualUsed: 0 }]);
    const [held] = await stub.reserveMany(cfg, [item("acme", "scheduler-3", 45)]);
    expect(held).toMatchObject({ ok: false, error: { code: "rate_limited", details: { available: 1, held_for: { shard: "scheduler-2", priority: 118 } } } });
    const [granted] = await stub.reserveMany(cfg, [item("hooli", "scheduler-2", 118)]);
    expect(granted!.ok).toBe(true);
    // A reservation made outside the queue (no wait claim) is neither held back nor recorded.
    const direct = await makePool({ capacity: 2, refillPerSec: 0 });
    const d = pools(direct.id);
    await d.reserveMany(direct, [item("acme", "scheduler-3", 10), item("acme", "scheduler-3", 10)]);
    expect((await d.reserveMany(direct, [item("globex", "scheduler-1", 90)]))[0]!.ok).toBe(false);
    expect((await d.reserveMany(direct, [{ ...item("acme", "x", 0), wait: undefined }]))[0]).toMatchObject({ ok: false, error: { details: { available: 0 } } });
  });

  it("weighted fairness across shards: three clients of weights 1, 2, 3 on three shards share a scarce pool's grants within 5%", async () => {
    const clients = ["wfq-a", "wfq-b", "wfq-c"];
    const weights = [1, 2, 3];
    expect(clients.map((c) => ownerShard(env, c))).toEqual([1, 0, 3]);
    await env.DB.batch(clients.map((id) => env.DB.prepare(
      "INSERT INTO clients (id, name, email, tier, monthly_budget_nano, status, created_at, updated_at) VALUES (?1, ?1, 'w@example.com', 'premium', NULL, 'active', 0, 0)",
    ).bind(id)));
    clearConfigCache();
    for (const [i, id] of clients.entries()) {
      const r = await call("PUT", `/admin/clients/${id}/quota`, { token: ADMIN, json: { max_concurrent: 1000, cpu_millicores: null, memory_mb: null, weight: weights[i] } });
      expect(r.status).toBe(200);
    }
    // One unit at a time, 200 a second: every grant is a contest between the three shards.
    const pool = await makePool({ capacity: 1, refillPerSec: 200 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    await stop();
    const perClient = 200;
    await Promise.all(clients.map((clientId) => shardStub(env, ownerShard(env, clientId)).enqueue(Array.from({ length: perClient }, (): NewRequest => ({
      clientId, tier: "premium", maxConcurrent: 1000, template, params: { simulate: { latency_ms: 0 } }, queue: "normal", idempotencyKey: null,
      notBefore: null, maxAttempts: 1, estimateNano: 0, estimate: [],
    })))));
    await start();
    await eventually(async () => (await allRows(template)).every((r) => r.status === "completed"), 60_000, "all 600 to complete");
    // The pool's grant order: its reservation ids are time-ordered ids made by the one pool object.
    const grants = await runInDurableObject(env.POOL.get(env.POOL.idFromName(pool.id)), (_i, state) =>
      state.storage.sql.exec("SELECT client_id FROM reservations ORDER BY id").toArray().map((r) => String(r.client_id)));
    expect(grants).toHaveLength(600);
    // 300: well inside the backlog; 390: just before the heaviest client runs out (its 200 at 50%).
    for (const n of [300, 390]) {
      const head = grants.slice(0, n);
      const shares = clients.map((c) => head.filter((g) => g === c).length / n);
      shares.forEach((s, i) => expect(Math.abs(s - weights[i]! / 6) / (weights[i]! / 6), `first ${n}: shares ${shares}`).toBeLessThan(0.05));
    }
  }, 90_000);

  it("a shard killed mid-pass loses nothing: a chunk it claimed and admitted but never started is queued again at restart and runs once; other shards' work runs once", async () => {
    await stop();
    const pool = await makePool({ capacity: 100 });
    // A timeout short enough that the orphaned reservations below expire within the test, long enough
    // that a worker call on a loaded machine does not time out (300 ms did, under three busy loops: a retry).
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }], { timeoutMs: 2000 });
    const ids: Array<[string, string]> = [];
    for (const [, key] of CLIENTS) for (let i = 0; i < 5; i++) ids.push([(await enqueue({ template, queue: "fast", params: { tokens_used: 1 } }, key)).body.request.id, key]);
    const acme = ids.slice(0, 5).map(([id]) => id);
    // acme's shard (3) claims its five requests and admits them (a client slot each, a pool reservation
    // each), then every object dies before they start.
    const admitted = await runInDurableObject(shardStub(env, 3), async (instance: SchedulerObject) => {
      const parts = instance as unknown as {
        admission: {
          claim(items: Array<{ id: string; template: unknown }>, now: number): unknown[];
          admit(rows: unknown[], templates: unknown, pools: unknown, blockedPools: Set<string>, fullClients: Set<string>): Promise<{ rows: unknown[] }>;
        };
      };
      const [templates, pools] = await Promise.all([templateConfigs(env), poolConfigs(env)]);
      const rows = parts.admission.claim(acme.map((id) => ({ id, template: templates.get(template) })), Date.now());
      return (await parts.admission.admit(rows, templates, pools, new Set(), new Set())).rows.length;
    });
    expect(admitted).toBe(5);
    const poolCfg = (await poolConfigs(env)).get(pool.id)!;
    expect((await env.POOL.get(env.POOL.idFromName(pool.id)).availability(poolCfg, null)).reserved).toBe(5);
    await abortAllDurableObjects();
    // The claim was never written: after the restart the five are queued, and run at the next pass.
    for (const id of acme) expect((await call("GET", `/api/execution/${id}`, { token: KEYS.acme })).body.request.status).toBe("queued");
    await start();
    await passAll(env, "test");
    const done = await eventually(async () => {
      const views = await Promise.all(ids.map(async ([id, key]) => (await call("GET", `/api/execution/${id}`, { token: key })).body.request));
      return views.every((v) => v.status === "completed") ? views : null;
    }, 10_000, "all 20 to complete");
    expect(done.map((v) => v.attempts)).toEqual(ids.map(() => 1));
    await env.POOL.get(env.POOL.idFromName(pool.id)).flush();
    const events = await listUsageEvents(env.DB, { poolId: pool.id });
    expect(events.map((e) => e.request_id).sort()).toEqual(ids.map(([id]) => id).sort());
    // The first admission's reservations were never used: they expire (lease: timeout + margin) and give their units back.
    await eventually(async () => ((await env.POOL.get(env.POOL.idFromName(pool.id)).availability(poolCfg, null)).reserved === 0 ? true : null), 10_000, "the orphaned reservations to expire");
    expect((await env.POOL.get(env.POOL.idFromName(pool.id)).availability(poolCfg, null)).available).toBe(100 - 20);
  });

  it("a shard woken with no name (as an alarm wakes an object not in memory) knows which shard it is: it returns its client's money hold under its own name", async () => {
    await stop();
    const template = await makeTemplate([{ pool: (await makePool({ capacity: 100 })).id, amount: 1 }]);
    const ids: string[] = [];
    // acme's shard (3) admits these on a hold lent by acme's object (decision 008), returned 1 s after the last
    // enqueue (SHARD_MONEY.IDLE_MS) by a timer; every object dies first.
    for (let i = 0; i < 3; i++) ids.push((await enqueue({ template, queue: "normal", params: { tokens_used: 1 } }, KEYS.acme)).body.request.id);
    await abortAllDurableObjects();
    const acme = () => env.CLIENT.get(env.CLIENT.idFromName("acme"));
    const holds = () => runInDurableObject(acme(), (_i, state) => state.storage.sql.exec<{ id: string }>("SELECT id FROM money_holds").toArray().map((r) => r.id));
    expect(await holds()).toEqual(["shard:scheduler-3"]);
    // workerd names no object an alarm wakes cold (cloudflare/partykit#391); nor one reached by its id's string.
    const nameless = env.SCHEDULER.get(env.SCHEDULER.idFromString(shardStub(env, 3).id.toString()));
    expect(await runInDurableObject(nameless, (_i, state) => state.id.name ?? null)).toBeNull();
    // Its first wake converts the three requests and returns the hold under its own name (before: as "scheduler", leaving
    // shard 3's hold in flight for SHARD_MONEY.HOLD_MS, an hour).
    await eventually(async () => (await holds()).length === 0 || null, 10_000, "acme's hold returned").catch(async (err) => {
      throw new Error(`${err}: ${JSON.stringify(await holds())}`);
    });
    const flying = await runInDurableObject(acme(), (_i, state) => state.storage.sql.exec<{ request_id: string }>("SELECT request_id FROM in_flight").toArray().map((r) => r.request_id));
    expect(flying.sort()).toEqual([...ids].sort());
    expect((await start()).status).toBe(200);
    await passAll(env, "test");
    await eventually(async () => (await rowsIn(3, template)).every((r) => r.status === "completed" && r.attempts === 1) || null, 10_000, "the three to run once");
    await eventually(async () => (await acme().budget({ limitNano: null, source: "unlimited" })).in_flight_nano === 0 || null, 10_000, "acme out of flight");
  });

  it("changing the shard count while work is queued loses nothing and runs nothing twice; emptied shards are then retired", async () => {
    await stop();
    const pool = await makePool({ capacity: 10_000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    const four: string[] = [];
    for (const [, key] of CLIENTS) {
      const r = await enqueue({ requests: Array.from({ length: 25 }, (_, i) => ({ template, queue: "normal", params: { tokens_used: 1 }, ...(i === 0 ? { idempotency_key: `reshard-${key}` } : {}) })) }, key);
      four.push(...r.body.results.map((x: { request: { id: string } }) => x.request.id));
      // Single enqueues too: their money admitted on the old owner's hold (decision 008), converted there before they run.
      for (let i = 0; i < 3; i++) four.push((await enqueue({ template, queue: "normal", params: { tokens_used: 1 } }, key)).body.request.id);
    }
    // Now two shards: new work goes to the new owners; the old shards keep (and finish) what they hold.
    const two = { ...env, SCHEDULER_SHARDS: "2" } as Env;
    clearShardSpan();
    expect(await shardSpan(two)).toBe(4);
    const callers = [["acme", "enterprise"], ["globex", "premium"], ["initech", "standard"], ["hooli", "basic"]] as const;
    const after: string[] = [];
    for (const [clientId, tier] of callers) {
      const specs = Array.from({ length: 10 }, () => ({ template, queue: "normal" as const, params: { tokens_used: 1 } }));
      // The first request's key again: answered by the shard that holds it, not run a second time.
      const out = await enqueueMany(two, { clientId, tier, via: "api" }, [{ template, queue: "normal", params: { tokens_used: 1 }, idempotency_key: `reshard-${KEYS[clientId]}` }, ...specs]);
      expect(out[0]).toMatchObject({ ok: true, value: { duplicate: true } });
      expect(four).toContain((out[0] as { value: { request: { id: string } } }).value.request.id);
      after.push(...out.slice(1).map((o) => (o as { value: { request: { id: string } } }).value.request.id));
      // And one single enqueue on the new owner's hold.
      const [single] = await enqueueMany(two, { clientId, tier, via: "api" }, [{ template, queue: "normal", params: { tokens_used: 1 } }]);
      after.push((single as { value: { request: { id: string } } }).value.request.id);
    }
    // acme moved from shard 3 to shard 1 (and initech stayed on 1): its new work is there.
    expect((await rowsIn(1, template)).filter((r) => r.client_id === "acme")).toHaveLength(11);
    expect((await rowsIn(3, template)).filter((r) => r.client_id === "acme")).toHaveLength(28);
    expect(await setRunning(two, true)).toMatchObject({ running: true, shards: 4 });
    await passAll(two, "test");
    const ids = [...four, ...after];
    await eventually(async () => (await allRows(template)).filter((r) => r.status === "completed").length === ids.length, 20_000, "all 156 to complete").catch(async (err) => {
      const left = (await allRows(template)).filter((r) => r.status !== "completed");
      throw new Error(`${err}: left ${JSON.stringify(left.slice(0, 5))} of ${left.length}`);
    });
    const rows = await allRows(template);
    expect(rows).toHaveLength(156);
    // Nothing of theirs is in flight any more, on either side of the change (holds returned, requests settled). A
    // shard returns a client's hold IDLE_MS after its last enqueue there, by a timer; under the full suite's load
    // that took more than 5 s once. A hold not returned would stay for HOLD_MS (an hour).
    for (const [clientId] of callers) {
      await eventually(async () => (await env.CLIENT.get(env.CLIENT.idFromName(clientId)).budget({ limitNano: null, source: "unlimited" })).in_flight_nano === 0, 15_000, `${clientId} out of flight`).catch(async (err) => {
        const dump = await runInDurableObject(env.CLIENT.get(env.CLIENT.idFromName(clientId)), (_i, state) => ({
          holds: state.storage.sql.exec("SELECT * FROM money_holds").toArray(),
          flying: state.storage.sql.exec("SELECT * FROM in_flight").toArray(),
          now: Date.now(),
        }));
        throw new Error(`${err}: ${JSON.stringify(dump)}`);
      });
    }
    expect(rows.every((r) => r.attempts === 1)).toBe(true);
    for (const id of ids) expect((await getRequestView(two, id, null))?.status).toBe("completed");
    await env.POOL.get(env.POOL.idFromName(pool.id)).flush();
    const events = await listUsageEvents(env.DB, { poolId: pool.id });
    expect(events.map((e) => e.request_id).sort()).toEqual([...ids].sort());
    // Once the old shards hold nothing (their finished rows purged after delivery), reads stop asking them.
    await passAll(two, "flush");
    await purgeFinished(two, Date.now() + 1, 10_000);
    expect(await retireEmptyShards(two)).toBe(2);
    expect(await shardSpan(two)).toBe(2);
    clearShardSpan();
  }, 90_000);

  it("a shard alone with work takes the idle shards' part of the pacing budget: up to 512 young calls, where its own part is 128, in chunks of 256", async () => {
    const { template, client } = await readyToExecute("pace-alone", { capacity: 100_000 });
    expect((await call("PUT", `/admin/clients/${client.id}/quota`, { token: ADMIN, json: { max_concurrent: 2000, cpu_millicores: null, memory_mb: null } })).status).toBe(200);
    expect((await stop()).status).toBe(200);
    // Each job held 1.5 s: the calls a pass starts stay young (250 ms), so each pass launches what its budget leaves.
    const ids = await enqueueHeld(template, client.key, 1000, 1500);
    const lines = captureLog();
    expect((await start()).status).toBe(200);
    await eventually(async () => (await Promise.all([ids[0]!, ids[999]!].map((id) => getRequestView(env, id, null)))).every((v) => v?.status === "completed") || null, 30_000, "the backlog ran");
    vi.restoreAllMocks();
    const passes = lines.filter((l) => l.msg === "dispatch_pass" && l.trigger !== "execute").map((l) => ({ at: l.time as number, launched: l.launched as number }));
    // The calls started in the 200 ms up to each pass (every job runs 1.5 s: none has ended yet): all of
    // them were young (started within 250 ms) at that pass, whatever the few ms between a pass and its line.
    const young = passes.map((p) => passes.filter((q) => q.at <= p.at && q.at > p.at - 200).reduce((a, q) => a + q.launched, 0));
    // Over its own part (512 / 4) and over half the budget: all 512 when it alone has work, never more.
    expect(Math.max(...young), JSON.stringify(passes)).toBeGreaterThan(256);
    expect(Math.max(...young), JSON.stringify(passes)).toBeLessThanOrEqual(512);
    const launched = passes.map((p) => p.launched);
    expect(launched.reduce((a, b) => a + b, 0)).toBe(1000);
    // Each chunk (one launch line) at most 256: with several shards a chunk's task stays short.
    const chunks = lines.filter((l) => l.msg === "requests_dispatched").map((l) => l.count as number);
    expect(chunks.reduce((a, b) => a + b, 0)).toBe(1000);
    expect(Math.max(...chunks), JSON.stringify(chunks)).toBe(256);
  });
});
