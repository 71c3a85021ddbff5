import { createScheduledController } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { runCron } from "../../src/cron";
import { clearConfigCache } from "../../src/storage/config";
import { closeLeases } from "../../src/services/leases";
import { setClientBudget } from "../../src/storage/clients";
import { ADMIN, call, consume, enqueue, eventually, expectError, makePool, makeTemplate, scheduler, settled, sleep } from "../support/helpers";

interface AlertRow { id: string; kind: string; subject: string; state: string; count: number; severity: string }

async function alertsOf(kind: string, subject: string, state = "open"): Promise<AlertRow[]> {
  const r = await call("GET", `/admin/alerts?kind=${kind}&state=${state}&limit=200`, { token: ADMIN });
  expect(r.status).toBe(200);
  return (r.body.alerts as AlertRow[]).filter((a) => a.subject === subject);
}

/** Deliver a pool's outbox, with the grants this isolate made from a token lease reported first. */
const flush = async (pool: string) => {
  await closeLeases(env);
  return env.POOL.get(env.POOL.idFromName(pool)).flush();
};

describe("alerts raised by the code path that sees the condition", () => {
  it("worker failures: 10 failing calls of a template raise worker_failures once; later successes resolve it", async () => {
    const pool = await makePool({ capacity: 1_000_000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    const failing = await Promise.all(Array.from({ length: 10 }, () =>
      enqueue({ template, queue: "fast", max_attempts: 1, params: { simulate: { fail: "error" } } })));
    for (const r of failing) expect(r.status).toBe(202);
    for (const r of failing) expect((await settled(r.body.request.id, ["failed"])).status).toBe("failed");
    const open = await eventually(async () => {
      const rows = await alertsOf("worker_failures", template);
      return rows.length ? rows : null;
    }, 8000, "worker_failures alert");
    expect(open).toHaveLength(1);
    expect(open[0]!.count).toBe(1);

    // 12 successes: 10 of 22 calls failed in the window (45%), under the 50% line.
    const ok = await Promise.all(Array.from({ length: 12 }, () => enqueue({ template, queue: "fast" })));
    for (const r of ok) expect((await settled(r.body.request.id, ["completed"])).status).toBe("completed");
    await sleep(5100); // passes re-check at most every 5 s unless a call failed
    await scheduler().pass("test");
    expect(await alertsOf("worker_failures", template)).toHaveLength(0);
    expect(await alertsOf("worker_failures", template, "resolved")).toHaveLength(1);
  });

  it("worker timeouts: 10 calls past their deadline raise worker_timeouts once", async () => {
    const pool = await makePool({ capacity: 1_000_000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }], { timeoutMs: 200 });
    // A worker that is slower than the deadline (a promise that never settles is cut short by the runtime itself).
    const hanging = await Promise.all(Array.from({ length: 10 }, () =>
      enqueue({ template, queue: "fast", max_attempts: 1, params: { simulate: { latency_ms: 1500 } } })));
    for (const r of hanging) expect((await settled(r.body.request.id, ["failed"])).error).toContain("timed out");
    const open = await eventually(async () => {
      const rows = await alertsOf("worker_timeouts", template);
      return rows.length ? rows : null;
    }, 8000, "worker_timeouts alert");
    expect(open).toHaveLength(1);
    expect(await alertsOf("worker_failures", template)).toHaveLength(0);
  });

  it("budget lines: spend reported by the pool's outbox raises 80%, 95% and exhausted once each; a raised budget clears exhausted", async () => {
    const pool = await makePool({ capacity: 1_000_000, costPerUnitNano: 1000 });
    await setClientBudget(env.DB, "initech", 1_000_000); // 1,000 units of this pool
    clearConfigCache();
    const spend = async (units: number) => {
      expect((await consume(pool.id, units, {}, "initech")).status).toBe(200);
      await flush(pool.id);
    };
    await spend(799);
    expect(await alertsOf("budget_80", "initech")).toHaveLength(0);
    await spend(1); // 800,000 of 1,000,000: exactly 80%
    expect(await alertsOf("budget_80", "initech")).toHaveLength(1);
    expect(await alertsOf("budget_95", "initech")).toHaveLength(0);
    await spend(150); // 95%
    expect(await alertsOf("budget_95", "initech")).toHaveLength(1);
    await spend(49);
    expect(await alertsOf("budget_exhausted", "initech")).toHaveLength(0);
    await spend(1); // 100%
    const exhausted = await alertsOf("budget_exhausted", "initech");
    expect(exhausted).toHaveLength(1);
    // Spent to the budget: a direct consume is refused now (it used to go through and only alert).
    expectError(await consume(pool.id, 5, {}, "initech"), 402, "budget_exceeded");
    await flush(pool.id);
    expect(await alertsOf("budget_exhausted", "initech")).toHaveLength(1);
    const all80 = await call("GET", "/admin/alerts?kind=budget_80&limit=200", { token: ADMIN });
    expect((all80.body.alerts as AlertRow[]).filter((a) => a.subject === "initech")).toHaveLength(1);

    await setClientBudget(env.DB, "initech", 2_000_000);
    clearConfigCache();
    await spend(1); // 1,001,000 of 2,000,000: nothing reached any more
    expect(await alertsOf("budget_exhausted", "initech")).toHaveLength(0);
    expect(await alertsOf("budget_exhausted", "initech", "resolved")).toHaveLength(1);
    // 80% and 95% are once a month: they stay for the month.
    expect(await alertsOf("budget_80", "initech")).toHaveLength(1);
  });

  it("the cron pass re-checks budgets from the clients' objects", async () => {
    const pool = await makePool({ capacity: 1_000_000, costPerUnitNano: 1000 });
    await setClientBudget(env.DB, "hooli", 100_000);
    clearConfigCache();
    expect((await consume(pool.id, 100, {}, "hooli")).status).toBe(200);
    await flush(pool.id);
    await env.DB.prepare("DELETE FROM alerts WHERE subject = 'hooli'").run();
    await runCron(createScheduledController({ scheduledTime: Date.now(), cron: "* * * * *" }), env);
    expect(await alertsOf("budget_exhausted", "hooli")).toHaveLength(1);
    expect(await alertsOf("budget_95", "hooli")).toHaveLength(1);
  });
});
