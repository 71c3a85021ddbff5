// Decision 008: a single enqueue's money is admitted by its owner shard against a hold lent by the
// client's object (src/objects/scheduler/money-leases.ts), and becomes an ordinary request in flight (a
// row of the client's `in_flight`) before it can run. These tests read both objects' tables directly.
import { abortAllDurableObjects, createExecutionContext, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app";
import { ClientObject } from "../../src/objects/client";
import type { SchedulerObject } from "../../src/objects/scheduler";
import type { MoneyLeases } from "../../src/objects/scheduler/money-leases";
import { ADMIN, call, enqueue, eventually, expectError, makeClient, makePool, makeTemplate, requestOf, settled, shardOf, sleep, type Call } from "../support/helpers";

const start = () => call("POST", "/admin/scheduler/start", { token: ADMIN });
const stop = () => call("POST", "/admin/scheduler/stop", { token: ADMIN });
const current = async (clientId: string) => (await call("GET", `/api/usage/${clientId}/current`, { token: ADMIN })).body;
const setBudget = (clientId: string, nano: number) => call("PUT", `/admin/clients/${clientId}/budget`, { token: ADMIN, json: { monthly_budget_nano: nano } });
const clientStub = (clientId: string) => env.CLIENT.get(env.CLIENT.idFromName(clientId));

/** The client object's money as stored: its requests in flight (count, sum) and the shards' holds. */
function stored(clientId: string): Promise<{ rows: number; rowsNano: number; shardHolds: number }> {
  return runInDurableObject(clientStub(clientId), (_o, state) => {
    const r = state.storage.sql.exec<{ n: number; s: number }>("SELECT COUNT(*) AS n, COALESCE(SUM(estimate_nano), 0) AS s FROM in_flight").one();
    const h = state.storage.sql.exec<{ s: number }>("SELECT COALESCE(SUM(nano), 0) AS s FROM money_holds WHERE id LIKE 'shard:%'").one();
    return { rows: r.n, rowsNano: r.s, shardHolds: h.s };
  });
}

/** The owner shard's money lease of a client, as it keeps it (in memory). */
function leaseOf(clientId: string): Promise<ReturnType<MoneyLeases["state"]>> {
  return runInDurableObject(shardOf(clientId), (o: SchedulerObject) => (o as unknown as { money: MoneyLeases }).money.state(clientId));
}

/**
 * Wait for these requests to settle: each completed on its first attempt, and the client's spend
 * reached their actual cost. Returns that cost.
 */
async function settleAll(ids: string[], key: string, clientId: string): Promise<number> {
  const done = await Promise.all(ids.map((r) => settled(r, ["completed", "failed"], 10_000, key)));
  expect(done.map((d) => [d.status, d.attempts])).toEqual(ids.map(() => ["completed", 1]));
  const spent = done.reduce((sum, d) => sum + d.actual_nano, 0);
  await eventually(async () => (await current(clientId)).spent_nano === spent, 5000, "the spend");
  return spent;
}

/** The owner shard's side: requests admitted on its lease and not converted yet (in memory, and marked in its table). */
function shardSide(clientId: string): Promise<{ unconverted: number; marked: number }> {
  return runInDurableObject(shardOf(clientId), (o: SchedulerObject, state) => ({
    unconverted: (o as unknown as { money: MoneyLeases }).money.state(clientId).unconverted.length,
    marked: state.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM requests WHERE money_lease IS NOT NULL AND client_id = ?", clientId).one().n,
  }));
}

/** A fresh client with `budget`, a template whose estimate is `estimate` nano-dollars (10 units at estimate/10 each). */
/** Every one of the client's `n` requests is an in-flight row at its object: no shard holds money for it, none is unconverted. */
async function expectAllAtClient(clientId: string, n: number, estimate: number): Promise<void> {
  expect(await stored(clientId)).toEqual({ rows: n, rowsNano: n * estimate, shardHolds: 0 });
  expect(await shardSide(clientId)).toEqual({ unconverted: 0, marked: 0 });
}

async function setUp(prefix: string, estimate: number, budget: number): Promise<{ id: string; key: string; template: string }> {
  const pool = await makePool({ costPerUnitNano: estimate / 10, capacity: 1_000_000 });
  const template = await makeTemplate([{ pool: pool.id, amount: 10 }]);
  const client = await makeClient(prefix);
  expect((await setBudget(client.id, budget)).status).toBe(200);
  return { ...client, template };
}

describe("single enqueues on the owner shard's money lease (decision 008)", () => {
  afterEach(async () => {
    vi.restoreAllMocks();
    await start();
  });

  it("admits on the shard's hold, which counts in flight; a budget read converts the requests and ends the hold: in flight is then exactly their estimates", async () => {
    await stop();
    const est = 10_000;
    const { id, key, template } = await setUp("ml-view", est, 1_000 * est);
    const answers = await Promise.all(Array.from({ length: 12 }, () => enqueue({ template }, key)));
    expect(answers.map((r) => r.status)).toEqual(Array(12).fill(202));
    // Before any read: the shard holds money at the client, covering what it admitted and has not converted.
    const before = await stored(id);
    const side = await shardSide(id);
    expect(side.unconverted).toBe(side.marked);
    expect(side.unconverted).toBeGreaterThan(0);
    expect(before.rows + side.unconverted).toBe(12);
    expect(before.rowsNano).toBe(before.rows * est);
    expect(before.shardHolds).toBeGreaterThanOrEqual(side.unconverted * est);
    // The budget view first has the shard convert and return its hold.
    expect(await current(id)).toMatchObject({ in_flight_nano: 12 * est, spent_nano: 0, requests_by_status: { queued: 12 } });
    await expectAllAtClient(id, 12, est);
  });

  it("an idle shard converts and returns its hold on its own; the requests then run once, and spend and flight come out exact", async () => {
    await stop();
    const est = 10_000;
    const { id, key, template } = await setUp("ml-idle", est, 1_000 * est);
    const ids = (await Promise.all(Array.from({ length: 8 }, () => enqueue({ template }, key)))).map((r) => r.body.request.id as string);
    await eventually(async () => (await stored(id)).shardHolds === 0 && (await shardSide(id)).unconverted === 0, 5000, "the idle return");
    expect(await stored(id)).toEqual({ rows: 8, rowsNano: 8 * est, shardHolds: 0 });
    // A round later the shard forgets the client (it keeps nothing per client it no longer lends to).
    await eventually(async () => !(await leaseOf(id)).kept, 5000, "the entry forgotten");
    await start();
    const spent = await settleAll(ids, key, id);
    expect(spent).toBeGreaterThan(0);
    expect(await current(id)).toMatchObject({ in_flight_nano: 0, spent_nano: spent });
    expect(await stored(id)).toEqual({ rows: 0, rowsNano: 0, shardHolds: 0 });
  });

  it("requests are converted before they run: enqueued while the scheduler runs, each settles once and nothing stays in flight", async () => {
    await start();
    const est = 10_000;
    const { id, key, template } = await setUp("ml-run", est, 1_000 * est);
    const answers = await Promise.all(Array.from({ length: 30 }, () => enqueue({ template }, key)));
    expect(answers.every((r) => r.status === 202)).toBe(true);
    const spent = await settleAll(answers.map((r) => r.body.request.id), key, id);
    expect(await current(id)).toMatchObject({ in_flight_nano: 0, spent_nano: spent, requests_by_status: { completed: 30 } });
    expect(await shardSide(id)).toEqual({ unconverted: 0, marked: 0 });
  });

  it("a shard restarted with requests admitted on its lease converts them once; they run once and spend and flight come out exact", async () => {
    await stop();
    const est = 10_000;
    const { id, key, template } = await setUp("ml-restart", est, 1_000 * est);
    const ids = (await Promise.all(Array.from({ length: 10 }, () => enqueue({ template }, key)))).map((r) => r.body.request.id as string);
    const side = await shardSide(id);
    expect(side.marked).toBeGreaterThan(0);
    await abortAllDurableObjects();
    // The new life finds the marked requests and converts them (nothing counted twice: in flight is 10 estimates).
    await eventually(async () => (await shardSide(id)).marked === 0, 5000, "the restart's conversion");
    expect(await stored(id)).toEqual({ rows: 10, rowsNano: 10 * est, shardHolds: 0 });
    await start();
    const spent = await settleAll(ids, key, id);
    expect(await current(id)).toMatchObject({ in_flight_nano: 0, spent_nano: spent });
  });

  it("a shard restarted while its client's object holds money for it, with nothing left to convert, returns that hold at its first wake", async () => {
    await stop();
    const est = 10_000;
    const { id, key, template } = await setUp("ml-holder", est, 1_000 * est);
    const ids = (await Promise.all(Array.from({ length: 6 }, () => enqueue({ template }, key)))).map((r) => r.body.request.id as string);
    const failed = await runInDurableObject(shardOf(id), async (o: SchedulerObject) => {
      // In this life only: no idle return (it would end the hold a second after the last enqueue), and the
      // client counts as still enqueueing, so the conversion lends a new hold for the enqueues to come.
      const money = (o as unknown as {
        money: Pick<MoneyLeases, "convertFor"> & { timer: ReturnType<typeof setTimeout> | null; idleLater: (ms: number) => void; leases: Map<string, { lastAt: number }> };
      }).money;
      if (money.timer) clearTimeout(money.timer);
      money.timer = null;
      money.idleLater = () => undefined;
      money.leases.get(id)!.lastAt = Date.now();
      return (await money.convertFor(ids)).failed.size;
    });
    expect(failed).toBe(0);
    const holders = () => runInDurableObject(shardOf(id), (_o: SchedulerObject, state) => state.storage.sql.exec<{ client_id: string }>("SELECT client_id FROM money_holders").toArray().map((r) => r.client_id));
    expect(await shardSide(id)).toEqual({ unconverted: 0, marked: 0 });
    const held = await stored(id);
    expect(held).toMatchObject({ rows: 6, rowsNano: 6 * est });
    expect(held.shardHolds).toBeGreaterThan(0);
    expect(await holders()).toEqual([id]);
    await abortAllDurableObjects();
    // Its first wake (the cron wakes every shard each minute; here a read): the new life knows the client
    // may hold money for it and returns that (before: counted in flight for SHARD_MONEY.HOLD_MS, an
    // hour), then forgets the client.
    expect(await shardSide(id)).toEqual({ unconverted: 0, marked: 0 });
    await eventually(async () => (await stored(id)).shardHolds === 0, 5000, "the restarted shard's return");
    expect(await stored(id)).toEqual({ rows: 6, rowsNano: 6 * est, shardHolds: 0 });
    await eventually(async () => (await holders()).length === 0, 5000, "the holder forgotten");
  });

  it("a request cancelled before its conversion leaves flight with the hold: in flight is the others' estimates", async () => {
    await stop();
    const est = 10_000;
    const { id, key, template } = await setUp("ml-cancel", est, 1_000 * est);
    const ids = (await Promise.all(Array.from({ length: 3 }, () => enqueue({ template }, key)))).map((r) => r.body.request.id as string);
    expect((await call("DELETE", `/api/queue/${ids[1]}`, { token: key })).status).toBe(200);
    expect(await current(id)).toMatchObject({ in_flight_nano: 2 * est, requests_by_status: { queued: 2, cancelled: 1 } });
    expect(await stored(id)).toEqual({ rows: 2, rowsNano: 2 * est, shardHolds: 0 });
  });

  it("at the budget's edge a batch refused for money while the shard holds some gets it back: exactly the requests that fit are queued", async () => {
    await stop();
    const est = 10_000;
    const { id, key, template } = await setUp("ml-edge", est, 10 * est);
    const singles = await Promise.all(Array.from({ length: 3 }, () => enqueue({ template }, key)));
    expect(singles.map((r) => r.status)).toEqual([202, 202, 202]);
    const batch = await enqueue({ requests: Array.from({ length: 10 }, () => ({ template })) }, key);
    expect(batch.status).toBe(200);
    expect(batch.body).toMatchObject({ accepted: 7, rejected: 3 });
    for (const item of batch.body.results.slice(7)) {
      expect(item.error.code).toBe("budget_exceeded");
      expect(item.error.details).toMatchObject({ in_flight_nano: 10 * est, remaining_nano: 0, estimate_nano: est });
    }
    // And a single one more is refused by the shard's exchange with the same body.
    const more = await enqueue({ template }, key);
    expectError(more, 402, "budget_exceeded");
    expect(more.body.error.details).toMatchObject({ client_id: id, budget_nano: 10 * est, spent_nano: 0, in_flight_nano: 10 * est, remaining_nano: 0, estimate_nano: est });
    expect(await current(id)).toMatchObject({ in_flight_nano: 10 * est, requests_by_status: { queued: 10 } });
  });

  it("singles and batches sent together never admit more than fits, and in flight ends exactly the admitted estimates", async () => {
    await stop();
    const est = 10_000;
    const { id, key, template } = await setUp("ml-mixed", est, 25 * est);
    const calls: Array<Promise<Call>> = [];
    for (let i = 0; i < 30; i++) calls.push(enqueue({ template }, key));
    for (let i = 0; i < 3; i++) calls.push(enqueue({ requests: Array.from({ length: 5 }, () => ({ template })) }, key));
    const answers = await Promise.all(calls);
    const admitted = answers.reduce((n, r) => n + (r.status === 202 ? 1 : r.status === 200 ? r.body.accepted : 0), 0);
    const refused = answers.reduce((n, r) => n + (r.status === 402 ? 1 : r.status === 200 ? r.body.rejected : 0), 0);
    expect(admitted + refused).toBe(45);
    expect(admitted).toBeLessThanOrEqual(25);
    // The shard's hold is conservative only while it lasts: here, at least all but what one hold could keep.
    expect(admitted).toBeGreaterThanOrEqual(20);
    expect(await current(id)).toMatchObject({ in_flight_nano: admitted * est, requests_by_status: { queued: admitted } });
    expect(await stored(id)).toEqual({ rows: admitted, rowsNano: admitted * est, shardHolds: 0 });
  });

  it("a pass whose conversion fails queues the requests again; they run once when the client's object answers, and the money comes out exact", async () => {
    await stop();
    const est = 10_000;
    const { id, key, template } = await setUp("ml-fail", est, 1_000 * est);
    const ids = (await Promise.all(Array.from({ length: 4 }, () => enqueue({ template }, key)))).map((r) => r.body.request.id as string);
    // Those the enqueues' own exchanges did not convert yet (the first is admitted before any conversion).
    const pending = (await leaseOf(id)).unconverted;
    expect(pending.length).toBeGreaterThan(0);
    const lend = vi.spyOn(ClientObject.prototype, "lendShard").mockRejectedValue(new Error("Network connection lost."));
    await start();
    await eventually(async () => lend.mock.calls.length > 0, 5000, "a conversion tried");
    await sleep(300);
    // Nothing ran on money not yet in flight at the client.
    for (const r of pending) expect((await requestOf(r, key)).status).toBe("queued");
    vi.restoreAllMocks();
    const spent = await settleAll(ids, key, id);
    expect(await current(id)).toMatchObject({ in_flight_nano: 0, spent_nano: spent });
    expect(await stored(id)).toEqual({ rows: 0, rowsNano: 0, shardHolds: 0 });
  });

  it("keyed enqueues, batches, executes and clients with daily caps are admitted by the client's object (a row at once, nothing on the shard)", async () => {
    await stop();
    const est = 10_000;
    const { id, key, template } = await setUp("ml-paths", est, 1_000 * est);
    expect((await enqueue({ template, idempotency_key: "k-1" }, key)).status).toBe(202);
    expect((await enqueue({ requests: [{ template }, { template }] }, key)).status).toBe(200);
    expect((await call("POST", "/api/execute", { token: key, json: { template, queue: "fast" } })).status).toBe(202);
    await expectAllAtClient(id, 4, est);
    // Daily caps per pool: the client's object keeps the day's units, so each enqueue asks it.
    const pool = (await env.DB.prepare("SELECT requirements FROM templates WHERE id = ?").bind(template).first<{ requirements: string }>())!;
    const poolId = JSON.parse(pool.requirements)[0].pool as string;
    expect((await call("PUT", `/admin/clients/${id}/quota`, { token: ADMIN, json: { max_concurrent: null, cpu_millicores: null, memory_mb: null, pool_daily: { [poolId]: 1_000 } } })).status).toBe(200);
    expect((await enqueue({ template }, key)).status).toBe(202);
    await expectAllAtClient(id, 5, est);
  });

  it("ENQUEUE_MONEY_LEASES=off: a single enqueue is admitted by the client's object", async () => {
    await stop();
    const est = 10_000;
    const { id, key, template } = await setUp("ml-off", est, 1_000 * est);
    const app = createApp();
    const ctx = createExecutionContext();
    const res = await app.fetch(new Request("https://rm.test/api/queue/enqueue", {
      method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify({ template }),
    }), { ...env, ENQUEUE_MONEY_LEASES: "off" }, ctx);
    const r: Call = { status: res.status, body: await res.json(), headers: res.headers };
    await waitOnExecutionContext(ctx);
    expect(r.status).toBe(202);
    await expectAllAtClient(id, 1, est);
  });
});
