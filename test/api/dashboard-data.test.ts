import { createScheduledController } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { dayKey, monthStart, nextMonthStart } from "../../src/domain/calendar";
import { runCron } from "../../src/cron";
import { runRetention } from "../../src/services/retention";
import { raiseAlert } from "../../src/storage/alerts";
import { insertRequestLog } from "../../src/storage/request-log";
import { ADMIN, call, expectError, KEYS } from "../support/helpers";

const DAY = 86_400_000;
const MIN = 60_000;
const T0 = Date.now();
const today = dayKey(T0);

/** Clients made for this file: [id, client budget (null: the tier's), spent this month]; "risk-free" gets an unlimited override. */
const CLIENTS: Array<[string, number | null, number]> = [
  ["risk-half", 1_000_000_000_000, 500_000_000_000], // 50%
  ["risk-99", 100_000_000_000, 99_000_000_001], // 99.000000001%
  ["risk-zero", 0, 1], // spent against a zero budget: past it
  ["risk-third", 3, 2], // 66.6%
  ["risk-free", null, 5_000_000_000_000], // unlimited (override): never ranked
];

function json(r: { body: unknown }) {
  return r.body as any;
}

beforeAll(async () => {
  const db = env.DB;
  await db.batch([
    ...CLIENTS.flatMap(([id, budget, spent]) => [
      db.prepare("INSERT INTO clients (id, name, email, tier, monthly_budget_nano, status, created_at, updated_at) VALUES (?1, ?1, 'ops@example.com', 'standard', ?2, 'active', 0, 0)").bind(id, budget),
      db.prepare("INSERT INTO usage_daily (client_id, pool_id, day, units, cost_nano, events) VALUES (?1, 'openai-gpt4', ?2, 1, ?3, 1)").bind(id, today, spent),
    ]),
    db.prepare("INSERT INTO client_budgets (client_id, monthly_budget_nano, updated_at) VALUES ('risk-free', NULL, 0)"),
    // A suspended client spends nothing new: not ranked.
    db.prepare("INSERT INTO clients (id, name, email, tier, monthly_budget_nano, status, created_at, updated_at) VALUES ('risk-suspended', 'x', 'ops@example.com', 'basic', 1, 'suspended', 0, 0)"),
    db.prepare("INSERT INTO usage_daily (client_id, pool_id, day, units, cost_nano, events) VALUES ('risk-suspended', 'openai-gpt4', ?1, 1, 1000, 1)").bind(today),
    // 7 samples of one pool in the last hour and 2 older ones; 5 of the normal queue and 1 older.
    ...[1, 2, 3, 5, 8, 13, 21, 90, 150].map((k) =>
      db.prepare("INSERT INTO pool_samples (pool_id, at, level, capacity) VALUES ('openai-gpt4', ?1, ?2, 10000)").bind(T0 - k * MIN, 10_000 - k * 100)),
    ...[2, 4, 6, 8, 10, 75].map((k) =>
      db.prepare("INSERT INTO queue_samples (queue, at, depth, ready, dispatched) VALUES ('normal', ?1, ?2, ?2, ?3)").bind(T0 - k * MIN, k * 10, k)),
    // Spend in the last hour: 30 and 31 min ago (one step), 2 min ago; and 2 hours ago (outside).
    ...([[30, 1_000_000_007], [31, 2_000_000_000], [2, 333], [120, 9_000_000_000]] as const).map(([k, cost], i) =>
      db.prepare("INSERT INTO usage_events (event_id, pool_id, client_id, request_id, via, kind, units, cost_nano, at) VALUES (?1, 'openai-gpt4', 'acme', NULL, 'consume', 'consume', 1, ?2, ?3)")
        .bind(`evt_dash_${i}`, cost, T0 - k * MIN - 1000)),
  ]);
  await insertRequestLog(env.DB, [{
    id: "req_dashjson", client_id: "initech", template: "notify-email", queue: "fast", status: "failed", estimate_nano: 1, actual_nano: null,
    attempts: 3, created_at: T0 - 5000, finished_at: T0 - 1000,
    error: 'worker answered 503: {"error":{"code":"upstream_down","message":"SendGrid is down"},"trace_id":"t"}',
  }]);
});

