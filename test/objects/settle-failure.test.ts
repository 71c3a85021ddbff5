import { runInDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { enqueue, eventually, makePool, makeTemplate, scheduler, settled } from "../support/helpers";

/** What the settlement reaches for a client object (the fault is injected there: the client object unreachable). */
type ClientStubOf = { clientStub: (clientId: string) => { settle: (...args: unknown[]) => Promise<void> } };

describe("a settlement that fails (a client object unreachable)", () => {
  afterEach(() => vi.restoreAllMocks());

  it("is logged as settle_failed with its requests and trace ids, is no unhandled rejection, and loses nothing: the request runs again when its lease ends and completes", async () => {
    const pool = await makePool({ capacity: 100 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }], { timeoutMs: 500 });
    const lines: Array<Record<string, unknown>> = [];
    vi.spyOn(console, "log").mockImplementation((line: unknown) => {
      if (line && typeof line === "object") lines.push({ ...(line as Record<string, unknown>) });
    });
    // The first settlement of this shard fails in the client object call; later ones go through.
    await runInDurableObject(scheduler(), (instance: SchedulerObject) => {
      const settlement = (instance as unknown as { settlement: ClientStubOf }).settlement;
      const real = settlement.clientStub.bind(settlement);
      let failures = 1;
      settlement.clientStub = (clientId: string) => {
        const stub = real(clientId);
        return {
          settle: async (...args: unknown[]) => {
            if (failures-- > 0) throw new Error("client object unreachable");
            return stub.settle(...args);
          },
        };
      };
    });
    const r = await enqueue({ template, queue: "fast" });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const id: string = r.body.request.id;
    const failed = await eventually(async () => lines.find((l) => l.msg === "settle_failed"), 8000, "a settle_failed line");
    expect(failed).toMatchObject({ level: "error", count: 1, error: "Error: client object unreachable" });
    expect(failed.requests).toEqual([{ request_id: id, trace_id: r.body.trace_id }]);
    // Not settled: still running, until its lease (timeout 500 ms + LEASE_MARGIN_MS 1,000) ends.
    expect(((await scheduler().get(id, null)) as { status: string } | null)?.status).toBe("running");
    await eventually(async () => lines.some((l) => l.msg === "lease_expired" && l.request_id === id), 8000, "the lease to end");
    const done = await settled(id, ["completed", "failed"], 10_000);
    expect(done).toMatchObject({ status: "completed", attempts: 2 });
  }, 30_000);
});
