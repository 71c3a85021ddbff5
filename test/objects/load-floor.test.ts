import { abortAllDurableObjects, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { Ends } from "../../src/objects/scheduler/ends";
import { FLOOR_KEY, LoadFloor, MARGIN_MS } from "../../src/objects/scheduler/load-floor";
import type { Row } from "../../src/objects/scheduler/rows";
import type { QueueStore } from "../../src/objects/scheduler/store";
import { passAll } from "../../src/services/scheduler";
import { enqueue, readyToExecute, settled, shardOf } from "../support/helpers";

/**
 * The load floor (src/objects/scheduler/load-floor.ts): a shard's restart reads only the rows created
 * from the oldest live request's creation (less a margin) on, and carries its dispatch numbers on from
 * those given before the floor was saved, with no scan of the older rows.
 */

const storeOf = (i: SchedulerObject) => (i as unknown as { store: QueueStore }).store;

/** A fresh client, a template needing one unit of a fresh pool, and the scheduler running. */
const setup = (prefix: string) => readyToExecute(prefix, { capacity: 1000 });

/** The floor the shard saved (state `load_floor`). */
const savedFloor = (clientId: string) =>
  runInDurableObject(shardOf(clientId), (_i: SchedulerObject, state) => {
    const v = state.storage.sql.exec<{ v: string }>("SELECT v FROM state WHERE k = ?", FLOOR_KEY).toArray()[0]?.v;
    return v === undefined ? null : (JSON.parse(v) as { createdAt: number; seq: number });
  });

/** A restarted shard (every object aborted), after its first pass: that pass saves its floor. */
async function restartAndPass(): Promise<void> {
  await abortAllDurableObjects();
  await passAll(env, "test");
}

describe("the load floor", () => {
  it("sits at the oldest live request's creation less the margin, and a restart reads no row created before it", async () => {
    const { template, client } = await setup("floor-read");
    // Held an hour: it stays live (queued) while later requests complete.
    const held = await enqueue({ template, queue: "batch", params: { tokens_used: 1 }, not_before: Date.now() + 3_600_000 }, client.key);
    expect(held.status, JSON.stringify(held.body)).toBe(202);
    const heldId = held.body.request.id as string;
    const later: string[] = [];
    for (let i = 0; i < 3; i++) later.push((await enqueue({ template, queue: "fast", params: { tokens_used: 1 } }, client.key)).body.request.id as string);
    for (const id of later) await settled(id, ["completed"], 10_000, client.key);

    await restartAndPass();
    const floor = await savedFloor(client.id);
    expect(floor?.createdAt).toBe(held.body.request.created_at - MARGIN_MS);

    // Two copies of the held row, still queued: one created just below the floor, one at it.
    const below = `${heldId}_below`;
    const at = `${heldId}_at`;
    await runInDurableObject(shardOf(client.id), (_i: SchedulerObject, state) => {
      const sql = state.storage.sql;
      const columns = sql.exec<{ name: string }>("SELECT name FROM pragma_table_info('requests')").toArray().map((c) => c.name).filter((c) => c !== "id" && c !== "created_at");
      for (const [id, createdAt] of [[below, floor!.createdAt - 1], [at, floor!.createdAt]] as const) {
        sql.exec(`INSERT INTO requests (id, created_at, ${columns.join(", ")}) SELECT ?, ?, ${columns.join(", ")} FROM requests WHERE id = ?`, id, createdAt, heldId);
        sql.exec("INSERT INTO request_bodies (id, params, plan, estimate_detail) SELECT ?, params, plan, estimate_detail FROM request_bodies WHERE id = ?", id, heldId);
      }
    });

    await abortAllDurableObjects();
    const loaded = await runInDurableObject(shardOf(client.id), (i: SchedulerObject) => {
      const store = storeOf(i);
      return { held: store.queued.has(heldId), at: store.queued.has(at), below: store.live.has(below), later: later.filter((id) => store.live.has(id)) };
    });
    // The row below the floor says queued, and is not read: every row created before the floor had ended when it was saved.
    expect(loaded).toEqual({ held: true, at: true, below: false, later: [] });
    // Nothing of this test stays live in the shard (the next tests look at the floor it holds).
    await runInDurableObject(shardOf(client.id), (i: SchedulerObject, state) => {
      const store = storeOf(i);
      for (const id of [heldId, at]) store.cancel(store.live.get(id)!, Date.now());
      state.storage.sql.exec("DELETE FROM requests WHERE id = ?", below);
    });
    await passAll(env, "test");
  });

  it("with nothing live it sits a margin before the pass that saved it, and moves up as the oldest live request ends", async () => {
    const { template, client } = await setup("floor-moves");
    const first = await enqueue({ template, queue: "fast", params: { tokens_used: 1 } }, client.key);
    await settled(first.body.request.id, ["completed"], 10_000, client.key);
    const before = Date.now();
    await restartAndPass();
    const floor = (await savedFloor(client.id))!;
    expect(floor.createdAt).toBeGreaterThanOrEqual(before - MARGIN_MS);
    expect(floor.createdAt).toBeLessThanOrEqual(Date.now() - MARGIN_MS);
    expect(floor.seq).toBeGreaterThanOrEqual((await settled(first.body.request.id, ["completed"], 10_000, client.key)).dispatch_seq);
    // The rows created since are read (the one created before the save, within the margin, too).
    const next = await enqueue({ template, queue: "fast", params: { tokens_used: 1 } }, client.key);
    await settled(next.body.request.id, ["completed"], 10_000, client.key);
    await restartAndPass();
    expect((await savedFloor(client.id))!.createdAt).toBeGreaterThan(floor.createdAt);
  });

  it("a restart's dispatch numbers go on above those given before the floor, with the older rows and records not read", async () => {
    const { template, client } = await setup("floor-seq");
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await enqueue({ template, queue: "fast", params: { tokens_used: 1 } }, client.key)).body.request.id as string);
    const done = await Promise.all(ids.map((id) => settled(id, ["completed"], 10_000, client.key)));
    const highest = Math.max(...done.map((d) => d.dispatch_seq as number));
    await restartAndPass();
    const floor = (await savedFloor(client.id))!;
    expect(floor.seq).toBeGreaterThanOrEqual(highest);
    // Put these requests and their end records far below the floor: only the floor's own number names them now.
    await runInDurableObject(shardOf(client.id), (_i: SchedulerObject, state) => {
      const sql = state.storage.sql;
      sql.exec("UPDATE requests SET created_at = 1, dispatch_seq = 1 WHERE id IN (SELECT value FROM json_each(?))", JSON.stringify(ids));
      sql.exec("UPDATE ends SET finished_at = 1 WHERE seq IN (SELECT seq FROM end_ids WHERE id IN (SELECT value FROM json_each(?)))", JSON.stringify(ids));
    });
    await abortAllDurableObjects();
    const seq = await runInDurableObject(shardOf(client.id), (i: SchedulerObject) => storeOf(i).seq);
    expect(seq).toBe(floor.seq);
    await passAll(env, "test");
    const next = await enqueue({ template, queue: "fast", params: { tokens_used: 1 } }, client.key);
    expect((await settled(next.body.request.id, ["completed"], 10_000, client.key)).dispatch_seq).toBeGreaterThan(highest);
  });

  it("the last dispatch number: the floor's, or a higher one on a live row, a row written at its end or a record finished from the floor on", async () => {
    // A scheduler object of this test's own: its tables hold only what the test writes.
    const stub = env.SCHEDULER.get(env.SCHEDULER.idFromName(`load-floor-seq-${crypto.randomUUID()}`));
    const seqs = await runInDurableObject(stub, (_i: SchedulerObject, state) => {
      const sql = state.storage.sql;
      for (const t of ["requests", "request_bodies", "ends", "end_ids", "end_logs", "launches"]) sql.exec(`DELETE FROM ${t}`);
      const saved = { createdAt: 1_000, seq: 5 };
      const floor = new LoadFloor(sql);
      const ends = new Ends(sql);
      const row = (id: string, finishedAt: number | null, seq: number) => sql.exec(
        `INSERT INTO requests (id, client_id, tier, max_concurrent, template, queue, status, max_attempts, estimate_nano, created_at, updated_at, not_before, finished_at, dispatch_seq)
         VALUES (?, 'acme', 'standard', 1, 't', 'batch', ?, 1, 0, 500, 500, 500, ?, ?)`, id, finishedAt === null ? "queued" : "failed", finishedAt, seq,
      );
      const out: number[] = [floor.lastSeq(saved, ends, [])];
      // Finished before the floor: its number was given before the floor's (a row like it cannot exist; ignored).
      row("before", 999, 50);
      out.push(floor.lastSeq(saved, ends, []));
      row("after", 1_000, 9);
      out.push(floor.lastSeq(saved, ends, []));
      sql.exec("INSERT INTO ends (seq, finished_at, last_dispatch, size, rows) VALUES (1, 999, 60, 1, '[]'), (2, 2_000, 12, 1, '[]')");
      out.push(floor.lastSeq(saved, ends, []));
      out.push(floor.lastSeq(saved, ends, [{ dispatch_seq: 15 } as Row, { dispatch_seq: null } as Row]));
      return out;
    });
    expect(seqs).toEqual([5, 5, 9, 12, 15]);
  });
});
