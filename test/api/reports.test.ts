import { createScheduledController } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { runCron } from "../../src/cron";
import { SAMPLE_RETENTION_MS } from "../../src/storage/pool-samples";
import { insertRequestLog, type FinishedRequest } from "../../src/storage/request-log";
import { ADMIN, call, enqueue, expectError, INTERNAL, KEYS, scheduler, settled } from "../support/helpers";

const utc = (y: number, m: number, d: number, h = 0, min = 0, s = 0, ms = 0) => Date.UTC(y, m - 1, d, h, min, s, ms);

/**
 * Seeded ledger rollups (seed.sql's clients and pools, plus one client since removed). Figures by hand:
 * 2025-12-28 is a Sunday (ISO week 2025-W52, Monday 2025-12-22), 2025-12-29 a Monday (2026-W01, since
 * 2026-01-01 is a Thursday), 2026-01-05 a Monday (2026-W02).
 */
const DAILY: Array<[client: string, pool: string, day: string, units: number, cost: number, events: number]> = [
  ["acme", "openai-gpt4", "2025-12-28", 100, 3_000_000, 2], // 100 x 30,000
  ["acme", "openai-gpt4", "2025-12-29", 50, 1_500_000, 1],
  ["globex", "openai-gpt35", "2025-12-31", 1000, 1_500_000, 1], // 1,000 x 1,500
  ["gone-client", "kv-storage", "2026-01-02", 1000, 500_000, 1], // 1,000 x 500; no such client any more
  ["acme", "email-sendgrid", "2026-01-04", 3, 300_000, 3], // 3 x 100,000
  ["globex", "openai-gpt4", "2026-01-05", 10, 300_000, 1],
  ["hooli", "openai-gpt4", "2026-01-10", 1_234_567, 37_037_010_000, 5], // 1,234,567 x 30,000
  ["initech", "sms-twilio", "2026-01-31", 2, 15_000_000, 2], // 2 x 7,500,000
];

function finished(id: string, template: string, status: FinishedRequest["status"], actual: number | null, finishedAt: number): FinishedRequest {
  return {
    id, client_id: "acme", template, queue: "normal", status, estimate_nano: 60_000_000, actual_nano: actual, attempts: 1,
    created_at: finishedAt - 1000, finished_at: finishedAt, error: status === "failed" ? "worker answered 500" : null,
  };
}

/** Finished requests around the week edge of 2025-12-28/29 (UTC). */
const LOG: FinishedRequest[] = [
  finished("req_r1", "content-generate", "completed", 60_000_000, utc(2025, 12, 29) - 1), // the last ms of Sunday: W52
  finished("req_r2", "content-generate", "completed", 58_500_000, utc(2025, 12, 29)), // Monday 00:00: W01
  finished("req_r3", "content-generate", "failed", null, utc(2025, 12, 30, 8)),
  finished("req_r4", "notify-sms", "completed", 7_500_000, utc(2026, 1, 1, 12)),
  finished("req_r5", "notify-email", "cancelled", null, utc(2026, 1, 2, 9)),
];

const T0 = utc(2026, 1, 1);
const MIN = 60_000;

beforeAll(async () => {
  await env.DB.batch(DAILY.map(([c, p, d, u, k, e]) =>
    env.DB.prepare("INSERT INTO usage_daily (client_id, pool_id, day, units, cost_nano, events) VALUES (?1, ?2, ?3, ?4, ?5, ?6)").bind(c, p, d, u, k, e)));
  await insertRequestLog(env.DB, LOG);
  // openai-gpt4 (capacity 10,000): full, half, a quarter, (a minute missed), empty.
  await env.DB.batch([[T0, 10_000], [T0 + MIN, 5000], [T0 + 2 * MIN, 2500], [T0 + 4 * MIN, 0]].map(([at, level]) =>
    env.DB.prepare("INSERT INTO pool_samples (pool_id, at, level, capacity) VALUES ('openai-gpt4', ?1, ?2, 10000)").bind(at, level)));
});

function report(path: string, query: Record<string, string | number>, token: string = ADMIN) {
  return call("GET", `${path}?${new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)]))}`, { token });
}
const cost = (query: Record<string, string | number>, token?: string) => report("/admin/reports/cost", query, token);
const usage = (query: Record<string, string | number>, token?: string) => report("/admin/reports/usage", query, token);
const utilization = (query: Record<string, string | number>, token?: string) => report("/admin/reports/utilization", query, token);

