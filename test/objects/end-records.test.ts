import { abortAllDurableObjects, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { Ends, type EndEntry } from "../../src/objects/scheduler/ends";
import { Outbox } from "../../src/objects/scheduler/outbox";
import type { Row } from "../../src/objects/scheduler/rows";
import type { QueueStore } from "../../src/objects/scheduler/store";
import { passAll } from "../../src/services/scheduler";
import { ADMIN, call, enqueue, eventually, readyToExecute, settled, shardOf, STORED_REQUESTS } from "../support/helpers";

/**
 * End records (src/objects/scheduler/ends.ts): requests completed the usual way have their ends in one
 * record per settlement batch; their rows are left as they were. Every read sees them completed: a
 * request's view, a repeated idempotency key, the month's counts, the SLA report, the request log, a
 * restart; retention takes a record with its requests once its log entries reached D1.
 */

type Raw = { status: string; attempts: number; finished_at: number | null };

const storeOf = (i: SchedulerObject) => (i as unknown as { store: QueueStore }).store;

/** A shard's own rows, end records and undelivered log records for these requests. */
const inShard = (clientId: string, ids: string[]) =>
  runInDurableObject(shardOf(clientId), (_i: SchedulerObject, state) => {
    const sql = state.storage.sql;
    const list = JSON.stringify(ids);
    return {
      raw: sql.exec<Raw & { id: string }>("SELECT id, status, attempts, finished_at FROM requests WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id", list).toArray(),
      stored: sql.exec<{ id: string; status: string; attempts: number; dispatch_seq: number }>(
        `SELECT id, status, attempts, dispatch_seq FROM ${STORED_REQUESTS} WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id`, list,
      ).toArray(),
      named: sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM end_ids WHERE id IN (SELECT value FROM json_each(?))", list).one().n,
      records: sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM ends WHERE seq IN (SELECT seq FROM end_ids WHERE id IN (SELECT value FROM json_each(?)))", list).one().n,
      undelivered: sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM end_logs WHERE seq IN (SELECT seq FROM end_ids WHERE id IN (SELECT value FROM json_each(?)))", list).one().n,
    };
  });

/** A fresh client, a template needing one unit of a fresh pool, and the scheduler running. */
const setup = (prefix: string) => readyToExecute(prefix, { capacity: 1000 });

/** Enqueue `n` quick requests (the first with an idempotency key) and wait until all completed. */
async function completeSome(template: string, key: string, n: number): Promise<Array<Record<string, any>>> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await enqueue({ template, queue: "fast", params: { tokens_used: 1 + i }, ...(i === 0 ? { idempotency_key: "end-rec-first" } : {}) }, key);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    ids.push(r.body.request.id);
  }
  return Promise.all(ids.map((id) => settled(id, ["completed"], 10_000, key)));
}