describe("GET /admin/dashboard/data", () => {
  it("ranks budgets by use, closest to the limit first, with exact month-end projections", async () => {
    const r = await call("GET", "/admin/dashboard/data", { token: ADMIN });
    expect(r.status).toBe(200);
    const { at, budgets } = json(r);
    const start = monthStart(at);
    const length = BigInt(nextMonthStart(at) - start);
    const basis = BigInt(Math.min(nextMonthStart(at) - start, Math.max(at - start, DAY)));
    const projected = (spent: number) => Number((BigInt(spent) * length) / basis);

    // 4 demo clients (tier or own budgets) + 4 of ours with one; risk-free is unlimited, risk-suspended not active.
    expect(budgets.clients_with_budget).toBe(8);
    expect(budgets.clients_without_limit).toBe(1);
    expect(budgets.rows.map((b: any) => b.client_id)).toEqual(["risk-zero", "risk-99", "risk-third", "risk-half", "acme", "globex", "hooli", "initech"]);
    expect(budgets.rows[0]).toEqual({
      client_id: "risk-zero", budget_nano: 0, spent_nano: 1, used_permille: null, projected_nano: projected(1), projected_overrun: true,
      in_flight_nano: 0, remaining_nano: 0,
    });
    expect(budgets.rows[1]).toEqual({
      client_id: "risk-99", budget_nano: 100_000_000_000, spent_nano: 99_000_000_001, used_permille: 990,
      projected_nano: projected(99_000_000_001), projected_overrun: projected(99_000_000_001) > 100_000_000_000,
      in_flight_nano: 0, remaining_nano: 999_999_999,
    });
    expect(budgets.rows[2]).toMatchObject({ client_id: "risk-third", used_permille: 666, projected_nano: projected(2), projected_overrun: projected(2) > 3, remaining_nano: 1 });
    expect(budgets.rows[3]).toMatchObject({ client_id: "risk-half", used_permille: 500, projected_nano: projected(500_000_000_000), remaining_nano: 500_000_000_000 });
    expect(budgets.rows[4]).toMatchObject({ client_id: "acme", budget_nano: 10_000_000_000_000, spent_nano: 0, used_permille: 0, projected_nano: 0, projected_overrun: false });
    expect(budgets.month).toBe(today.slice(0, 7));
    expect(budgets.resets_at).toBe(nextMonthStart(at));
  });

  it("trends hold exactly the last hour's samples: pools, queues, and the ledger's spend per 5-minute step", async () => {
    const r = await call("GET", "/admin/dashboard/data", { token: ADMIN });
    const { at, trends } = json(r);
    expect(trends.to).toBe(at);
    expect(trends.from).toBe(at - 60 * MIN);
    expect(trends.pools.map((p: any) => p.pool)).toEqual(["openai-gpt4"]);
    const gpt4 = trends.pools[0];
    expect(gpt4.samples.map((s: any) => s.at)).toEqual([21, 13, 8, 5, 3, 2, 1].map((k) => T0 - k * MIN));
    expect(gpt4.samples[0]).toEqual({ at: T0 - 21 * MIN, level: 7900, utilization: 1 - 7900 / 10000 });
    expect(trends.queues.map((q: any) => q.queue)).toEqual(["immediate", "fast", "normal", "batch", "deferred"]);
    const normal = trends.queues[2];
    expect(normal.samples).toEqual([10, 8, 6, 4, 2].map((k) => ({ at: T0 - k * MIN, depth: k * 10, ready: k * 10, dispatched: k })));
    expect(trends.queues[0].samples).toEqual([]);

    expect(trends.spend.step_ms).toBe(5 * MIN);
    expect(trends.spend.steps).toHaveLength(12);
    expect(trends.spend.steps.map((s: any) => s.from)).toEqual(Array.from({ length: 12 }, (_, i) => trends.from + i * 5 * MIN));
    const stepOf = (k: number) => Math.floor((T0 - k * MIN - 1000 - trends.from) / (5 * MIN));
    const expected = Array(12).fill(0);
    expected[stepOf(30)] += 1_000_000_007;
    expected[stepOf(31)] += 2_000_000_000;
    expected[stepOf(2)] += 333;
    expect(trends.spend.steps.map((s: any) => s.cost_nano)).toEqual(expected);
    expect(trends.spend.total_nano).toBe(3_000_000_340);
  });

  it("counts open alerts per severity; acknowledged ones are not counted", async () => {
    const before = json(await call("GET", "/admin/dashboard/data", { token: ADMIN })).open_alerts;
    const raise = (severity: "critical" | "warning" | "info", n: number) => raiseAlert(env.DB, {
      kind: "worker_failures", subject: `count-${severity}-${n}`, severity, message: "m", details: {}, dedupeKey: `count-${severity}-${n}`, oncePerKey: false,
    }, Date.now());
    const critical = await raise("critical", 1);
    await raise("warning", 1);
    await raise("warning", 2);
    await raise("info", 1);
    const after = json(await call("GET", "/admin/dashboard/data", { token: ADMIN }));
    expect(after.open_alerts).toEqual({ critical: before.critical + 1, warning: before.warning + 2, info: before.info + 1 });
    expect(after.scheduler_running).toBe(true);
    expect((await call("POST", `/admin/alerts/${critical!.alert.id}/ack`, { token: ADMIN })).status).toBe(200);
    expect(json(await call("GET", "/admin/dashboard/data", { token: ADMIN })).open_alerts.critical).toBe(before.critical);
  });

  it("is for operators: no credential 401, a client key 403", async () => {
    expectError(await call("GET", "/admin/dashboard/data"), 401, "unauthorized");
    expectError(await call("GET", "/admin/dashboard/data", { token: KEYS.acme }), 403, "forbidden");
  });
});

