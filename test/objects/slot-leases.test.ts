import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { SLOT_LEASE } from "../../src/domain/leases";
import type { ResolvedQuota } from "../../src/domain/quota";
import { SlotLeases, type SlotClaim } from "../../src/objects/scheduler/slot-leases";
import { ADMIN, call, captureLog, enqueueHeld, eventually, makeClient, makeTemplate, makePool, settled, sleep } from "../support/helpers";

/**
 * Job slots lent to scheduler shards by client objects (decision 007, "Slots";
 * src/objects/scheduler/slot-leases.ts, src/objects/client/jobs.ts lend): a shard admitting a client's
 * requests often takes their slots from its block of the client's concurrency limit, in memory, with
 * no job row each. These tests drive both sides against real client objects.
 */

const clientObject = (id: string) => env.CLIENT.get(env.CLIENT.idFromName(id));
const quota = (over: Partial<ResolvedQuota> = {}): ResolvedQuota => ({ maxConcurrent: 1000, cpuMillicores: null, memoryMb: null, poolDaily: {}, ...over });
const ask = (holder: string, want: number, inUse = 0, until = Date.now() + 60_000) => ({ holder, want, inUse, until });
const claims = (n: number, prefix: string, leaseUntil = Date.now() + 20_000): SlotClaim[] => Array.from({ length: n }, (_, i) => ({ id: `${prefix}-${i}`, leaseUntil }));
const usage = async (id: string) => (await call("GET", `/admin/clients/${id}/quota`, { token: ADMIN })).body.usage as { active_jobs: number; running_requests: number; leased_slots: number };

/** A shard's slots with a block of the client's taken: a first chunk at the lending rate asks for it, the next gets it. */
async function withBlock(shard: string, clientId: string, q = quota()): Promise<SlotLeases> {
  const slots = new SlotLeases(env, shard);
  expect(slots.take(clientId, q, claims(SLOT_LEASE.MIN_RATE, "warm"), Date.now(), true).size).toBe(0);
  await eventually(async () => slots.held().size > 0 || null, 5000, "the client lent the shard a block");
  return slots;
}