describe("cost report", () => {
  it("by client and ISO week: a Sunday closes its week, a Monday opens the next, across the year", async () => {
    const r = await cost({ group_by: "client", period: "week", from: "2025-12-22", to: "2026-01-11" });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ group_by: "client", period: "week", from: "2025-12-22", to: "2026-01-11", count_of: "usage_events" });
    expect(r.body.rows).toEqual([
      { period: "2025-W52", period_start: "2025-12-22", key: "acme", units: null, count: 2, cost_nano: 3_000_000, cost_usd: "$0.003" },
      { period: "2026-W01", period_start: "2025-12-29", key: "acme", units: null, count: 4, cost_nano: 1_800_000, cost_usd: "$0.0018" },
      { period: "2026-W01", period_start: "2025-12-29", key: "globex", units: null, count: 1, cost_nano: 1_500_000, cost_usd: "$0.0015" },
      { period: "2026-W01", period_start: "2025-12-29", key: "gone-client", units: null, count: 1, cost_nano: 500_000, cost_usd: "$0.0005" },
      { period: "2026-W02", period_start: "2026-01-05", key: "globex", units: null, count: 1, cost_nano: 300_000, cost_usd: "$0.0003" },
      { period: "2026-W02", period_start: "2026-01-05", key: "hooli", units: null, count: 5, cost_nano: 37_037_010_000, cost_usd: "$37.03701" },
    ]);
    expect(r.body.totals).toEqual({
      by_key: [
        { key: "hooli", units: null, count: 5, cost_nano: 37_037_010_000, cost_usd: "$37.03701" },
        { key: "acme", units: null, count: 6, cost_nano: 4_800_000, cost_usd: "$0.0048" },
        { key: "globex", units: null, count: 2, cost_nano: 1_800_000, cost_usd: "$0.0018" },
        { key: "gone-client", units: null, count: 1, cost_nano: 500_000, cost_usd: "$0.0005" },
      ],
      count: 14,
      cost_nano: 37_044_110_000,
      cost_usd: "$37.04411",
    });
  });

  it("by client as CSV: exact text, a header row, an attachment", async () => {
    const r = await cost({ group_by: "client", period: "week", from: "2025-12-22", to: "2026-01-11", format: "csv" });
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("text/csv; charset=utf-8");
    expect(r.headers.get("content-disposition")).toBe('attachment; filename="cost-by-client-week-2025-12-22-2026-01-11.csv"');
    expect(r.body).toBe(
      "period,period_start,client,events,cost_nano,cost_usd\r\n" +
      "2025-W52,2025-12-22,acme,2,3000000,$0.003\r\n" +
      "2026-W01,2025-12-29,acme,4,1800000,$0.0018\r\n" +
      "2026-W01,2025-12-29,globex,1,1500000,$0.0015\r\n" +
      "2026-W01,2025-12-29,gone-client,1,500000,$0.0005\r\n" +
      "2026-W02,2026-01-05,globex,1,300000,$0.0003\r\n" +
      "2026-W02,2026-01-05,hooli,5,37037010000,$37.03701\r\n",
    );
  });

  it("by pool and month, with units, as JSON and CSV", async () => {
    const r = await cost({ group_by: "pool", period: "month", from: "2025-12-01", to: "2026-01-31" });
    expect(r.status).toBe(200);
    expect(r.body.rows.map((x: any) => [x.period, x.key, x.units, x.count, x.cost_nano, x.cost_usd])).toEqual([
      ["2025-12", "openai-gpt35", 1000, 1, 1_500_000, "$0.0015"],
      ["2025-12", "openai-gpt4", 150, 3, 4_500_000, "$0.0045"],
      ["2026-01", "email-sendgrid", 3, 3, 300_000, "$0.0003"],
      ["2026-01", "kv-storage", 1000, 1, 500_000, "$0.0005"],
      ["2026-01", "openai-gpt4", 1_234_577, 6, 37_037_310_000, "$37.03731"],
      ["2026-01", "sms-twilio", 2, 2, 15_000_000, "$0.015"],
    ]);
    expect(r.body.totals.by_key[0]).toEqual({ key: "openai-gpt4", units: 1_234_727, count: 9, cost_nano: 37_041_810_000, cost_usd: "$37.04181" });
    expect(r.body.totals.cost_nano).toBe(37_059_110_000);

    const csv = await cost({ group_by: "pool", period: "month", from: "2025-12-01", to: "2026-01-31", format: "csv" });
    expect(csv.body).toBe(
      "period,period_start,pool,units,events,cost_nano,cost_usd\r\n" +
      "2025-12,2025-12-01,openai-gpt35,1000,1,1500000,$0.0015\r\n" +
      "2025-12,2025-12-01,openai-gpt4,150,3,4500000,$0.0045\r\n" +
      "2026-01,2026-01-01,email-sendgrid,3,3,300000,$0.0003\r\n" +
      "2026-01,2026-01-01,kv-storage,1000,1,500000,$0.0005\r\n" +
      "2026-01,2026-01-01,openai-gpt4,1234577,6,37037310000,$37.03731\r\n" +
      "2026-01,2026-01-01,sms-twilio,2,2,15000000,$0.015\r\n",
    );
  });

  it("a period counts only its days inside from..to", async () => {
    const r = await cost({ group_by: "client", period: "month", from: "2026-01-05", to: "2026-01-30" });
    expect(r.body.rows.map((x: any) => [x.period, x.period_start, x.key, x.cost_nano])).toEqual([
      ["2026-01", "2026-01-01", "globex", 300_000],
      ["2026-01", "2026-01-01", "hooli", 37_037_010_000],
    ]);
    const days = await cost({ group_by: "client", period: "day", from: "2025-12-28", to: "2025-12-29" });
    expect(days.body.rows.map((x: any) => [x.period, x.key, x.cost_nano])).toEqual([["2025-12-28", "acme", 3_000_000], ["2025-12-29", "acme", 1_500_000]]);
  });

  it("by template: what finished requests really cost, by the UTC day they finished", async () => {
    const r = await cost({ group_by: "template", period: "week", from: "2025-12-22", to: "2026-01-04" });
    expect(r.status).toBe(200);
    expect(r.body.count_of).toBe("requests");
    expect(r.body.rows.map((x: any) => [x.period, x.key, x.count, x.cost_nano, x.cost_usd])).toEqual([
      ["2025-W52", "content-generate", 1, 60_000_000, "$0.06"],
      ["2026-W01", "content-generate", 2, 58_500_000, "$0.0585"], // the failed one counts, at 0
      ["2026-W01", "notify-email", 1, 0, "$0.00"],
      ["2026-W01", "notify-sms", 1, 7_500_000, "$0.0075"],
    ]);
    const csv = await cost({ group_by: "template", period: "day", from: "2025-12-28", to: "2025-12-28", format: "csv" });
    expect(csv.body).toBe("period,period_start,template,requests,cost_nano,cost_usd\r\n2025-12-28,2025-12-28,content-generate,1,60000000,$0.06\r\n");
  });

  it("an empty range is an empty report, and CSV is then the header alone", async () => {
    const r = await cost({ group_by: "pool", period: "day", from: "2024-03-01", to: "2024-03-31" });
    expect(r.body.rows).toEqual([]);
    expect(r.body.totals).toEqual({ by_key: [], count: 0, cost_nano: 0, cost_usd: "$0.00" });
    const csv = await cost({ group_by: "pool", period: "day", from: "2024-03-01", to: "2024-03-31", format: "csv" });
    expect(csv.body).toBe("period,period_start,pool,units,events,cost_nano,cost_usd\r\n");
  });

  it("refuses bad input with 400 naming the field", async () => {
    const cases: Array<[Record<string, string>, string]> = [
      [{ group_by: "tier" }, "query.group_by"],
      [{ period: "year" }, "query.period"],
      [{ format: "xml" }, "query.format"],
      [{ from: "2026-02-30", to: "2026-03-01" }, "query.from"],
      [{ from: "2026-03-01", to: "2026-3-1" }, "query.to"],
      [{ from: "2026-03-02", to: "2026-03-01" }, "query.to"],
      [{ period: "day", from: "2025-01-01", to: "2026-01-02" }, "query.to"], // 367 days; 366 is the most by day
      [{ period: "month", from: "2023-01-01", to: "2026-01-02" }, "query.to"],
      [{ group: "client" }, "query"],
    ];
    for (const [query, path] of cases) {
      const r = await cost(query);
      expectError(r, 400, "validation_failed");
      expect(r.body.error.details.fields.map((f: any) => f.path).join(" "), JSON.stringify(query)).toContain(path);
    }
    expect((await cost({ period: "day", from: "2025-01-01", to: "2026-01-01" })).status).toBe(200);
    expect((await cost({ period: "week", from: "2024-01-01", to: "2025-12-31" })).status).toBe(200);
  });

  it("is for operators: 401 without a credential, 403 for an API key or the internal token", async () => {
    expectError(await cost({}, ""), 401, "unauthorized");
    expectError(await cost({}, KEYS.acme), 403, "forbidden");
    expectError(await cost({}, INTERNAL), 403, "forbidden");
    expectError(await usage({}, KEYS.acme), 403, "forbidden");
    expectError(await utilization({}, INTERNAL), 403, "forbidden");
  });
});