describe("the page draws the same figures", () => {
  /** Visible text of a fragment: no tags, no attribute values (tooltips). */
  const text = (h: string) => h.replace(/<[^>]*>/g, " ");

  it("budgets in risk order, the overrun marked, money to the cent with the exact amount in the tooltip", async () => {
    const page: string = (await call("GET", "/admin/dashboard/panels", { token: ADMIN })).body;
    const order = [...page.matchAll(/<tr data-client="([^"]+)">/g)].map((m) => m[1]);
    expect(order).toEqual(["risk-zero", "risk-99", "risk-third", "risk-half", "acme", "globex", "hooli", "initech"]);
    const zero = page.slice(page.indexOf('<tr data-client="risk-zero">'), page.indexOf('<tr data-client="risk-99">'));
    expect(zero).toContain('data-overrun="true"');
    expect(zero).toContain("over budget");
    const half = page.slice(page.indexOf('<tr data-client="risk-half">'), page.indexOf('<tr data-client="acme">'));
    expect(half).toContain('<span class="money" data-nano="500000000000" title="500,000,000,000 nano-dollars ($500.00)">$500.00</span>');
    expect(half).toContain("50.0%");
    const risk99 = page.slice(page.indexOf('<tr data-client="risk-99">'), page.indexOf('<tr data-client="risk-third">'));
    expect(risk99).toContain('title="99,000,000,001 nano-dollars ($99.000000001)">$99.00</span>');
    expect(risk99).toContain("99.0%");
    expect(text(page)).not.toMatch(/\$[\d,]+\.\d{3}/);
  });

  it("a chart and a pool's sparkline have one point per sample of the last hour", async () => {
    const page: string = (await call("GET", "/admin/dashboard/panels", { token: ADMIN })).body;
    const chart = page.slice(page.indexOf('<figure class="chart" id="trend-pools">'), page.indexOf('<figure class="chart" id="trend-queue-depth">'));
    const line = /<polyline class="line s0" data-series="openai-gpt4" data-points="7" points="([^"]+)">/.exec(chart);
    expect(line).not.toBeNull();
    expect(line![1]!.split(" ")).toHaveLength(7);
    const spark = /<tr data-pool="openai-gpt4">[\s\S]*?<polyline class="line s0" data-series="openai-gpt4" data-points="(\d+)" points="([^"]+)">/.exec(page);
    expect(spark![1]).toBe("7");
    expect(spark![2]!.split(" ")).toHaveLength(7);
    const depth = page.slice(page.indexOf('id="trend-queue-depth"'), page.indexOf('id="trend-dispatch"'));
    expect(depth).toMatch(/data-series="normal" data-points="5" points="[^"]+"/);
    expect(depth).toContain("requests queued");
    expect(depth).toContain("-60 min");
    const spend = page.slice(page.indexOf('id="trend-spend"'));
    expect(spend).toMatch(/data-series="spend" data-points="12"/);
    // The last 60 minutes' spend, to the cent: $3.00000034 → $3.00.
    expect(spend).toContain('title="3,000,000,340 nano-dollars ($3.00000034)">$3.00</span>');
  });

  it("the header counts alerts by severity; a critical alert puts the alerts panel first", async () => {
    const alert = await raiseAlert(env.DB, {
      kind: "worker_failures", subject: "order-check", severity: "critical", message: "m", details: {}, dedupeKey: "order-check", oncePerKey: false,
    }, Date.now());
    const page: string = (await call("GET", "/admin/dashboard", { token: ADMIN })).body;
    const header = page.slice(page.indexOf("<header>"), page.indexOf("</header>"));
    const critical = Number(/data-severity="critical" data-count="(\d+)"/.exec(header)![1]);
    expect(critical).toBeGreaterThanOrEqual(1);
    expect(header).toContain('class="count sev-critical hot"');
    expect(header).toContain('href="#alerts"');
    expect(page.indexOf('<section id="alerts">')).toBeLessThan(page.indexOf('<section id="scheduler">'));

    // Acknowledge every critical alert: the panel goes back after the scheduler.
    const open = json(await call("GET", "/admin/alerts?state=open&severity=critical&limit=100", { token: ADMIN })).alerts as Array<{ id: string }>;
    expect(open.map((a) => a.id)).toContain(alert!.alert.id);
    for (const a of open) expect((await call("POST", `/admin/alerts/${a.id}/ack`, { token: ADMIN })).status).toBe(200);
    const calm: string = (await call("GET", "/admin/dashboard", { token: ADMIN })).body;
    expect(calm).toContain('data-severity="critical" data-count="0"');
    expect(calm).not.toContain("sev-critical hot");
    expect(calm.indexOf('<section id="alerts">')).toBeGreaterThan(calm.indexOf('<section id="scheduler">'));
  });

  it("a failure shows its code and message, the raw text only in the tooltip", async () => {
    const page: string = (await call("GET", "/admin/dashboard/panels", { token: ADMIN })).body;
    const row = page.slice(page.indexOf('<tr data-request="req_dashjson">'));
    expect(row).toContain("<code>upstream_down</code> SendGrid is down</td>");
    expect(text(row.slice(0, row.indexOf("</tr>")))).not.toContain("{");
  });
});

