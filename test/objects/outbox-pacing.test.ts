import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { Ends } from "../../src/objects/scheduler/ends";
import { BUSY_FLUSH_MS, Outbox } from "../../src/objects/scheduler/outbox";
import { BACKSTOP_MS } from "../../src/objects/scheduler/wake";
import { ADMIN, call, enqueue, eventually, makePool, makeTemplate, readyToExecute, scheduler, settled, shardOf } from "../support/helpers";

const rid = (n: string) => `req_${n.padStart(32, "0")}`;

/** A finished request straight into a scheduler's storage, with its outbox entry (as QueueStore.finishAll writes them). */
function finished(sql: SqlStorage, id: string, now: number): void {
  sql.exec(
    `INSERT INTO requests (id, client_id, tier, max_concurrent, template, queue, status, priority, attempts, max_attempts,
       estimate_nano, actual_nano, created_at, updated_at, not_before, ready_at, started_at, finished_at)
     VALUES (?, 'outbox-pacing', 'standard', 10, 'notify-email', 'normal', 'completed', 50, 1, 1, 5, 5, ?, ?, ?, ?, ?, ?)`,
    id, now, now, now, now, now, now,
  );
  sql.exec("INSERT INTO finished_outbox (id, optimizer) VALUES (?, 0)", id);
}

async function logged(ids: string[]): Promise<string[]> {
  const rows = await env.DB.prepare("SELECT id FROM request_log WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id").bind(JSON.stringify(ids)).all<{ id: string }>();
  return rows.results.map((r) => r.id);
}

describe("request-log delivery from busy passes", () => {
  it(`delivers at most every ${BUSY_FLUSH_MS} ms: a delivery due later is answered with its time and writes nothing until then`, async () => {
    const [a, b, c] = [rid("pace-a"), rid("pace-b"), rid("pace-c")];
    const due = await runInDurableObject(scheduler(), async (_i: SchedulerObject, state) => {
      const outbox = new Outbox(env, state.storage.sql, new Ends(state.storage.sql));
      const before = Date.now();
      finished(state.storage.sql, a, before);
      expect(outbox.flushPaced(before)).toBeNull(); // nothing delivered yet in this object's life: at once, in the background
      finished(state.storage.sql, b, before);
      finished(state.storage.sql, c, before);
      await outbox.idle();
      // The delivery just began at or after `before`: the next is due BUSY_FLUSH_MS after it.
      const next = outbox.flushPaced(before);
      expect(next).not.toBeNull();
      expect(next!).toBeGreaterThanOrEqual(before + BUSY_FLUSH_MS);
      expect(next! - Date.now()).toBeLessThanOrEqual(BUSY_FLUSH_MS);
      return next!;
    });
    expect(await logged([a, b, c])).toEqual([a]);
    await runInDurableObject(scheduler(), async (_i: SchedulerObject, state) => {
      const outbox = new Outbox(env, state.storage.sql, new Ends(state.storage.sql));
      expect(outbox.flushPaced(due)).toBeNull();
      await outbox.idle();
      expect(state.storage.sql.exec("SELECT COUNT(*) AS n FROM finished_outbox WHERE id IN (?, ?, ?)", a, b, c).one().n).toBe(0);
    });
    expect(await logged([a, b, c])).toEqual([a, b, c].sort());
  });

  it("a flush while a paced delivery runs waits for it, then delivers what finished after it began: nothing is left behind", async () => {
    const [d, e] = [rid("pace-d"), rid("pace-e")];
    await runInDurableObject(scheduler(), async (_i: SchedulerObject, state) => {
      const outbox = new Outbox(env, state.storage.sql, new Ends(state.storage.sql));
      finished(state.storage.sql, d, Date.now());
      expect(outbox.flushPaced(Date.now())).toBeNull();
      // d's delivery is under way (it read the outbox when it began); e finishes meanwhile.
      finished(state.storage.sql, e, Date.now());
      await outbox.flush();
      expect(state.storage.sql.exec("SELECT COUNT(*) AS n FROM finished_outbox WHERE id IN (?, ?)", d, e).one().n).toBe(0);
    });
    expect(await logged([d, e])).toEqual([d, e].sort());
  });

  it("requests finished by alarm passes reach request_log with no other pass asked for (the pass sets its alarm for the delivery due)", async () => {
    const pool = await makePool({ capacity: 1000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    expect((await call("POST", "/admin/scheduler/start", { token: ADMIN })).status).toBe(200);
    // Three waves, each settled by alarm passes within a few ms of the one before: later ones find a delivery just made.
    const ids: string[] = [];
    for (let wave = 0; wave < 3; wave++) {
      const body = { requests: Array.from({ length: 5 }, (_, i) => ({ template, queue: "fast", params: { n: i, tokens_used: 1 } })) };
      const waveIds: string[] = (await enqueue(body)).body.results.map((r: { request: { id: string } }) => r.request.id);
      for (const id of waveIds) await settled(id, ["completed"], 5000);
      ids.push(...waveIds);
    }
    const all = await eventually(async () => {
      const got = await logged(ids);
      return got.length === ids.length ? got : null;
    }, 5000, "every finished request in request_log");
    expect(all).toEqual([...ids].sort());
  });
  it(`an execute with nothing queued behind it leaves its request-log delivery to a pass within ${BUSY_FLUSH_MS} ms, not a pass of its own at once`, async () => {
    const { template, client } = await readyToExecute("exec-pace", { capacity: 1000 });
    const res = await call("POST", "/api/execute", { token: client.key, json: { template, params: { tokens_used: 1 } } });
    expect(res.status).toBe(200);
    // Its settlement asked for the outbox's pace (the shard had nothing queued): that pass runs on a timer
    // (./wake.ts), with the alarm behind it as a backstop at most BACKSTOP_MS ahead.
    const alarm = await runInDurableObject(shardOf(client.id), (_i: SchedulerObject, state) => state.storage.getAlarm());
    expect(alarm).not.toBeNull();
    expect(alarm!).toBeLessThanOrEqual(Date.now() + BACKSTOP_MS);
    // That pass delivers it.
    await eventually(async () => (await logged([res.body.request.id])).length === 1 || null, 3000, "the execute in request_log");
  });
});
