import { createScheduledController, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { dayKey } from "../../src/domain/calendar";
import { PRUNE_CHUNK_ROWS, RETENTION_KINDS } from "../../src/domain/retention";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { runCron } from "../../src/cron";
import { chunkQuery, PRUNABLE, type PrunableKind } from "../../src/storage/retention";
import { ADMIN, call, enqueue, expectError, makePool, makeTemplate, scheduler, settled } from "../support/helpers";

const DAY = 86_400_000;
const CLIENT = "ret-client";
const OLD_EVENTS = 100_000;
const OLD_REQUEST_LOG = 7_000;
/** Rows per generated INSERT: a recursive CTE makes them inside D1, so there is nothing to bind. */
const ROWS_PER_STATEMENT = 20_000;

/** `INSERT INTO <table> SELECT <select> FROM n` (n: a recursive CTE) for i in [from, from + count), in statements of ROWS_PER_STATEMENT. */
function generated(table: string, select: string, from: number, count: number): D1PreparedStatement[] {
  const out: D1PreparedStatement[] = [];
  for (let start = from; start < from + count; start += ROWS_PER_STATEMENT) {
    const end = Math.min(from + count, start + ROWS_PER_STATEMENT) - 1;
    out.push(env.DB.prepare(
      `WITH RECURSIVE n(i) AS (SELECT ${start} UNION ALL SELECT i + 1 FROM n WHERE i < ${end}) INSERT INTO ${table} SELECT ${select} FROM n`,
    ));
  }
  return out;
}

async function count(sql: string, ...binds: unknown[]): Promise<number> {
  return (await env.DB.prepare(sql).bind(...binds).first<{ n: number }>())!.n;
}

const cron = (now: number) => runCron(createScheduledController({ scheduledTime: now, cron: "* * * * *" }), env);

/** The retention_run log lines written while `fn` ran. */
async function retentionLines(fn: () => Promise<void>): Promise<Array<Record<string, any>>> {
  const spy = vi.spyOn(console, "log");
  await fn();
  const lines = spy.mock.calls.flatMap((args) => {
    try {
      const line = JSON.parse(String(args[0])) as Record<string, any>;
      return line.msg === "retention_run" ? [line] : [];
    } catch {
      return [];
    }
  });
  spy.mockRestore();
  return lines;
}

describe("retention", () => {
  afterEach(() => vi.restoreAllMocks());

  it("every pruning query finds its chunk through an index on its time column, not a scan", async () => {
    const expected: Record<PrunableKind, string> = {
      usage_events: "usage_events_at", request_log: "request_log_finished", alerts: "alerts_resolved_at",
      optimizer_savings: "optimizer_savings_at", scaling_events: "scaling_events_at", pool_samples: "pool_samples_at", queue_samples: "queue_samples_at",
      burst_sessions: "burst_sessions_state",
    };
    for (const kind of Object.keys(PRUNABLE) as PrunableKind[]) {
      const { results } = await env.DB.prepare(`EXPLAIN QUERY PLAN ${chunkQuery(kind)}`).bind(0, 10).all<{ detail: string }>();
      const details = results.map((r) => r.detail);
      expect(details.some((d) => d.includes(`INDEX ${expected[kind]} `)), `${kind}: ${details.join(" | ")}`).toBe(true);
      expect(details.filter((d) => /^SCAN /.test(d)), `${kind}: ${details.join(" | ")}`).toEqual([]);
    }
  });

  it("100,000 old usage events and old rows of every kind go over several cron runs, at most one chunk per kind per run; recent rows, rollups and monthly totals stay", async () => {
    const now = Date.now();
    const old = now - 100 * DAY;
    const recent = now - 2 * 3600_000;
    expect((await call("POST", "/admin/clients", { token: ADMIN, json: { id: CLIENT, name: "Retention", email: "ops@ret.example", tier: "standard" } })).status).toBe(201);

    // A finished request in the scheduler older than 35 days (its request-log entry delivered), and a recent one.
    const pool = await makePool({ capacity: 100 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    const [oldReq, newReq] = [(await enqueue({ template, queue: "fast" })).body.request.id, (await enqueue({ template, queue: "fast" })).body.request.id];
    await settled(oldReq, ["completed"]);
    await settled(newReq, ["completed"]);
    await scheduler().pass("test"); // delivers the request log
    await runInDurableObject(scheduler(), (_i: SchedulerObject, state) => {
      state.storage.sql.exec("UPDATE requests SET finished_at = ? WHERE id = ?", now - 36 * DAY, oldReq);
    });

    // Usage: 100,000 old events over ten days and two pools, 100 recent ones, all rolled up as the ledger
    // does (storage/usage.ts); and one old event whose day has no rollup at all, which must stay.
    const event = (prefix: string, at: string) =>
      `'${prefix}' || printf('%06d', i), CASE i % 2 WHEN 0 THEN 'openai-gpt4' ELSE 'email-sendgrid' END, '${CLIENT}', NULL, 'test', 'consume',
       1 + i % 5, (1 + i % 5) * CASE i % 2 WHEN 0 THEN 30000 ELSE 100000 END, ${at}`;
    const requestLog = (prefix: string, finished: string) =>
      `'${prefix}' || i, '${CLIENT}', 'content-generate', 'normal', 'completed', 1000, 900, 1, ${finished} - 1000, ${finished}, NULL`;
    await env.DB.batch([
      ...generated("usage_events", event("evt_old_", `${old} + (i % 10) * ${DAY} + i`), 0, OLD_EVENTS),
      ...generated("usage_events", event("evt_new_", `${recent} + i`), 0, 100),
      env.DB.prepare("INSERT INTO usage_events VALUES ('evt_unrolled', 'kv-storage', ?1, NULL, 'test', 'consume', 1, 500, ?2)").bind(CLIENT, old),
      env.DB.prepare(
        `INSERT INTO usage_daily (client_id, pool_id, day, units, cost_nano, events)
         SELECT client_id, pool_id, strftime('%Y-%m-%d', at / 1000, 'unixepoch'), SUM(units), SUM(cost_nano), COUNT(*)
         FROM usage_events WHERE client_id = ?1 AND event_id != 'evt_unrolled' GROUP BY 1, 2, 3`,
      ).bind(CLIENT),
      ...generated("request_log", requestLog("req_old_", String(old)), 0, OLD_REQUEST_LOG),
      ...generated("request_log", requestLog("req_new_", String(recent)), 0, 3),
      // Alerts: resolved long ago go; open or acknowledged ones stay however old; recently resolved stay.
      ...[["a1", "resolved", old], ["a2", "resolved", old], ["a3", "resolved", old], ["a4", "open", null], ["a5", "acknowledged", null], ["a6", "resolved", recent]].map(([id, state, resolvedAt]) =>
        env.DB.prepare(
          `INSERT INTO alerts (id, kind, subject, severity, state, message, dedupe_key, raised_at, updated_at, acked_at, resolved_at)
           VALUES (?1, 'pool_low', ?1, 'warning', ?2, 'm', 'ret:' || ?1, ?3, ?3, NULL, ?4)`,
        ).bind(`ret_${id}`, state, old - DAY, resolvedAt)),
      ...generated("optimizer_savings", `'sav_old_' || i, 'req_o' || i, '${CLIENT}', 'content-generate', 'caching', 10, 0, ${old}`, 0, 3),
      ...generated("optimizer_savings", `'sav_new_' || i, 'req_n' || i, '${CLIENT}', 'content-generate', 'caching', 10, 0, ${recent}`, 0, 2),
      ...generated("scaling_events", `'sce_old_' || i, 'ret-pool', ${old} + i, 'scale_up', 10, 20, 'r', 'cron', '{}'`, 0, 3),
      ...generated("scaling_events", `'sce_new_' || i, 'ret-pool', ${recent} + i, 'scale_up', 10, 20, 'r', 'cron', '{}'`, 0, 2),
      // Samples are kept 92 days by default: 93 days goes, 91 days stays.
      ...generated("pool_samples", `'ret-pool', ${now - 93 * DAY} + i, 1, 10`, 0, 3),
      ...generated("pool_samples", `'ret-pool', ${now - 91 * DAY} + i, 1, 10`, 0, 2),
      // Burst sessions: finished long ago go (ended, expired, denied); active or pending ones stay, as do recent ones.
      ...[["b1", "ended", old], ["b2", "expired", old], ["b3", "denied", old], ["b4", "active", old], ["b5", "pending", old], ["b6", "ended", recent]].map(([id, state, at]) =>
        env.DB.prepare(
          `INSERT INTO burst_sessions (id, client_id, state, percent, duration_ms, requested_at, updated_at) VALUES (?1, ?2, ?3, 150, 60000, ?4, ?4)`,
        ).bind(`ret_${id}`, CLIENT, state, at)),
      // Cached results: expired ones go (the cron's cache sweep), live ones stay.
      ...generated("result_cache", `'ret_exp_' || i, 'content-generate', '{}', 1, ${old}, ${now - 1000}`, 0, 2),
      env.DB.prepare("INSERT INTO result_cache VALUES ('ret_live', 'content-generate', '{}', 1, ?1, ?2)").bind(recent, now + DAY),
    ]);

    const monthly = async () => {
      const usage = await call("GET", `/api/usage/${CLIENT}?granularity=month&from=${dayKey(old)}&to=${dayKey(now)}`, { token: ADMIN });
      const cost = await call("GET", `/admin/reports/cost?group_by=client&period=month&from=${dayKey(old)}&to=${dayKey(now)}`, { token: ADMIN });
      expect(usage.status).toBe(200);
      expect(cost.status).toBe(200);
      return { usage: { ...usage.body, trace_id: null }, cost: cost.body.rows.filter((r: any) => r.key === CLIENT) };
    };
    const rollups = async () => (await env.DB.prepare("SELECT * FROM usage_daily WHERE client_id = ?1 ORDER BY pool_id, day").bind(CLIENT).all()).results;
    const [monthlyBefore, rollupsBefore] = [await monthly(), await rollups()];
    expect(monthlyBefore.usage.totals.events).toBe(OLD_EVENTS + 100);
    expect(monthlyBefore.usage.periods.length).toBeGreaterThanOrEqual(2);
    expect(monthlyBefore.cost.reduce((n: number, r: any) => n + r.count, 0)).toBe(OLD_EVENTS + 100);

    const oldLedger = () => count("SELECT COUNT(*) AS n FROM usage_events WHERE client_id = ?1 AND event_id LIKE 'evt_old_%'", CLIENT);
    const oldLog = () => count("SELECT COUNT(*) AS n FROM request_log WHERE id LIKE 'req_old_%'");
    let runs = 0;
    const lines: Array<Record<string, any>> = [];
    for (let left = OLD_EVENTS; left > 0; runs++) {
      expect(runs, "runs needed").toBeLessThan(Math.ceil(OLD_EVENTS / PRUNE_CHUNK_ROWS));
      const [ledgerBefore, logBefore] = [await oldLedger(), await oldLog()];
      const run = await retentionLines(() => cron(now));
      expect(run).toHaveLength(1); // one log line per run
      lines.push(run[0]!);
      left = await oldLedger();
      // Each run deletes exactly one chunk per kind while a backlog is left, never more.
      expect(ledgerBefore - left).toBe(Math.min(PRUNE_CHUNK_ROWS, ledgerBefore));
      expect(logBefore - (await oldLog())).toBe(Math.min(PRUNE_CHUNK_ROWS, logBefore));
      expect(run[0]!.pruned.usage_events).toBe(ledgerBefore - left);
    }
    expect(runs).toBe(OLD_EVENTS / PRUNE_CHUNK_ROWS);
    expect(lines[0]).toMatchObject({
      level: "info", trace_id: `cron-${now}`, chunk_rows: PRUNE_CHUNK_ROWS, failed: [],
      pruned: { usage_events: 5000, request_log: 5000, alerts: 3, optimizer_savings: 3, scaling_events: 3, pool_samples: 3, burst_sessions: 3, requests: 1 },
    });
    expect(Object.keys(lines[0]!.pruned).sort()).toEqual([...RETENTION_KINDS].sort());
    expect(lines[1]!.pruned).toMatchObject({ usage_events: 5000, request_log: 2000, alerts: 0, requests: 0 });
    expect(lines.at(-1)!.pruned).toMatchObject({ usage_events: 5000, request_log: 0 });

    // Everything old is gone; everything recent (and the never rolled-up event) is left.
    const left = await env.DB.prepare(
      `SELECT (SELECT COUNT(*) FROM usage_events WHERE client_id = ?1) AS events,
              (SELECT group_concat(event_id) FROM usage_events WHERE client_id = ?1 AND event_id NOT LIKE 'evt_new_%') AS kept_event,
              (SELECT COUNT(*) FROM request_log WHERE client_id = ?1) AS request_log,
              (SELECT group_concat(id) FROM (SELECT id FROM alerts WHERE id LIKE 'ret_%' ORDER BY id)) AS alerts,
              (SELECT group_concat(id) FROM (SELECT id FROM optimizer_savings WHERE client_id = ?1 ORDER BY id)) AS savings,
              (SELECT group_concat(id) FROM (SELECT id FROM scaling_events WHERE pool_id = 'ret-pool' ORDER BY id)) AS scaling,
              (SELECT COUNT(*) FROM pool_samples WHERE pool_id = 'ret-pool') AS samples,
              (SELECT group_concat(id) FROM (SELECT id FROM burst_sessions WHERE client_id = ?1 ORDER BY id)) AS bursts,
              (SELECT group_concat(key) FROM result_cache WHERE key LIKE 'ret_%') AS cache`,
    ).bind(CLIENT).first();
    expect(left).toEqual({
      events: 101, kept_event: "evt_unrolled", request_log: 3,
      alerts: "ret_a4,ret_a5,ret_a6", savings: "sav_new_0,sav_new_1", scaling: "sce_new_0,sce_new_1", samples: 2,
      bursts: "ret_b4,ret_b5,ret_b6", cache: "ret_live",
    });
    expect((await call("GET", `/api/execution/${oldReq}`, { token: ADMIN })).status).toBe(404);
    expect((await call("GET", `/api/execution/${newReq}`, { token: ADMIN })).body.request.status).toBe("completed");

    // Rollups are kept forever: history and monthly totals read them, unchanged.
    expect(await rollups()).toEqual(rollupsBefore);
    expect(await monthly()).toEqual(monthlyBefore);

    // /status counts today's events from the rollups, as the ledger has them, without counting the ledger.
    const dayStart = Math.floor(Date.now() / DAY) * DAY;
    const status = await call("GET", "/status", { token: ADMIN });
    expect(status.body.counts.usage_events).toBeGreaterThan(0);
    expect(status.body.counts.usage_events).toBe(await count("SELECT COUNT(*) AS n FROM usage_events WHERE at >= ?1", dayStart));

    // A further run finds nothing more.
    const idle = await retentionLines(() => cron(now));
    expect(Object.values(idle[0]!.pruned)).toEqual(RETENTION_KINDS.map(() => 0));
  });
});

describe("retention settings (admin API)", () => {
  it("lists every kind with its days, default and minimum; a change applies to the next run", async () => {
    const r = await call("GET", "/admin/retention", { token: ADMIN });
    expect(r.status).toBe(200);
    expect(r.body.chunk_rows).toBe(PRUNE_CHUNK_ROWS);
    expect(r.body.settings.map((s: any) => [s.kind, s.days, s.default_days, s.min_days])).toEqual([
      ["usage_events", 90, 90, 1], ["request_log", 90, 90, 1], ["alerts", 90, 90, 1], ["optimizer_savings", 90, 90, 1],
      ["scaling_events", 90, 90, 1], ["pool_samples", 92, 92, 1], ["queue_samples", 31, 31, 1], ["burst_sessions", 90, 90, 1], ["requests", 35, 35, 31],
    ]);
    expect(typeof r.body.settings[0].updated_at).toBe("number");

    const before = Date.now();
    const put = await call("PUT", "/admin/retention/scaling_events", { token: ADMIN, json: { days: 7 } });
    expect(put.status).toBe(200);
    expect(put.body.setting).toMatchObject({ kind: "scaling_events", days: 7, default_days: 90, min_days: 1 });
    expect(put.body.setting.updated_at).toBeGreaterThanOrEqual(before);
    expect((await call("GET", "/admin/retention", { token: ADMIN })).body.settings.find((s: any) => s.kind === "scaling_events").days).toBe(7);

    const now = Date.now();
    await env.DB.batch([8, 6].map((days) => env.DB.prepare(
      "INSERT INTO scaling_events (id, pool_id, at, action, from_capacity, to_capacity, reason, trigger) VALUES (?1, 'ret-set', ?2, 'scale_up', 1, 2, 'r', 'cron')",
    ).bind(`sce_set_${days}`, now - days * DAY)));
    await cron(now);
    const { results } = await env.DB.prepare("SELECT id FROM scaling_events WHERE pool_id = 'ret-set'").all();
    expect(results).toEqual([{ id: "sce_set_6" }]);
    expect((await call("PUT", "/admin/retention/scaling_events", { token: ADMIN, json: { days: 90 } })).status).toBe(200);
  });

  it("refuses bad days, an unknown kind, a kind below its minimum and a missing token, changing nothing", async () => {
    const settings = async () => (await call("GET", "/admin/retention", { token: ADMIN })).body.settings;
    const before = await settings();
    const bad: Array<[string, unknown, string]> = [
      ["usage_events", { days: 0 }, "days"],
      ["usage_events", { days: 3651 }, "days"],
      ["usage_events", { days: 1.5 }, "days"],
      ["usage_events", { days: "30" }, "days"],
      ["usage_events", {}, "days"],
      ["usage_events", { days: 30, extra: 1 }, ""],
      ["requests", { days: 30 }, "days"],
      ["usage_daily", { days: 30 }, "param.kind"],
      ["nope", { days: 30 }, "param.kind"],
    ];
    for (const [kind, json, path] of bad) {
      const r = await call("PUT", `/admin/retention/${kind}`, { token: ADMIN, json });
      expectError(r, 400, "validation_failed");
      expect(r.body.error.details.fields.map((f: any) => f.path), `${kind} ${JSON.stringify(json)}`).toContain(path);
    }
    expectError(await call("PUT", "/admin/retention/usage_events", { token: ADMIN, body: "{", headers: { "content-type": "application/json" } }), 400, "bad_request");
    expectError(await call("PUT", "/admin/retention/usage_events", { json: { days: 30 } }), 401, "unauthorized");
    expectError(await call("GET", "/admin/retention"), 401, "unauthorized");
    expect(await settings()).toEqual(before);
    // The smallest values allowed are taken.
    expect((await call("PUT", "/admin/retention/requests", { token: ADMIN, json: { days: 31 } })).body.setting.days).toBe(31);
    expect((await call("PUT", "/admin/retention/alerts", { token: ADMIN, json: { days: 3650 } })).body.setting.days).toBe(3650);
  });
});