describe("the minute cron samples the queues", () => {
  it("one row per queue at the scheduled minute; a repeated run of the same minute adds nothing", async () => {
    const minute = Math.floor(Date.now() / MIN) * MIN + 7 * DAY; // a minute no other sample uses
    const count = () => env.DB.prepare("SELECT queue, depth, ready, dispatched FROM queue_samples WHERE at = ?1 ORDER BY queue").bind(minute).all();
    await runCron(createScheduledController({ scheduledTime: minute, cron: "* * * * *" }), env);
    const rows = (await count()).results;
    expect(rows.map((r: any) => r.queue)).toEqual(["batch", "deferred", "fast", "immediate", "normal"]);
    for (const r of rows as any[]) expect(r).toEqual({ queue: r.queue, depth: 0, ready: 0, dispatched: 0 });
    await runCron(createScheduledController({ scheduledTime: minute, cron: "* * * * *" }), env);
    expect((await count()).results).toHaveLength(5);
  });
});

describe("queue samples are kept 31 days", () => {
  it("the retention run prunes older ones (kind queue_samples) and keeps the rest", async () => {
    const now = Date.now();
    await env.DB.batch([40, 32, 30, 1].map((days) =>
      env.DB.prepare("INSERT INTO queue_samples (queue, at, depth, ready, dispatched) VALUES ('batch', ?1, 1, 1, 0)").bind(now - days * DAY)));
    const r = await call("GET", "/admin/retention", { token: ADMIN });
    expect(r.body.settings.find((s: any) => s.kind === "queue_samples")).toMatchObject({ days: 31, default_days: 31, min_days: 1 });
    const run = await runRetention(env, now, "t-queue-samples");
    expect(run.pruned.queue_samples).toBe(2);
    const left = await env.DB.prepare("SELECT at FROM queue_samples WHERE queue = 'batch' AND at <= ?1 ORDER BY at").bind(now).all<{ at: number }>();
    expect(left.results.map((x) => x.at)).toEqual([now - 30 * DAY, now - DAY]);
  });
});