describe("usage report", () => {
  it("units, events and cost per pool and tier per month; a removed client's tier is null", async () => {
    const r = await usage({ step: "month", from: "2025-12-01", to: "2026-01-31" });
    expect(r.status).toBe(200);
    expect(r.body.rows.map((x: any) => [x.period, x.pool, x.tier, x.units, x.events, x.cost_nano, x.cost_usd])).toEqual([
      ["2025-12", "openai-gpt35", "premium", 1000, 1, 1_500_000, "$0.0015"],
      ["2025-12", "openai-gpt4", "enterprise", 150, 3, 4_500_000, "$0.0045"],
      ["2026-01", "email-sendgrid", "enterprise", 3, 3, 300_000, "$0.0003"],
      ["2026-01", "kv-storage", null, 1000, 1, 500_000, "$0.0005"],
      ["2026-01", "openai-gpt4", "basic", 1_234_567, 5, 37_037_010_000, "$37.03701"],
      ["2026-01", "openai-gpt4", "premium", 10, 1, 300_000, "$0.0003"],
      ["2026-01", "sms-twilio", "standard", 2, 2, 15_000_000, "$0.015"],
    ]);
    expect(r.body.totals).toEqual({ events: 16, cost_nano: 37_059_110_000, cost_usd: "$37.05911" });
  });

  it("filters by pool and tier, by week, and exports CSV", async () => {
    const byPool = await usage({ pool: "openai-gpt4", step: "week", from: "2025-12-22", to: "2026-01-11" });
    expect(byPool.body.rows.map((x: any) => [x.period, x.tier, x.units, x.cost_nano])).toEqual([
      ["2025-W52", "enterprise", 100, 3_000_000],
      ["2026-W01", "enterprise", 50, 1_500_000],
      ["2026-W02", "basic", 1_234_567, 37_037_010_000],
      ["2026-W02", "premium", 10, 300_000],
    ]);
    const byTier = await usage({ tier: "premium", step: "month", from: "2025-12-01", to: "2026-01-31", format: "csv" });
    expect(byTier.headers.get("content-disposition")).toBe('attachment; filename="usage-month-2025-12-01-2026-01-31.csv"');
    expect(byTier.body).toBe(
      "period,period_start,pool,tier,units,events,cost_nano,cost_usd\r\n" +
      "2025-12,2025-12-01,openai-gpt35,premium,1000,1,1500000,$0.0015\r\n" +
      "2026-01,2026-01-01,openai-gpt4,premium,10,1,300000,$0.0003\r\n",
    );
  });

  it("404 for an unknown pool, 400 for an unknown tier or step", async () => {
    expectError(await usage({ pool: "no-such-pool" }), 404, "pool_not_found");
    expectError(await usage({ tier: "gold" }), 400, "validation_failed");
    expectError(await usage({ step: "hour" }), 400, "validation_failed");
  });
});

