import { describe, expect, it } from "vitest";
import { ADMIN, call, enqueue, KEYS, makeClient, makePool, makeTemplate } from "../support/helpers";

/**
 * A single enqueue places its request into the order ranked for the last answer (Ranking.splice)
 * instead of ranking the whole backlog again; GET /api/queue/position ranks it exactly. For clients
 * that take turns, and for tiers ranked one after the other, the two agree within a tie or two.
 */
describe("the position a single enqueue answers", () => {
  it("is within 2 of the position GET /api/queue/position gives, request after request, for two clients taking turns and for other tiers", async () => {
    expect((await call("POST", "/admin/scheduler/stop", { token: ADMIN })).status).toBe(200);
    const pool = await makePool({ capacity: 1000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    const a = await makeClient("pos-a");
    const b = await makeClient("pos-b");
    const order = [a.key, b.key, a.key, b.key, a.key, a.key, b.key, b.key, b.key, a.key, KEYS.acme, KEYS.acme, KEYS.acme, KEYS.hooli, KEYS.hooli, KEYS.hooli, a.key, b.key];
    const seen: Array<[number, number]> = [];
    for (const key of order) {
      const r = await enqueue({ template, queue: "normal" }, key);
      expect(r.status).toBe(202);
      const p = await call("GET", `/api/queue/position/${r.body.request.id}`, { token: key });
      expect(p.status).toBe(200);
      seen.push([r.body.position, p.body.position]);
    }
    // Placed by its client's spacing, a request can land a tie or two early when the other client has
    // requests left after its own last one: never by more than the other client's picks between two of its own.
    for (const [answered, exact] of seen) expect(Math.abs(answered - exact)).toBeLessThanOrEqual(2);
    expect(seen.filter(([answered, exact]) => answered === exact).length).toBeGreaterThanOrEqual(16);
    // The enterprise client's requests rank ahead of the standard ones: 1, 2, 3.
    expect(seen.slice(10, 13).map(([answered]) => answered)).toEqual([1, 2, 3]);
  });
});

/**
 * A batch is queued in the order it was sent: its requests' ids (which break ties in rank between
 * requests made in the same millisecond) are made in the batch's order before anything is awaited.
 * They were made as each spec's preparation finished: a first spec with an idempotency key (its shard
 * is asked about the key first), or one whose configuration read was slower, queued after the rest.
 */
describe("the order of a batch", () => {
  it("is the order of its requests in the queue, also when the first one carries an idempotency key", async () => {
    expect((await call("POST", "/admin/scheduler/stop", { token: ADMIN })).status).toBe(200);
    const pool = await makePool({ capacity: 1000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    const c = await makeClient("batch-order");
    const specs = [
      { template, queue: "normal", idempotency_key: "batch-order-first" },
      { template, queue: "normal" },
      { template, queue: "normal" },
      { template, queue: "normal", idempotency_key: "batch-order-fourth" },
      { template, queue: "normal" },
    ];
    const r = await enqueue({ requests: specs }, c.key);
    expect(r.status).toBe(200);
    const ids: string[] = r.body.results.map((x: { request: { id: string } }) => x.request.id);
    expect(ids).toHaveLength(5);
    expect([...ids].sort()).toEqual(ids);
    const positions: number[] = [];
    for (const id of ids) {
      const p = await call("GET", `/api/queue/position/${id}`, { token: c.key });
      expect(p.status).toBe(200);
      positions.push(p.body.position);
    }
    // Other clients' work queued before it interleaves by fairness: the batch's own order holds.
    expect(positions.slice(1).every((p, i) => p > positions[i]!)).toBe(true);
  });
});
