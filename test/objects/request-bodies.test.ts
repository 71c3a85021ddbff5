import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { PoolObject } from "../../src/objects/pool";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { createTables } from "../../src/objects/scheduler/schema";
import { QueueStore } from "../../src/objects/scheduler/store";
import { enqueue, makePool, shardOf } from "../support/helpers";

/**
 * A request's body (params, plan, estimate) lives in `request_bodies`, written once, apart from the row
 * whose status changes at every dispatch (SQLite rewrites a whole row at each update: a prompt's
 * kilobytes were rewritten twice per dispatch). Objects made before the split move their bodies over.
 */
const columnsOf = (sql: SqlStorage, table: string) => sql.exec<{ name: string }>(`SELECT name FROM pragma_table_info('${table}')`).toArray().map((c) => c.name);

describe("request bodies", () => {
  it("an object made before the split moves each request's params, plan and estimate to request_bodies, drops the columns, and loads its queued work as before (long params left in SQLite until launch)", async () => {
    const pool = await makePool({ capacity: 10, refillPerSec: 0 });
    // A fresh object's storage of its own (a pool's): the scheduler's tables as they were before the split.
    await runInDurableObject(env.POOL.get(env.POOL.idFromName(pool.id)), (_: PoolObject, state) => {
      const sql = state.storage.sql;
      sql.exec(`CREATE TABLE requests (
        id TEXT PRIMARY KEY, client_id TEXT NOT NULL, tier TEXT NOT NULL, max_concurrent INTEGER NOT NULL, template TEXT NOT NULL,
        params TEXT NOT NULL, queue TEXT NOT NULL, status TEXT NOT NULL, priority REAL NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL, idempotency_key TEXT, estimate_nano INTEGER NOT NULL, actual_nano INTEGER, result TEXT, error TEXT,
        created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, not_before INTEGER NOT NULL, lease_until INTEGER, started_at INTEGER,
        finished_at INTEGER, dispatch_seq INTEGER, reservations TEXT, estimate_detail TEXT, actual_detail TEXT, ready_at INTEGER,
        first_started_at INTEGER, plan TEXT, spec_hash TEXT, trace_id TEXT)`);
      const plan = JSON.stringify({ requested_template: "t", downgraded_from: null, downgrade_reason: null, strategies: [], cache_key: null, cache_ttl_ms: 0, batchable: false, batch_size: 1, compress_threshold_bytes: null, bytes_saved: 0, cached: false, batched: null });
      const estimate = JSON.stringify([{ pool: "p", units: 3, cost_nano: 30 }]);
      const long = JSON.stringify({ prompt: "h".repeat(300) });
      sql.exec(
        `INSERT INTO requests (id, client_id, tier, max_concurrent, template, params, queue, status, max_attempts, estimate_nano, created_at, updated_at, not_before, ready_at, estimate_detail, plan)
         VALUES ('req_old_queued', 'acme', 'enterprise', 10, 't', ?3, 'fast', 'queued', 3, 30, 1, 1, 1, 1, ?1, ?2),
                ('req_old_short', 'acme', 'enterprise', 10, 't', '{"prompt":"hi"}', 'fast', 'queued', 3, 30, 1, 1, 1, 1, ?1, NULL),
                ('req_old_done', 'acme', 'enterprise', 10, 't', '{"prompt":"bye"}', 'fast', 'completed', 3, 30, 1, 2, 1, 1, ?1, NULL)`,
        estimate, plan, long,
      );
      createTables(sql);
      expect(columnsOf(sql, "requests")).not.toContain("params");
      expect(columnsOf(sql, "requests")).not.toContain("plan");
      expect(columnsOf(sql, "requests")).not.toContain("estimate_detail");
      expect(sql.exec("SELECT id, params, plan, estimate_detail FROM request_bodies ORDER BY id").toArray()).toEqual([
        { id: "req_old_done", params: '{"prompt":"bye"}', plan: null, estimate_detail: estimate },
        { id: "req_old_queued", params: long, plan, estimate_detail: estimate },
        { id: "req_old_short", params: '{"prompt":"hi"}', plan: null, estimate_detail: estimate },
      ]);
      // Made again (every start): nothing changes.
      createTables(sql);
      expect(sql.exec("SELECT COUNT(*) AS n FROM request_bodies").one().n).toBe(3);
      const store = new QueueStore(sql, { tierPointsOf: () => 40, enqueueScore: () => 0 });
      store.load();
      expect(store.queued.has("req_old_queued")).toBe(true);
      const queued = store.live.get("req_old_queued")!;
      expect(queued).toMatchObject({ params: null, plan, estimate_detail: estimate, status: "queued" });
      store.loadParams([queued]);
      expect(queued.params).toBe(long);
      // Short params stay in memory: nothing to read at launch.
      expect(store.live.get("req_old_short")!.params).toBe('{"prompt":"hi"}');
      expect(store.rowOf("req_old_done")).toMatchObject({ params: '{"prompt":"bye"}', status: "completed" });
    });
  });

  it("an enqueue writes its body once; its row has no params, its copy in memory leaves long params out until it is launched, and a purge takes both", async () => {
    const res = await enqueue({ template: "notify-email", queue: "batch", params: { to: "a@example.com", body: "x".repeat(2000) }, not_before: Date.now() + 3_600_000 });
    expect(res.status).toBe(202);
    const id = res.body.request.id as string;
    const stored = await runInDurableObject(shardOf("acme"), (instance: SchedulerObject, state) => {
      const sql = state.storage.sql;
      const body = sql.exec<{ params: string; estimate_detail: string }>("SELECT params, estimate_detail FROM request_bodies WHERE id = ?", id).one();
      const row = sql.exec("SELECT * FROM requests WHERE id = ?", id).one();
      // Its copy in memory leaves long params out while it waits (a prompt per queued request); a launch reads them.
      const store = (instance as unknown as { store: QueueStore }).store;
      const inMemory = store.live.get(id)!.params;
      const probe = { ...store.live.get(id)! };
      store.loadParams([probe]);
      // Finished long ago and delivered: the retention purge takes the row and its body.
      sql.exec("UPDATE requests SET status = 'cancelled', finished_at = 1 WHERE id = ?", id);
      const purged = store.purgeFinished(2, 1000);
      const left = sql.exec<{ n: number }>("SELECT (SELECT COUNT(*) FROM requests WHERE id = ?1) + (SELECT COUNT(*) FROM request_bodies WHERE id = ?1) AS n", id).one().n;
      return { body, row, purged, left, inMemory, loaded: probe.params };
    });
    expect(JSON.parse(stored.body.params)).toEqual({ to: "a@example.com", body: "x".repeat(2000) });
    expect(JSON.parse(stored.body.estimate_detail)).toEqual(res.body.request.estimate);
    expect(Object.keys(stored.row)).not.toContain("params");
    expect(stored.inMemory).toBeNull();
    expect(stored.loaded).toBe(stored.body.params);
    expect(stored.purged).toBeGreaterThanOrEqual(1);
    expect(stored.left).toBe(0);
  });
});
