import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { clearConfigCache } from "../../src/storage/config";
import { ADMIN, call, enqueue, eventually, KEYS, makePool, makeTemplate, scheduler } from "../support/helpers";

/** Issue 20: immediate work has its own lane: no pass over the backlog, settled on its own. */
describe("the immediate lane", () => {
  it("executes sent while a 2,000-request backlog drains run at once: answered 200, dispatched before the backlog is through", async () => {
    await env.DB.prepare("UPDATE tiers SET max_concurrent = 5000").run();
    clearConfigCache();
    const pool = await makePool({ capacity: 100_000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    const params = { simulate: { latency_ms: 0 } };
    await call("POST", "/admin/scheduler/stop", { token: ADMIN });
    const backlog: string[] = [];
    for (let b = 0; b < 20; b++) {
      const r = await enqueue({ requests: Array.from({ length: 100 }, () => ({ template, queue: "batch", params })) }, KEYS.globex);
      backlog.push(...r.body.results.map((x: { request: { id: string } }) => x.request.id));
    }
    await call("POST", "/admin/scheduler/start", { token: ADMIN });
    const executes = await Promise.all(Array.from({ length: 10 }, () => call("POST", "/api/execute", { token: KEYS.acme, json: { template, params } })));
    for (const r of executes) {
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(r.body.request).toMatchObject({ status: "completed", queue: "immediate", attempts: 1 });
    }
    await eventually(async () => (await call("GET", "/admin/scheduler/status", { token: ADMIN })).body.queued === 0, 30_000, "the backlog to drain");
    const seqs = (await Promise.all(backlog.map((id) => scheduler().get(id, null)))).map((v) => (v as unknown as { dispatch_seq: number }).dispatch_seq);
    const last = Math.max(...seqs);
    // Each execute was dispatched while the backlog still had requests left to dispatch.
    for (const r of executes) expect(r.body.request.dispatch_seq).toBeLessThan(last);
  }, 60_000);
});