describe("end records", () => {
  it("a completed request's row is left as it was, one record holds the batch's ends, and every read sees it completed", async () => {
    const { template, client } = await setup("end-rec");
    const done = await completeSome(template, client.key, 6);
    const ids = done.map((d) => d.id as string).sort();
    for (const d of done) expect(d).toMatchObject({ status: "completed", attempts: 1, error: null });
    const shard = await inShard(client.id, ids);
    // The rows say queued (never rewritten); end_ids names each; the records hold their ends.
    expect(shard.raw.map((r) => [r.status, r.attempts, r.finished_at])).toEqual(ids.map(() => ["queued", 0, null]));
    expect(shard.named).toBe(6);
    expect(shard.records).toBeGreaterThanOrEqual(1);
    expect(shard.records).toBeLessThanOrEqual(6);
    const byId = new Map(done.map((d) => [d.id, d]));
    for (const s of shard.stored) expect(s).toMatchObject({ status: "completed", attempts: 1, dispatch_seq: byId.get(s.id)!.dispatch_seq });

    // A view read from SQLite (not the copy in memory, which is gone): result, cost and times from the record.
    for (const id of ids) {
      const view = (await call("GET", `/api/execution/${id}`, { token: client.key })).body.request;
      expect(view).toMatchObject({ status: "completed", attempts: 1, result: byId.get(id)!.result, actual_nano: byId.get(id)!.actual_nano, finished_at: byId.get(id)!.finished_at });
      expect(view.actual).toEqual(byId.get(id)!.actual);
    }
    // The same idempotency key again: the first request, completed.
    const again = await enqueue({ template, queue: "fast", params: { tokens_used: 1 }, idempotency_key: "end-rec-first" }, client.key);
    expect(again.status).toBe(202);
    expect(again.body).toMatchObject({ duplicate: true, request: { id: done[0]!.id, status: "completed", attempts: 1 } });
    // The month's counts: six completed, none queued.
    const usage = (await call("GET", `/api/usage/${client.id}/current`, { token: ADMIN })).body;
    expect(usage.requests_by_status).toMatchObject({ completed: 6, queued: 0, running: 0 });
    // The SLA report counts each once, decided.
    const from = Math.min(...done.map((d) => d.created_at)) - 1000;
    const sla = (await call("GET", `/api/sla?client_id=${client.id}&from=${from}&to=${Date.now() + 1000}`, { token: ADMIN })).body;
    expect(sla.overall.total, JSON.stringify(sla)).toBe(6);
    // A window that opens after they finished: none of them (their rows alone say nothing of when they ended).
    const later = Math.max(...done.map((d) => d.finished_at)) + 1;
    const none = (await call("GET", `/api/sla?client_id=${client.id}&from=${later}&to=${later + 1000}`, { token: ADMIN })).body;
    expect(none.overall.total, JSON.stringify(none)).toBe(0);
    // The request log: delivered from the records' log rows, which then go.
    await passAll(env, "test");
    const logged = await env.DB.prepare("SELECT id, status, attempts, actual_nano, finished_at FROM request_log WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id")
      .bind(JSON.stringify(ids)).all<{ id: string; status: string; attempts: number; actual_nano: number; finished_at: number }>();
    expect(logged.results).toEqual(ids.map((id) => ({ id, status: "completed", attempts: 1, actual_nano: byId.get(id)!.actual_nano, finished_at: byId.get(id)!.finished_at })));
    expect((await inShard(client.id, ids)).undelivered).toBe(0);
  });

  it("after a restart a request an end record holds is not loaded as queued, runs no more, and dispatch numbers go on above its", async () => {
    const { template, client } = await setup("end-rec-restart");
    const done = await completeSome(template, client.key, 3);
    const ids = done.map((d) => d.id as string);
    const highest = Math.max(...done.map((d) => d.dispatch_seq as number));
    await abortAllDurableObjects();
    const loaded = await runInDurableObject(shardOf(client.id), (i: SchedulerObject) => {
      const store = storeOf(i);
      return { live: ids.filter((id) => store.live.has(id)), queued: ids.filter((id) => store.queued.has(id)), seq: store.seq };
    });
    expect(loaded).toEqual({ live: [], queued: [], seq: expect.any(Number) });
    expect(loaded.seq).toBeGreaterThanOrEqual(highest);
    await passAll(env, "test");
    for (const id of ids) expect((await call("GET", `/api/execution/${id}`, { token: client.key })).body.request).toMatchObject({ status: "completed", attempts: 1 });
    const next = await enqueue({ template, queue: "fast", params: { tokens_used: 1 } }, client.key);
    const after = await settled(next.body.request.id, ["completed"], 10_000, client.key);
    expect(after.dispatch_seq).toBeGreaterThan(highest);
  });

  it("retention takes a record with its requests once its log entries reached D1, not before", async () => {
    const { template, client } = await setup("end-rec-purge");
    const done = await completeSome(template, client.key, 4);
    const ids = done.map((d) => d.id as string);
    const purge = () => runInDurableObject(shardOf(client.id), (i: SchedulerObject, state) => {
      // Finished long ago: their records' time moved back.
      state.storage.sql.exec("UPDATE ends SET finished_at = 1 WHERE seq IN (SELECT seq FROM end_ids WHERE id IN (SELECT value FROM json_each(?)))", JSON.stringify(ids));
      return storeOf(i).purgeFinished(2, 1000);
    });
    await eventually(async () => {
      await passAll(env, "test");
      return (await inShard(client.id, ids)).undelivered === 0 ? true : null;
    }, 5000, "delivered");
    // A record whose log entries still wait for D1 stays (marked undelivered again here), with its requests.
    const mark = (sql: string) => runInDurableObject(shardOf(client.id), (_i: SchedulerObject, state) => {
      state.storage.sql.exec(sql, JSON.stringify(ids));
    });
    await mark("INSERT INTO end_logs (seq, log) SELECT seq, '[]' FROM ends WHERE seq IN (SELECT seq FROM end_ids WHERE id IN (SELECT value FROM json_each(?)))");
    expect(await purge()).toBe(0);
    expect((await inShard(client.id, ids)).named).toBe(4);
    await mark("DELETE FROM end_logs WHERE seq IN (SELECT seq FROM end_ids WHERE id IN (SELECT value FROM json_each(?)))");
    expect(await purge()).toBe(4);
    const gone = await inShard(client.id, ids);
    expect(gone).toMatchObject({ raw: [], stored: [], named: 0, records: 0 });
    const bodies = await runInDurableObject(shardOf(client.id), (_i: SchedulerObject, state) =>
      state.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM request_bodies WHERE id IN (SELECT value FROM json_each(?))", JSON.stringify(ids)).one().n);
    expect(bodies).toBe(0);
    // Gone from the shard, still in the request log.
    const logged = await env.DB.prepare("SELECT COUNT(*) AS n FROM request_log WHERE id IN (SELECT value FROM json_each(?))").bind(JSON.stringify(ids)).first<{ n: number }>();
    expect(logged!.n).toBe(4);
  });

  it("a failed request's row is written at its end (no end record)", async () => {
    const { template, client } = await setup("end-rec-failed");
    const r = await enqueue({ template, queue: "fast", params: { simulate: { fail: "error" } }, max_attempts: 1 }, client.key);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const failed = await settled(r.body.request.id, ["failed"], 10_000, client.key);
    const shard = await inShard(client.id, [failed.id]);
    expect(shard.raw).toEqual([{ id: failed.id, status: "failed", attempts: 1, finished_at: failed.finished_at }]);
    expect(shard.named).toBe(0);
  });

  it("a record's log entries stay until D1 takes them: a failed delivery keeps them for the next, more than a batch goes in one delivery", async () => {
    const prefix = `req_endlog${crypto.randomUUID().replace(/-/g, "").slice(0, 12)}_`;
    // A scheduler object of this test's own (no shard's records share its tables), 12 records of 100.
    const stub = env.SCHEDULER.get(env.SCHEDULER.idFromName(`end-log-test-${prefix}`));
    const ids = Array.from({ length: 1200 }, (_, i) => `${prefix}${String(i).padStart(5, "0")}`);
    const left = await runInDurableObject(stub, async (_i: SchedulerObject, state) => {
      const sql = state.storage.sql;
      const ends = new Ends(sql);
      ends.load(0);
      for (let k = 0; k < ids.length; k += 100) {
        const batch = ids.slice(k, k + 100);
        const rows = batch.map((id, j) => ({
          id, client_id: "acme", template: "tmpl-endlog", queue: "batch", status: "completed", estimate_nano: 1000 + j, actual_nano: 900 + j,
          attempts: 1, created_at: 1_700_000_000_000 + k + j, finished_at: 1_700_000_009_000 + k, error: null,
        })) as unknown as Row[];
        ends.record(batch.map((id, j): EndEntry => [id, "{}", 900 + j, "[]", 1, 1, 1, k + j + 1]), rows, 1_700_000_009_000 + k);
      }
      const failing = { ...env, DB: { prepare: () => { throw new Error("D1 down"); } } } as unknown as Env;
      await new Outbox(failing, sql, ends).flush();
      const kept = sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM end_logs").one().n;
      // The failed delivery's backoff is the outbox's own: a fresh one delivers now.
      await new Outbox(env, sql, ends).flush();
      return { kept, after: sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM end_logs").one().n };
    });
    expect(left).toEqual({ kept: 12, after: 0 });
    const logged = await env.DB.prepare("SELECT COUNT(*) AS n, SUM(actual_nano) AS spent FROM request_log WHERE id LIKE ?1 || '%'").bind(prefix).first<{ n: number; spent: number }>();
    expect(logged).toEqual({ n: 1200, spent: 12 * (100 * 900 + 4950) });
  });
});
