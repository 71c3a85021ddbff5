import { abortAllDurableObjects, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { passAll } from "../../src/services/scheduler";
import { ADMIN, call, enqueue, eventually, makeClient, makePool, makeTemplate, settled, shardOf, STORED_REQUESTS } from "../support/helpers";

/**
 * Launch records (src/objects/scheduler/store.ts, QueueStore.start): a launched chunk is one row of the
 * shard's `launches` table, not an update of each request's row; a request's row gets its attempt
 * (attempts, start, first start, dispatch sequence) when the attempt ends, and a record goes when the
 * last of its attempts has. After a restart the records say which requests were running.
 */

type Stored = { status: string; attempts: number; started_at: number | null; first_started_at: number | null; dispatch_seq: number | null };

/**
 * A request as stored (its row, with its end record's end applied: src/objects/scheduler/ends.ts), its
 * row alone, and the launch records the shard keeps.
 */
const stored = (clientId: string, id: string) =>
  runInDurableObject(shardOf(clientId), (_, state) => ({
    row: state.storage.sql.exec<Stored>(`SELECT status, attempts, started_at, first_started_at, dispatch_seq FROM ${STORED_REQUESTS} WHERE id = ?`, id).one(),
    raw: state.storage.sql.exec<Stored>("SELECT status, attempts, started_at, first_started_at, dispatch_seq FROM requests WHERE id = ?", id).one(),
    launches: state.storage.sql.exec<{ id: string }>("SELECT j.value ->> 0 AS id FROM launches, json_each(launches.rows) AS j").toArray().map((r) => r.id),
  }));

async function setup(prefix: string, timeoutMs: number) {
  const pool = await makePool({ capacity: 1000 });
  const template = await makeTemplate([{ pool: pool.id, amount: 1 }], { timeoutMs });
  const client = await makeClient(prefix);
  expect((await call("POST", "/admin/scheduler/start", { token: ADMIN })).status).toBe(200);
  return { template, client };
}

describe("launch records", () => {
  it("a running request's row still says queued, its chunk's record names it; its end record holds the attempt and the launch record goes", async () => {
    const { template, client } = await setup("launch-rec", 10_000);
    const r = await enqueue({ template, queue: "fast", params: { tokens_used: 1, simulate: { latency_ms: 1500 } } }, client.key);
    expect(r.status).toBe(202);
    const id: string = r.body.request.id;
    await eventually(async () => ((await call("GET", `/api/execution/${id}`, { token: client.key })).body.request.status === "running" ? true : null), 5000, "running");
    const running = await stored(client.id, id);
    expect(running.row).toMatchObject({ status: "queued", attempts: 0, started_at: null });
    expect(running.launches).toEqual([id]);
    const done = await settled(id, ["completed"], 8000, client.key);
    const after = await stored(client.id, id);
    expect(after.row).toMatchObject({ status: "completed", attempts: 1, started_at: done.started_at, first_started_at: done.started_at });
    expect(after.row.dispatch_seq).toBeGreaterThan(0);
    // Completed the usual way: its row is left as it was, its end is in an end record.
    expect(after.raw).toMatchObject({ status: "queued", attempts: 0, started_at: null });
    expect(after.launches).toEqual([]);
  });

  it("a shard that restarts while a request runs finds it running from its launch record; its lease ends, it runs again and its row counts both attempts", async () => {
    const { template, client } = await setup("launch-restart", 1000);
    // The first attempt outlives the restart: its call is lost with the object.
    const r = await enqueue({ template, queue: "fast", params: { tokens_used: 1, simulate: { latency_ms: 700 } } }, client.key);
    const id: string = r.body.request.id;
    await eventually(async () => ((await call("GET", `/api/execution/${id}`, { token: client.key })).body.request.status === "running" ? true : null), 5000, "running");
    await abortAllDurableObjects();
    // Loaded again: running on its first attempt (not queued with none), so its lease sends it back to run once more.
    const view = (await call("GET", `/api/execution/${id}`, { token: client.key })).body.request;
    expect(view).toMatchObject({ status: "running", attempts: 1 });
    // Its lease (1 s timeout + 1 s margin) ends: a pass returns it to its queue and runs it again.
    const done = await eventually(async () => {
      await passAll(env, "test");
      const r = (await call("GET", `/api/execution/${id}`, { token: client.key })).body.request;
      return r.status === "completed" || r.status === "failed" ? r : null;
    }, 15_000, "run again after the lease ended");
    expect(done).toMatchObject({ status: "completed", attempts: 2 });
    const after = await stored(client.id, id);
    expect(after.row).toMatchObject({ status: "completed", attempts: 2 });
    expect(after.row.first_started_at).toBeLessThan(after.row.started_at!);
    expect(after.launches).toEqual([]);
  }, 30_000);
});