describe("a client's object lends a shard a block of its slots", () => {
  it("from plenty only: the client keeps four times the block free, and 256 slots; the size is set, not added to", async () => {
    const { id } = await makeClient("slots");
    const stub = clientObject(id);
    // 1,000 slots: at most a quarter lent.
    expect(await stub.leaseSlots(quota(), ask("shard-a:1", 400))).toBe(250);
    expect(await usage(id)).toMatchObject({ active_jobs: 250, running_requests: 0, leased_slots: 250 });
    // The same holder asking again sets its block's size (an exchange made again takes nothing more).
    expect(await stub.leaseSlots(quota(), ask("shard-a:1", 100))).toBe(100);
    expect(await stub.leaseSlots(quota(), ask("shard-a:1", 100))).toBe(100);
    expect(await usage(id)).toMatchObject({ active_jobs: 100, leased_slots: 100 });
    // A second holder is lent from what is left: 900 free, a quarter of it.
    expect(await stub.leaseSlots(quota(), ask("shard-b:1", 900))).toBe(225);
    // A small limit lends nothing (256 must stay free), and neither does a client with a daily cap per pool;
    // but a block is never set below what its holder has in use.
    expect(await stub.leaseSlots(quota({ maxConcurrent: 300 }), ask("shard-c:1", 10))).toBe(0);
    expect(await stub.leaseSlots(quota({ poolDaily: { "openai-gpt4": 10 } }), ask("shard-a:1", 100, 40))).toBe(40);
    expect(await usage(id)).toMatchObject({ active_jobs: 265, leased_slots: 265 });
    // Handed back: the rows go, the slots are free again.
    expect(await stub.leaseSlots(quota(), ask("shard-a:1", 0))).toBe(0);
    expect(await stub.leaseSlots(quota(), ask("shard-b:1", 0))).toBe(0);
    expect(await usage(id)).toMatchObject({ active_jobs: 0, leased_slots: 0 });
  });

  it("a block counts against the limit exactly: beside a block of 250, 750 jobs of their own are admitted and the next is refused", async () => {
    const { id } = await makeClient("slots-exact");
    const stub = clientObject(id);
    expect(await stub.leaseSlots(quota(), ask("shard-a:1", 250))).toBe(250);
    const jobs = Array.from({ length: 751 }, (_, i) => ({ jobId: `r${i}`, kind: "request" as const, expiresAt: Date.now() + 60_000 }));
    const decisions = await stub.acquireJobs(quota(), jobs);
    expect(decisions.filter((d) => d.ok)).toHaveLength(750);
    expect(decisions[750]).toEqual({ ok: false, shortfall: { limit: "concurrent", limit_value: 1000, in_use: 1000, requested: 1, shortfall: 1 } });
    expect(await usage(id)).toMatchObject({ active_jobs: 1000, running_requests: 750, leased_slots: 250 });
    // At its limit the client has no plenty: a block asked to grow shrinks to what its holder uses,
    // and the slots it gave back go to the client's other work.
    expect(await stub.leaseSlots(quota(), ask("shard-a:1", 500, 10))).toBe(10);
    expect(await usage(id)).toMatchObject({ active_jobs: 760, leased_slots: 10 });
    expect((await stub.acquireJobs(quota(), [{ jobId: "r750", kind: "request", expiresAt: Date.now() + 60_000 }]))[0]).toEqual({ ok: true });
  });

  it("a block whose holder is gone ends on its own at the end its last exchange set", async () => {
    const { id } = await makeClient("slots-lapse");
    const stub = clientObject(id);
    expect(await stub.leaseSlots(quota(), ask("shard-dead:1", 100, 0, Date.now() + 200))).toBe(100);
    expect(await usage(id)).toMatchObject({ leased_slots: 100 });
    await sleep(300);
    expect(await usage(id)).toMatchObject({ active_jobs: 0, leased_slots: 0 });
  });
});

