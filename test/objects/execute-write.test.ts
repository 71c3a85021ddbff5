import { abortAllDurableObjects, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { call, consume, readyToExecute, shardOf, STORED_REQUESTS } from "../support/helpers";

/**
 * An execute's row is written with its start (QueueStore.insert's `defer`): one commit where it took
 * two. Whatever becomes of the request, its row is in the shard's table before the execute answers.
 */

const stored = (clientId: string, id: string) =>
  runInDurableObject(shardOf(clientId), (_i: SchedulerObject, state) =>
    state.storage.sql.exec<{ status: string; attempts: number }>(`SELECT status, attempts FROM ${STORED_REQUESTS} WHERE id = ?`, id).toArray());

describe("an execute's row", () => {
  it("that ran is stored with its start and its end (completed, one attempt)", async () => {
    const { template, client } = await readyToExecute("exec-write", { capacity: 100 });
    const res = await call("POST", "/api/execute", { token: client.key, json: { template, params: { tokens_used: 1 } } });
    expect(res.status).toBe(200);
    expect(await stored(client.id, res.body.request.id)).toEqual([{ status: "completed", attempts: 1 }]);
  });

  it("that cannot start now (its pool is empty) is stored as queued before the 202: it outlives a restart, and can be cancelled", async () => {
    const { pool, template, client } = await readyToExecute("exec-write", { capacity: 1, refillPerSec: 0, leases: "off" });
    expect((await consume(pool.id, 1)).status).toBe(200); // the pool's one unit, gone
    const res = await call("POST", "/api/execute", { token: client.key, json: { template, params: { tokens_used: 1 } } });
    expect(res.status).toBe(202);
    const id: string = res.body.request.id;
    expect(await stored(client.id, id)).toEqual([{ status: "queued", attempts: 0 }]);
    await abortAllDurableObjects(); // the shard starts again from its table
    const after = await call("GET", `/api/execution/${id}`, { token: client.key });
    expect(after.status).toBe(200);
    expect(after.body.request ?? after.body).toMatchObject({ id, status: "queued" });
    const cancelled = await call("POST", `/api/execution/${id}/cancel`, { token: client.key });
    expect(cancelled.status).toBe(200);
    expect(await stored(client.id, id)).toEqual([{ status: "cancelled", attempts: 0 }]);
  });
  it("that may not run yet (not_before an hour ahead) is stored as queued before the 202 and outlives a restart", async () => {
    const { template, client } = await readyToExecute("exec-write", { capacity: 100 });
    const notBefore = Date.now() + 3_600_000;
    const res = await call("POST", "/api/execute", { token: client.key, json: { template, params: { tokens_used: 1 }, not_before: notBefore } });
    expect(res.status).toBe(202);
    const id: string = res.body.request.id;
    // No admission ran (nothing to requeue or start): the execute itself writes the row before answering.
    expect(await stored(client.id, id)).toEqual([{ status: "queued", attempts: 0 }]);
    await abortAllDurableObjects();
    const after = await call("GET", `/api/execution/${id}`, { token: client.key });
    expect(after.body.request ?? after.body).toMatchObject({ id, status: "queued", not_before: notBefore });
    expect((await call("POST", `/api/execution/${id}/cancel`, { token: client.key })).status).toBe(200);
  });
});
