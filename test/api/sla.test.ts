import { runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { ADMIN, call, enqueue, expectError, KEYS, scheduler, settled } from "../support/helpers";

/** Seed finished requests straight into the scheduler's storage: a history with known times. */
async function seed(rows: Array<{ id: string; client: string; tier: string; queue: string; status: string; ready: number; start: number | null; end: number | null }>) {
  await runInDurableObject(scheduler(), (_i: SchedulerObject, state) => {
    for (const r of rows) {
      state.storage.sql.exec(
        `INSERT INTO requests (id, client_id, tier, max_concurrent, template, queue, status, priority, attempts, max_attempts,
           estimate_nano, created_at, updated_at, not_before, ready_at, first_started_at, started_at, finished_at)
         VALUES (?, ?, ?, 10, 'notify-email', ?, ?, 50, 1, 1, 0, ?, ?, ?, ?, ?, ?, ?)`,
        r.id, r.client, r.tier, r.queue, r.status, r.ready, r.ready, r.ready, r.ready, r.start, r.start, r.end,
      );
    }
  });
}

const id = (n: string) => `req_${n.padStart(32, "0")}`;
const putTarget = (tier: string, queue: string, body: unknown) => call("PUT", `/admin/sla/targets/${tier}/${queue}`, { token: ADMIN, json: body });

describe("SLA attainment", () => {
  it("is computed exactly for a seeded history", async () => {
    expect((await putTarget("premium", "fast", { max_wait_ms: 1000, max_exec_ms: 5000, target_percent: 90 })).status).toBe(200);
    const T = Date.now() - 3_600_000;
    const c = "sla-seeded";
    await seed([
      { id: id("a1"), client: c, tier: "premium", queue: "fast", status: "completed", ready: T, start: T + 500, end: T + 2000 }, // met
      { id: id("a2"), client: c, tier: "premium", queue: "fast", status: "completed", ready: T, start: T + 1000, end: T + 6000 }, // met, both limits exact
      { id: id("a3"), client: c, tier: "premium", queue: "fast", status: "completed", ready: T, start: T + 1001, end: T + 1500 }, // waited 1 ms too long
      { id: id("a4"), client: c, tier: "premium", queue: "fast", status: "completed", ready: T, start: T + 100, end: T + 5101 }, // ran 1 ms too long
      { id: id("a5"), client: c, tier: "premium", queue: "fast", status: "failed", ready: T, start: T + 100, end: T + 200 }, // failed
      { id: id("a6"), client: c, tier: "premium", queue: "fast", status: "cancelled", ready: T, start: null, end: T + 500 }, // excluded
      { id: id("a7"), client: c, tier: "premium", queue: "fast", status: "failed", ready: T, start: null, end: T + 300 }, // failed before dispatch
      { id: id("a8"), client: c, tier: "premium", queue: "fast", status: "completed", ready: T + 20_000, start: T + 20_100, end: T + 20_200 }, // after the window
      { id: id("a9"), client: c, tier: "premium", queue: "normal", status: "completed", ready: T, start: T + 50_000, end: T + 60_000 }, // default target: met
    ]);
    const r = await call("GET", `/api/sla?from=${T}&to=${T + 10_000}&client_id=${c}`, { token: ADMIN });
    expect(r.status).toBe(200);
    expect(r.body.overall).toEqual({ total: 6, met: 2, breached: 4, attainment_percent: 33.33 });
    expect(r.body.tiers).toHaveLength(1);
    expect(r.body.tiers[0].queues).toHaveLength(1);
    expect(r.body.tiers[0].queues[0]).toMatchObject({
      tier: "premium", queue: "fast", total: 6, met: 2, breached: 4, attainment_percent: 33.33, target_percent: 90, meets_target: false,
    });
    expect(r.body.tiers[0].queues[0].breached_examples.sort()).toEqual([id("a3"), id("a4"), id("a5"), id("a7")].sort());
    const wide = await call("GET", `/api/sla?from=${T}&to=${T + 100_000}&client_id=${c}`, { token: ADMIN });
    expect(wide.body.overall).toEqual({ total: 8, met: 4, breached: 4, attainment_percent: 50 });
    expect(wide.body.tiers[0].queues.map((q: any) => [q.queue, q.met, q.breached])).toEqual([["fast", 3, 4], ["normal", 1, 0]]);
    const one = await call("GET", `/api/sla?from=${T}&to=${T + 100_000}&client_id=${c}&queue=normal`, { token: ADMIN });
    expect(one.body.overall).toEqual({ total: 1, met: 1, breached: 0, attainment_percent: 100 });
  });

  it("a request's own verdict, for its client", async () => {
    const r = await enqueue({ template: "notify-email", queue: "fast" });
    await scheduler().pass("test");
    await settled(r.body.request.id, ["completed"]);
    const sla = await call("GET", `/api/execution/${r.body.request.id}/sla`, { token: KEYS.acme });
    expect(sla.status).toBe(200);
    expect(sla.body).toMatchObject({ request_id: r.body.request.id, tier: "enterprise", queue: "fast", wait: "met", execution: "met", status: "met" });
    expect(sla.body.target).toEqual({ tier: "enterprise", queue: "fast", max_wait_ms: 10_000, max_exec_ms: 60_000, target_percent: 99 });
    expect(sla.body.exec_ms).toBeGreaterThanOrEqual(0);
    expectError(await call("GET", `/api/execution/${r.body.request.id}/sla`, { token: KEYS.globex }), 404, "request_not_found");
    expectError(await call("GET", `/api/execution/${r.body.request.id}/sla`), 401, "unauthorized");
    expectError(await call("GET", "/api/execution/req_nope/sla", { token: KEYS.acme }), 400, "validation_failed");
  });

  it("breaches raise an sla_breach alert for the tier and queue; it resolves when the window is clean", async () => {
    await putTarget("standard", "batch", { max_wait_ms: 1000, max_exec_ms: 5000, target_percent: 95 });
    const T = Date.now() - 60_000;
    await seed([
      { id: id("b1"), client: "initech", tier: "standard", queue: "batch", status: "completed", ready: T, start: T + 100, end: T + 200 },
      { id: id("b2"), client: "initech", tier: "standard", queue: "batch", status: "completed", ready: T, start: T + 3000, end: T + 3100 },
    ]);
    const check = () => runInDurableObject(scheduler(), async (instance: SchedulerObject) => {
      const i = (instance as unknown as { health: { slaCheckedAt: number; alertsCheckedAt: number; checkAlerts(now: number): Promise<void> } }).health;
      i.slaCheckedAt = 0;
      i.alertsCheckedAt = 0;
      await i.checkAlerts(Date.now());
    });
    await check();
    const open = await call("GET", "/admin/alerts?kind=sla_breach&state=open", { token: ADMIN });
    const alert = open.body.alerts.find((a: any) => a.subject === "standard/batch");
    expect(alert).toMatchObject({ kind: "sla_breach", severity: "warning" });
    expect(alert.details).toMatchObject({ met: 1, breached: 1, attainment_percent: 50, target_percent: 95, examples: [id("b2")] });
    // the window moves on (here: the target is relaxed) and the alert resolves
    await putTarget("standard", "batch", { max_wait_ms: 10_000, max_exec_ms: 5000, target_percent: 95 });
    await check();
    const after = await call("GET", `/admin/alerts/${alert.id}`, { token: ADMIN });
    expect(after.body.alert.state).toBe("resolved");
  });

  it("targets: defaults for every tier and queue, set one, back to the default; bad input 400; authz", async () => {
    const all = await call("GET", "/admin/sla/targets", { token: ADMIN });
    expect(all.body.targets).toHaveLength(20);
    const put = await putTarget("basic", "deferred", { max_wait_ms: 1000, max_exec_ms: 2000, target_percent: 99.5 });
    expect(put.body.target).toEqual({ tier: "basic", queue: "deferred", max_wait_ms: 1000, max_exec_ms: 2000, target_percent: 99.5 });
    expect((await call("GET", "/admin/sla/targets", { token: ADMIN })).body.targets.find((t: any) => t.tier === "basic" && t.queue === "deferred").target_percent).toBe(99.5);
    const back = await call("DELETE", "/admin/sla/targets/basic/deferred", { token: ADMIN });
    expect(back.body.target).toEqual({ tier: "basic", queue: "deferred", max_wait_ms: 691_200_000, max_exec_ms: 60_000, target_percent: 90 });
    const bad = await putTarget("basic", "deferred", { max_wait_ms: 0, max_exec_ms: "x", target_percent: 101, extra: true });
    expectError(bad, 400, "validation_failed");
    for (const f of ["max_wait_ms", "max_exec_ms", "target_percent", "extra"]) expect(JSON.stringify(bad.body.error.details)).toContain(f);
    expectError(await putTarget("gold", "fast", { max_wait_ms: 1, max_exec_ms: 1, target_percent: 50 }), 400, "validation_failed");
    expectError(await call("PUT", "/admin/sla/targets/basic/fast", { token: KEYS.acme, json: { max_wait_ms: 1, max_exec_ms: 1, target_percent: 50 } }), 403, "forbidden");
    expectError(await call("GET", "/api/sla?from=10&to=5", { token: ADMIN }), 400, "validation_failed");
    expectError(await call("GET", "/api/sla?client_id=globex", { token: KEYS.acme }), 403, "forbidden");
    expectError(await call("GET", "/api/sla", { token: KEYS.hooliReadOnly.replace("readonly", "nope") }), 401, "unauthorized");
    const mine = await call("GET", "/api/sla", { token: KEYS.acme });
    expect(mine.body.client_id).toBe("acme");
  });
});
