import { runInDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { captureLog, enqueue, eventually, makeClient, makePool, makeTemplate, scheduler, settled, sleep } from "../support/helpers";

/** What the settlement reaches for a client object; the test holds its settle calls until `open` is called. */
type Gated = {
  clientStub: (clientId: string) => { settle: (...args: unknown[]) => Promise<void> };
  held?: number;
  open?: () => void;
};

/** The scheduler's client-object settlements wait until the test opens the gate (an object slow to answer under load). */
async function holdClientSettlements(): Promise<void> {
  await runInDurableObject(scheduler(), (instance: SchedulerObject) => {
    const settlement = (instance as unknown as { settlement: Gated }).settlement;
    const real = Object.getPrototypeOf(settlement).clientStub.bind(settlement) as Gated["clientStub"];
    const gate = new Promise<void>((resolve) => (settlement.open = resolve));
    settlement.held = 0;
    settlement.clientStub = (clientId: string) => ({
      settle: async (...args: unknown[]) => {
        settlement.held! += 1;
        await gate;
        return real(clientId).settle(...args);
      },
    });
  });
}

const heldSettlements = () => runInDurableObject(scheduler(), (instance: SchedulerObject) => (instance as unknown as { settlement: Gated }).settlement.held ?? 0);

async function openAndRestore(): Promise<void> {
  await runInDurableObject(scheduler(), (instance: SchedulerObject) => {
    const settlement = (instance as unknown as { settlement: Gated }).settlement;
    settlement.open?.();
    // The prototype's stub again for the tests after this one.
    delete (settlement as Partial<Gated>).clientStub;
    delete settlement.open;
    delete settlement.held;
  });
}

/** A shard pass now (its first step sends requests whose lease ended back to their queue). */
const pass = () => runInDurableObject(scheduler(), (instance: SchedulerObject) => (instance as unknown as { dispatcher: { pass: (t: string) => Promise<number> } }).dispatcher.pass("test"));

describe("a settlement slower than the request's lease", () => {
  afterEach(() => vi.restoreAllMocks());

  it("does not send a request whose call has ended back to its queue: it completes once, at its first attempt", async () => {
    const pool = await makePool({ capacity: 100 });
    // Lease: the template's 1 s and the suite's LEASE_MARGIN_MS of 1 s, from when the request is claimed.
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }], { timeoutMs: 1000 });
    const client = await makeClient("slow-settle");
    const lines = captureLog();
    await holdClientSettlements();
    try {
      const r = await enqueue({ template, queue: "fast" }, client.key);
      expect(r.status, JSON.stringify(r.body)).toBe(202);
      const id: string = r.body.request.id;
      // Its call ended and its settlement waits on the client object...
      await eventually(async () => (await heldSettlements()) > 0 || null, 5000, "the settlement to reach the client object");
      // ... past its lease, and a pass looks at the leases.
      await sleep(2500);
      await pass();
      expect(lines.filter((l) => l.msg === "lease_expired" && l.request_id === id)).toEqual([]);
      const during = await runInDurableObject(scheduler(), (instance: SchedulerObject) => instance.get(id, null));
      expect(during).toMatchObject({ status: "running", attempts: 1 });
    } finally {
      await openAndRestore();
    }
    const id = (lines.find((l) => l.msg === "requests_dispatched") as { requests: Array<{ request_id: string }> } | undefined)?.requests[0]?.request_id;
    expect(id).toBeDefined();
    expect(await settled(id!, ["completed", "failed"], 10_000, client.key)).toMatchObject({ status: "completed", attempts: 1 });
    // Launched once: one dispatch line names it.
    const dispatched = lines.filter((l) => l.msg === "requests_dispatched" && (l.requests as Array<{ request_id: string }>).some((q) => q.request_id === id));
    expect(dispatched).toHaveLength(1);
  }, 30_000);
});