describe("a shard's block of a client's slots", () => {
  afterEach(() => vi.restoreAllMocks());

  it("requests take slots from the block with no call; their slots come back to it; the free ones go back to the client", async () => {
    const { id } = await makeClient("shard-slots");
    // Below the lending rate, or with nothing left queued, no block is asked for: each request takes a job row.
    const quiet = new SlotLeases(env, "scheduler-quiet");
    expect(quiet.take(id, quota(), claims(5, "q"), Date.now(), true).size).toBe(0);
    expect(quiet.take(id, quota(), claims(SLOT_LEASE.MIN_RATE, "k"), Date.now(), false).size).toBe(0);
    // Nor for a client with a daily cap per pool (a block holds no units).
    expect(quiet.take(id, quota({ poolDaily: { "openai-gpt4": 5 } }), claims(SLOT_LEASE.MIN_RATE, "d"), Date.now(), true).size).toBe(0);
    await sleep(100);
    expect(quiet.held()).toEqual({ size: 0, inUse: 0 });
    expect(await usage(id)).toMatchObject({ active_jobs: 0 });

    const slots = await withBlock("scheduler-a", id);
    const lent = slots.held().size;
    // Asked for two chunks of the rate (400), lent within plenty: a quarter of 1,000.
    expect(lent).toBe(250);
    expect(await usage(id)).toMatchObject({ active_jobs: lent, leased_slots: lent });

    const got = slots.take(id, quota(), claims(3, "a"), Date.now(), true);
    expect([...got]).toEqual(["a-0", "a-1", "a-2"]);
    expect(slots.held()).toEqual({ size: lent, inUse: 3 });
    // A request whose lease would outlive the block takes a job row of its own.
    expect(slots.take(id, quota(), claims(1, "long", Date.now() + SLOT_LEASE.TTL_MS + 60_000), Date.now(), true).size).toBe(0);
    // Released (settled, sent back, cancelled or its lease ended): once only.
    slots.release("a-0");
    slots.release("a-0");
    slots.release("not-taken");
    expect(slots.held()).toEqual({ size: lent, inUse: 2 });
    // The queue is empty: the free slots go back, the block keeps what is in use.
    await slots.handBackFree();
    expect(slots.held()).toEqual({ size: 2, inUse: 2 });
    expect(await usage(id)).toMatchObject({ active_jobs: 2, leased_slots: 2 });
    slots.release("a-1");
    slots.release("a-2");
    await slots.handBackFree();
    expect(slots.held()).toEqual({ size: 0, inUse: 0 });
    expect(await usage(id)).toMatchObject({ active_jobs: 0, leased_slots: 0 });
  });

  it("a slot whose request's lease ended long ago (missed by every release) is back in the block within a renewal", async () => {
    const { id } = await makeClient("shard-slots-stale");
    const slots = await withBlock("scheduler-stale", id);
    const got = slots.take(id, quota(), [{ id: "gone", leaseUntil: Date.now() - 10_000 }, { id: "live", leaseUntil: Date.now() + 20_000 }], Date.now(), true);
    expect(got.size).toBe(2);
    expect(slots.held().inUse).toBe(2);
    await eventually(async () => slots.held().inUse === 1 || null, 3000, "the stale slot came back");
    slots.release("live");
    await slots.handBackFree();
    expect(await usage(id)).toMatchObject({ active_jobs: 0 });
  });

  it("a client that lends nothing (no plenty) is asked again no sooner than a second later, however many chunks come", async () => {
    const { id } = await makeClient("shard-slots-none");
    let asked = 0;
    const counting = { ...env, CLIENT: { idFromName: (n: string) => env.CLIENT.idFromName(n), get: () => ({ leaseSlots: async () => { asked += 1; return 0; } }) } } as unknown as Env;
    const slots = new SlotLeases(counting, "scheduler-none");
    const small = quota({ maxConcurrent: 300 });
    expect(slots.take(id, small, claims(SLOT_LEASE.MIN_RATE, "a"), Date.now(), true).size).toBe(0);
    await eventually(async () => asked === 1 || null, 2000, "the first ask");
    await sleep(20);
    for (let i = 0; i < 5; i++) expect(slots.take(id, small, claims(50, `b${i}`), Date.now(), true).size).toBe(0);
    await sleep(50);
    expect(asked).toBe(1);
    await sleep(SLOT_LEASE.RENEW_MS);
    slots.take(id, small, claims(SLOT_LEASE.MIN_RATE, "c"), Date.now(), true);
    await eventually(async () => asked === 2 || null, 2000, "asked again after the pause");
    expect(slots.held()).toEqual({ size: 0, inUse: 0 });
  });

  it("a full block serves no more requests: the rest take job rows, and the block grows while the rate lasts", async () => {
    const { id } = await makeClient("shard-slots-full");
    const big = quota({ maxConcurrent: 4000 });
    const slots = await withBlock("scheduler-b", id, big);
    const lent = slots.held().size;
    expect(lent).toBe(2 * SLOT_LEASE.MIN_RATE);
    const first = slots.take(id, big, claims(lent + 50, "f"), Date.now(), true);
    expect(first.size).toBe(lent);
    // The 50 it could not serve asked it to grow (in the background) for two chunks like this one, within plenty: a quarter of 4,000.
    await eventually(async () => slots.held().size > lent || null, 5000, "the block grew");
    expect(slots.held()).toEqual({ size: 1000, inUse: lent });
    expect(await usage(id)).toMatchObject({ active_jobs: 1000, leased_slots: 1000 });
    for (const c of first) slots.release(c);
    await slots.handBackFree();
    expect(await usage(id)).toMatchObject({ active_jobs: 0 });
  });

  it("an exchange whose answer is lost leaves the block no bigger than its use then, and logs it; nothing is taken while one is in flight", async () => {
    const { id } = await makeClient("shard-slots-fail");
    const slots = await withBlock("scheduler-c", id);
    const got = slots.take(id, quota(), claims(10, "x"), Date.now(), true);
    expect(got.size).toBe(10);
    const lines = captureLog();
    // The client's object cannot be reached: its stub throws.
    let answer!: () => void;
    const gate = new Promise<void>((resolve) => (answer = resolve));
    const failing = { ...env, CLIENT: { ...env.CLIENT, idFromName: (n: string) => env.CLIENT.idFromName(n), get: () => ({ leaseSlots: async () => { await gate; throw new Error("client object unreachable"); } }) } } as unknown as Env;
    (slots as unknown as { env: Env }).env = failing;
    const handing = slots.handBackFree();
    // In flight: no slot is taken from the block (the use it reported must stay an upper bound).
    expect(slots.take(id, quota(), claims(5, "y"), Date.now(), true).size).toBe(0);
    answer();
    await handing.catch(() => undefined);
    expect(slots.held()).toEqual({ size: 10, inUse: 10 });
    expect(lines.filter((l) => l.msg === "slot_lease_failed")).toHaveLength(1);
    // Reachable again: the next exchange sets the size at the client.
    (slots as unknown as { env: Env }).env = env;
    for (const c of got) slots.release(c);
    await slots.handBackFree();
    expect(await usage(id)).toMatchObject({ active_jobs: 0 });
  });
});