describe("utilization report", () => {
  it("averages the minute samples per step; a step without samples is null", async () => {
    const r = await utilization({ pool: "openai-gpt4", from: T0, to: T0 + 5 * MIN, step_ms: 2 * MIN });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ from: T0, to: T0 + 5 * MIN, step_ms: 2 * MIN });
    expect(r.body.pools).toEqual([{
      pool: "openai-gpt4",
      buckets: [
        { start: T0, end: T0 + 2 * MIN, samples: 2, utilization: 0.25, level: 7500, min_level: 5000, capacity: 10_000 },
        { start: T0 + 2 * MIN, end: T0 + 4 * MIN, samples: 1, utilization: 0.75, level: 2500, min_level: 2500, capacity: 10_000 },
        { start: T0 + 4 * MIN, end: T0 + 5 * MIN, samples: 1, utilization: 1, level: 0, min_level: 0, capacity: 10_000 },
      ],
    }]);
    const before = await utilization({ pool: "openai-gpt4", from: T0 - 2 * MIN, to: T0, step_ms: MIN });
    expect(before.body.pools[0].buckets.map((b: any) => [b.samples, b.utilization])).toEqual([[0, null], [0, null]]);
  });

  it("lists every pool when none is named", async () => {
    const r = await utilization({ from: T0, to: T0 + 2 * MIN, step_ms: 2 * MIN });
    expect(r.body.pools.map((p: any) => p.pool)).toEqual(["d1-queries", "email-sendgrid", "kv-storage", "openai-gpt35", "openai-gpt4", "sms-twilio"]);
    expect(r.body.pools.find((p: any) => p.pool === "openai-gpt4").buckets[0].utilization).toBe(0.25);
    expect(r.body.pools.find((p: any) => p.pool === "sms-twilio").buckets[0].samples).toBe(0);
  });

  it("refuses bad ranges and steps, and unknown pools", async () => {
    const cases: Array<[Record<string, number | string>, string]> = [
      [{ from: T0, to: T0, step_ms: MIN }, "query.to"],
      [{ from: T0, to: T0 + MIN, step_ms: 1000 }, "query.step_ms"],
      [{ from: T0, to: T0 + SAMPLE_RETENTION_MS + 1, step_ms: 86_400_000 }, "query.from"],
      [{ from: T0, to: T0 + 2001 * MIN, step_ms: MIN }, "query.step_ms"],
      [{ from: "yesterday" }, "query.from"],
    ];
    for (const [query, path] of cases) {
      const r = await utilization(query);
      expectError(r, 400, "validation_failed");
      expect(r.body.error.details.fields[0].path, JSON.stringify(query)).toBe(path);
    }
    expect((await utilization({ from: T0, to: T0 + 2000 * MIN, step_ms: MIN })).status).toBe(200);
    expectError(await utilization({ pool: "no-such-pool" }), 404, "pool_not_found");
  });
});