describe("a drain on a block of slots", () => {
  it("a client limited to 1,000 never runs more than 1,000 at once while 1,300 drain on a block and job rows; it reaches 1,000; everything completes once; the block goes back", async () => {
    const pool = await makePool({ capacity: 1_000_000, refillPerSec: 0 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    const client = await makeClient("slots-drain");
    expect((await call("PUT", `/admin/clients/${client.id}/quota`, { token: ADMIN, json: { max_concurrent: 1000, cpu_millicores: null, memory_mb: null } })).status).toBe(200);
    expect((await call("POST", "/admin/scheduler/stop", { token: ADMIN })).status).toBe(200);
    // Each call held 3 s by the sample worker: the first 1,000 are all running before the first ends.
    const ids = await enqueueHeld(template, client.key, 1300, 3000);
    expect((await call("POST", "/admin/scheduler/start", { token: ADMIN })).status).toBe(200);
    let peakRunning = 0;
    let peakJobs = 0;
    let peakLeased = 0;
    await eventually(async () => {
      const [u, status] = await Promise.all([usage(client.id), call("GET", "/api/queue/status", { token: client.key })]);
      const { scheduler } = status.body as { scheduler: { queued: number; in_flight: number } };
      peakRunning = Math.max(peakRunning, scheduler.in_flight);
      peakJobs = Math.max(peakJobs, u.active_jobs);
      peakLeased = Math.max(peakLeased, u.leased_slots);
      return scheduler.queued + scheduler.in_flight === 0 || null;
    }, 40_000, "the backlog drained");
    // The limit was reached and never passed, part of it on a block (lent from plenty: at most a quarter).
    expect(peakRunning).toBe(1000);
    expect(peakJobs).toBe(1000);
    expect(peakLeased).toBeGreaterThan(0);
    expect(peakLeased).toBeLessThanOrEqual(250);
    // Each ran once: one unit of the pool each, 1,300 in all, and a sample of them completed at their first attempt.
    const views = await Promise.all(ids.filter((_, i) => i % 13 === 0).map((id) => settled(id, ["completed"], 10_000, client.key)));
    expect(views.every((v) => v.status === "completed" && v.attempts === 1)).toBe(true);
    await eventually(async () => ((await usage(client.id)).active_jobs === 0 ? true : null), 10_000, "the block went back");
    expect(await usage(client.id)).toMatchObject({ active_jobs: 0, running_requests: 0, leased_slots: 0, pools_today: [{ pool: pool.id, used: 1300 }] });
  }, 60_000);
});