describe("the feeds of the reports", () => {
  it("the scheduler delivers finished requests to request_log (completed, failed, cancelled) after a pass", async () => {
    const ok = await call("POST", "/api/execute", { token: KEYS.acme, json: { template: "content-generate-lite", params: { tokens_used: 1500 } } });
    expect(ok.body.request).toMatchObject({ status: "completed", actual_nano: 2_250_000 }); // 1,500 x 1,500
    const bad = await enqueue({ template: "notify-email", queue: "fast", max_attempts: 1, params: { simulate: { fail: "error" } } });
    const failed = await settled(bad.body.request.id, ["failed"]);
    const later = await enqueue({ template: "notify-email", queue: "batch", not_before: Date.now() + 3_600_000 });
    expect((await call("DELETE", `/api/queue/${later.body.request.id}`, { token: KEYS.acme })).status).toBe(200);

    await scheduler().pass("test");
    const rows = await env.DB.prepare("SELECT * FROM request_log WHERE id IN (?1, ?2, ?3) ORDER BY finished_at")
      .bind(ok.body.request.id, bad.body.request.id, later.body.request.id).all<FinishedRequest>();
    const byId = new Map(rows.results.map((r) => [r.id, r]));
    expect(byId.get(ok.body.request.id)).toMatchObject({
      client_id: "acme", template: "content-generate-lite", queue: "immediate", status: "completed", estimate_nano: 3_000_000, actual_nano: 2_250_000, attempts: 1, error: null,
    });
    expect(byId.get(bad.body.request.id)).toMatchObject({ template: "notify-email", status: "failed", actual_nano: null, attempts: 1, finished_at: failed.finished_at });
    expect(byId.get(bad.body.request.id)!.error).toContain("worker answered 500");
    expect(byId.get(later.body.request.id)).toMatchObject({ status: "cancelled", actual_nano: null, attempts: 0 });

    // The outbox is empty now: another pass delivers nothing new, and a redelivery changes nothing.
    await scheduler().pass("test");
    await insertRequestLog(env.DB, rows.results);
    const again = await env.DB.prepare("SELECT COUNT(*) AS n FROM request_log WHERE id IN (?1, ?2, ?3)")
      .bind(ok.body.request.id, bad.body.request.id, later.body.request.id).first<{ n: number }>();
    expect(again!.n).toBe(3);
  });

  it("the cron samples every pool once per scheduled minute and drops samples past the retention", async () => {
    const at = utc(2026, 11, 1, 10, 30);
    await env.DB.prepare("INSERT INTO pool_samples (pool_id, at, level, capacity) VALUES ('sms-twilio', ?1, 1, 500)").bind(at - SAMPLE_RETENTION_MS - 1).run();
    const controller = createScheduledController({ scheduledTime: at, cron: "* * * * *" });
    await runCron(controller, env);
    await runCron(controller, env);
    const { results } = await env.DB.prepare("SELECT pool_id, level, capacity FROM pool_samples WHERE at = ?1 ORDER BY pool_id").bind(at).all();
    expect(results.map((r: any) => r.pool_id)).toEqual(["d1-queries", "email-sendgrid", "kv-storage", "openai-gpt35", "openai-gpt4", "sms-twilio"]);
    expect(results.find((r: any) => r.pool_id === "sms-twilio")).toMatchObject({ capacity: 500 });
    const old = await env.DB.prepare("SELECT COUNT(*) AS n FROM pool_samples WHERE at < ?1").bind(at - SAMPLE_RETENTION_MS).first<{ n: number }>();
    expect(old!.n).toBe(0);
  });
});
