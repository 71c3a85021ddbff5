import { createExecutionContext, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app";
import dashboard from "../../ops/grafana-dashboard.json?raw";
import rules from "../../ops/prometheus-rules.yml?raw";
import { ALERT_KINDS, queueAlerts } from "../../src/domain/alerts";
import { histogramOf } from "../../src/domain/histogram";
import { exposition } from "../../src/domain/prometheus";
import type { PoolObject } from "../../src/objects/pool";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { poolStub } from "../../src/objects/pool/stub";
import { raiseAlert, resolveAlerts } from "../../src/storage/alerts";
import { ADMIN, call, consume, enqueue, eventually, expectError, INTERNAL, KEYS, makePool, makeTemplate, scheduler, settled } from "../support/helpers";

const METRICS = "test-metrics-token";

/** The families docs/operations.md documents, with their type and the only labels they may carry. */
const DOCUMENTED: Record<string, { type: string; labels: string[] }> = {
  rm_pool_info: { type: "gauge", labels: ["pool", "unit", "status", "sharing"] },
  rm_pool_level: { type: "gauge", labels: ["pool"] },
  rm_pool_capacity: { type: "gauge", labels: ["pool"] },
  rm_pool_utilization_ratio: { type: "gauge", labels: ["pool"] },
  rm_pool_reserved: { type: "gauge", labels: ["pool"] },
  rm_pool_denials_total: { type: "counter", labels: ["pool"] },
  rm_pool_usage_events_pending: { type: "gauge", labels: ["pool"] },
  rm_pool_leased: { type: "gauge", labels: ["pool"] },
  rm_pool_consumes_total: { type: "counter", labels: ["pool", "path", "outcome"] },
  rm_queue_depth: { type: "gauge", labels: ["queue"] },
  rm_queue_oldest_wait_seconds: { type: "gauge", labels: ["queue"] },
  rm_queue_wait_seconds: { type: "histogram", labels: ["queue"] },
  rm_scheduler_running: { type: "gauge", labels: [] },
  rm_scheduler_in_flight: { type: "gauge", labels: [] },
  rm_scheduler_settlements_owed: { type: "gauge", labels: [] },
  rm_scheduler_shard_queued: { type: "gauge", labels: ["shard"] },
  rm_scheduler_shard_max_queued: { type: "gauge", labels: [] },
  rm_scheduler_dispatches_total: { type: "counter", labels: ["template"] },
  rm_scheduler_completions_total: { type: "counter", labels: ["template"] },
  rm_scheduler_failures_total: { type: "counter", labels: ["template"] },
  rm_scheduler_retries_total: { type: "counter", labels: ["template"] },
  rm_scheduler_timeouts_total: { type: "counter", labels: ["template"] },
  rm_http_request_duration_seconds: { type: "histogram", labels: ["method", "route", "status_class"] },
  rm_rpc_duration_seconds: { type: "histogram", labels: ["via", "method"] },
  rm_rpc_calls_total: { type: "counter", labels: ["via", "method", "outcome"] },
  rm_spend_nanodollars_total: { type: "counter", labels: ["pool"] },
  rm_spend_month_nanodollars: { type: "gauge", labels: ["pool"] },
  rm_savings_nanodollars_total: { type: "counter", labels: ["strategy"] },
  rm_client_budget_nanodollars: { type: "gauge", labels: ["client"] },
  rm_client_spend_month_nanodollars: { type: "gauge", labels: ["client"] },
  rm_alerts_open: { type: "gauge", labels: ["kind"] },
};
const QUEUES = ["immediate", "fast", "normal", "batch", "deferred"];

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
interface Family {
  help: string;
  type: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/y;

/**
 * A strict reader of the text format 0.0.4 as Prometheus writes it: HELP then TYPE once per family,
 * before its samples; every sample belongs to a declared family (histograms through _bucket, _sum and
 * _count); label values unescaped; values are Go floats.
 */
function parseExposition(text: string): Map<string, Family> {
  expect(text.endsWith("\n")).toBe(true);
  const families = new Map<string, Family>();
  let current: string | null = null;
  for (const line of text.slice(0, -1).split("\n")) {
    const meta = line.match(/^# (HELP|TYPE) (\S+) (.*)$/);
    if (meta) {
      const [, what, name, rest] = meta as unknown as [string, "HELP" | "TYPE", string, string];
      expect(name, line).toMatch(NAME);
      if (what === "HELP") {
        expect(families.has(name), `${name} declared twice`).toBe(false);
        families.set(name, { help: rest, type: "", samples: [] });
        current = name;
      } else {
        expect(current, `TYPE ${name} without HELP first`).toBe(name);
        expect(["counter", "gauge", "histogram", "summary", "untyped"]).toContain(rest);
        families.get(name)!.type = rest;
      }
      continue;
    }
    expect(line.startsWith("#"), `unexpected comment: ${line}`).toBe(false);
    const m = line.match(SAMPLE);
    expect(m, `not a sample line: ${line}`).not.toBeNull();
    const [, name, , labelText = "", valueText] = m!;
    const labels: Record<string, string> = {};
    LABEL.lastIndex = 0;
    while (LABEL.lastIndex < labelText.length) {
      const l = LABEL.exec(labelText);
      expect(l, `bad labels in: ${line}`).not.toBeNull();
      expect(labels[l![1]!], `label ${l![1]} twice in: ${line}`).toBeUndefined();
      labels[l![1]!] = l![2]!.replace(/\\(.)/g, (_, ch: string) => (ch === "n" ? "\n" : ch));
    }
    const value = valueText === "+Inf" ? Infinity : valueText === "-Inf" ? -Infinity : Number(valueText);
    expect(valueText === "NaN" || !Number.isNaN(value), `bad value in: ${line}`).toBe(true);
    const family = families.get(name!) ?? families.get(name!.replace(/_(bucket|sum|count)$/, ""));
    expect(family, `sample of an undeclared family: ${line}`).toBeDefined();
    expect(family === families.get(current!), `sample outside its family's block: ${line}`).toBe(true);
    if (family!.type !== "histogram") expect(name).toBe(current);
    family!.samples.push({ name: name!, labels, value });
  }
  return families;
}

async function scrape(token = METRICS): Promise<Map<string, Family>> {
  const r = await call("GET", "/metrics", { token });
  expect(r.status, String(r.body)).toBe(200);
  expect(r.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
  return parseExposition(r.body as string);
}

/** The value of the one sample of `name` whose labels include `labels`; undefined when there is none. */
function value(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  const base = name.replace(/_(bucket|sum|count)$/, "");
  const family = families.get(name) ?? families.get(base);
  const found = family?.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) ?? [];
  expect(found.length, `${name} ${JSON.stringify(labels)} matches ${found.length} samples`).toBeLessThanOrEqual(1);
  return found[0]?.value;
}

/** The cumulative buckets of one histogram series, in `le` order, ending with +Inf. */
function buckets(families: Map<string, Family>, name: string, labels: Record<string, string>): Array<{ le: number; n: number }> {
  return families.get(name)!.samples
    .filter((s) => s.name === `${name}_bucket` && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .map((s) => ({ le: s.labels.le === "+Inf" ? Infinity : Number(s.labels.le), n: s.value }));
}

const start = () => call("POST", "/admin/scheduler/start", { token: ADMIN });
const stop = () => call("POST", "/admin/scheduler/stop", { token: ADMIN });

beforeAll(async () => {
  expect((await start()).status).toBe(200);
});

describe("GET /metrics", () => {
  it("answers the metrics token and the admin token; 401 without a valid credential, 403 for an API key or the internal token", async () => {
    expect((await call("GET", "/metrics", { token: METRICS })).status).toBe(200);
    expect((await call("GET", "/metrics", { token: ADMIN })).status).toBe(200);
    expectError(await call("GET", "/metrics"), 401, "unauthorized");
    expectError(await call("GET", "/metrics", { token: "not-a-token" }), 401, "unauthorized");
    expectError(await call("GET", "/metrics", { token: KEYS.acme }), 403, "forbidden");
    expectError(await call("GET", "/metrics", { token: INTERNAL }), 403, "forbidden");
  });

  it("the metrics token reads /metrics and nothing else", async () => {
    expectError(await call("GET", "/admin/scheduler/status", { token: METRICS }), 403, "forbidden");
    expectError(await call("GET", "/status", { token: METRICS }), 403, "forbidden");
    expectError(await call("POST", "/internal/consume", { token: METRICS, json: { client_id: "acme", pool: "openai-gpt4", amount: 1 } }), 403, "forbidden");
  });

  it("every documented family is present with HELP and TYPE, and carries only its documented labels", async () => {
    await makePool();
    const families = await scrape();
    for (const [name, { type, labels }] of Object.entries(DOCUMENTED)) {
      const f = families.get(name);
      expect(f, `missing ${name}`).toBeDefined();
      expect(f!.type, name).toBe(type);
      expect(f!.help.length, `${name} HELP`).toBeGreaterThan(10);
      for (const s of f!.samples) {
        const allowed = type === "histogram" && s.name.endsWith("_bucket") ? [...labels, "le"] : labels;
        expect(Object.keys(s.labels).sort(), `${s.name} ${JSON.stringify(s.labels)}`).toEqual(allowed.slice().sort());
      }
    }
    expect([...families.keys()].filter((n) => !(n in DOCUMENTED)), "undocumented families").toEqual([]);
    // One series per queue and per alert kind, whatever their state.
    expect(families.get("rm_queue_depth")!.samples.map((s) => s.labels.queue)).toEqual(QUEUES);
    expect(families.get("rm_alerts_open")!.samples).toHaveLength(ALERT_KINDS.length);
    expect(families.get("rm_savings_nanodollars_total")!.samples.map((s) => s.labels.strategy)).toEqual(["downgrade", "batching", "caching", "compression", "off_peak"]);
    expect(value(families, "rm_scheduler_running")).toBe(1);
    expect(value(families, "rm_scheduler_settlements_owed")).toBe(0);
  });

  it("a drained pool shows its level, capacity, reservations, utilization and every refused spend", async () => {
    const pool = await makePool({ capacity: 10, refillPerSec: 0, costPerUnitNano: 1000 });
    const reserved = await call("POST", "/internal/reserve", { token: INTERNAL, json: { client_id: "acme", pool: pool.id, amount: 4, ttl_ms: 60_000 } });
    expect(reserved.status, JSON.stringify(reserved.body)).toBe(200);
    expect((await consume(pool.id, 6)).status).toBe(200);
    for (let i = 0; i < 3; i++) expectError(await consume(pool.id, 1), 429, "rate_limited");
    // A check is a question, not a refusal: not counted.
    expect((await call("POST", "/api/resources/check", { token: KEYS.acme, json: { pool: pool.id, amount: 1 } })).status).toBe(200);

    const families = await scrape();
    const p = { pool: pool.id };
    expect(value(families, "rm_pool_level", p)).toBe(0);
    expect(value(families, "rm_pool_capacity", p)).toBe(10);
    expect(value(families, "rm_pool_utilization_ratio", p)).toBe(1);
    expect(value(families, "rm_pool_reserved", p)).toBe(4);
    expect(value(families, "rm_pool_denials_total", p)).toBe(3);
    expect(value(families, "rm_pool_info", { ...p, status: "active", sharing: "shared", unit: "units" })).toBe(1);

    // The count is in the object's own storage, so it survives a restart of the object.
    const stored = await runInDurableObject(poolStub(env, pool.id), (_: PoolObject, state) =>
      state.storage.sql.exec<{ value: number }>("SELECT value FROM counters WHERE name = 'denials'").one().value);
    expect(stored).toBe(3);

    // The 6 units consumed reach the ledger, then the spend series.
    const spent = await eventually(async () => {
      const f = await scrape();
      return value(f, "rm_spend_nanodollars_total", p) === 6000 ? f : null;
    }, 8000, "spend in /metrics");
    expect(value(spent, "rm_spend_month_nanodollars", p)).toBe(6000);
    expect(value(spent, "rm_client_spend_month_nanodollars", { client: "acme" })).toBeGreaterThanOrEqual(6000);
  });

  it("queue depth and the wait histogram of queued requests; counters after the dispatches complete", async () => {
    const pool = await makePool({ capacity: 1000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    expect((await stop()).status).toBe(200);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await enqueue({ template, queue: "batch", params: { prompt: "m" } });
      expect(r.status, JSON.stringify(r.body)).toBe(202);
      ids.push(r.body.request.id);
    }

    const queued = await scrape();
    const q = { queue: "batch" };
    expect(value(queued, "rm_scheduler_running")).toBe(0);
    expect(value(queued, "rm_queue_depth", q)).toBe(3);
    expect(value(queued, "rm_queue_wait_seconds_count", q)).toBe(3);
    expect(value(queued, "rm_queue_oldest_wait_seconds", q)).toBeLessThan(60);
    expect(value(queued, "rm_queue_wait_seconds_sum", q)).toBeLessThan(3 * 60);
    const b = buckets(queued, "rm_queue_wait_seconds", q);
    expect(b.map((x) => x.le)).toEqual([1, 5, 30, 60, 300, 600, 1800, Infinity]);
    for (let i = 1; i < b.length; i++) expect(b[i]!.n).toBeGreaterThanOrEqual(b[i - 1]!.n);
    expect(b.at(-1)!.n).toBe(3);
    expect(b.find((x) => x.le === 60)!.n).toBe(3);
    for (const other of QUEUES.filter((n) => n !== "batch")) expect(value(queued, "rm_queue_wait_seconds_count", { queue: other })).toBe(value(queued, "rm_queue_depth", { queue: other }));
    expect(value(queued, "rm_scheduler_dispatches_total", { template })).toBeUndefined();
    // One shard in this suite: its queued count is every queue's depth, against the shipped limit.
    const depth = (f: typeof queued) => QUEUES.reduce((n, queue) => n + value(f, "rm_queue_depth", { queue })!, 0);
    expect(value(queued, "rm_scheduler_shard_queued", { shard: "0" })).toBe(depth(queued));
    expect(value(queued, "rm_scheduler_shard_queued", { shard: "0" })).toBeGreaterThanOrEqual(3);
    expect(queued.get("rm_scheduler_shard_queued")!.samples).toHaveLength(1);
    expect(value(queued, "rm_scheduler_shard_max_queued")).toBe(50_000);

    expect((await start()).status).toBe(200);
    for (const id of ids) expect((await settled(id)).status).toBe("completed");
    const done = await scrape();
    const t = { template };
    expect(value(done, "rm_queue_depth", q)).toBe(0);
    expect(value(done, "rm_scheduler_shard_queued", { shard: "0" })).toBe(depth(done));
    expect(value(done, "rm_queue_wait_seconds_count", q)).toBe(0);
    expect(value(done, "rm_queue_oldest_wait_seconds", q)).toBe(0);
    expect(value(done, "rm_scheduler_dispatches_total", t)).toBe(3);
    expect(value(done, "rm_scheduler_completions_total", t)).toBe(3);
    expect(value(done, "rm_scheduler_failures_total", t)).toBe(0);
    expect(value(done, "rm_scheduler_retries_total", t)).toBe(0);
    expect(value(done, "rm_scheduler_timeouts_total", t)).toBe(0);
    // Persisted with the scheduler's own writes, so a restarted object counts on from there.
    const stored = await runInDurableObject(scheduler(), (_: SchedulerObject, state) =>
      JSON.parse(state.storage.sql.exec<{ v: string }>("SELECT v FROM state WHERE k = 'counters'").one().v)[template]);
    expect(stored).toEqual({ dispatches: 3, completions: 3, failures: 0, retries: 0, timeouts: 0 });
  });

  it("a failed attempt that is retried counts a failure and a retry; a call past its deadline counts a timeout", async () => {
    const pool = await makePool({ capacity: 1000 });
    const flaky = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    const slow = await makeTemplate([{ pool: pool.id, amount: 1 }], { timeoutMs: 100 });
    const a = await enqueue({ template: flaky, queue: "fast", max_attempts: 2, params: { simulate: { fail: "error", fail_attempts: 1 } } });
    const b = await enqueue({ template: slow, queue: "fast", max_attempts: 1, params: { simulate: { latency_ms: 1000 } } });
    expect((await settled(a.body.request.id)).status).toBe("completed");
    expect((await settled(b.body.request.id)).status).toBe("failed");

    const families = await scrape();
    expect(value(families, "rm_scheduler_dispatches_total", { template: flaky })).toBe(2);
    expect(value(families, "rm_scheduler_failures_total", { template: flaky })).toBe(1);
    expect(value(families, "rm_scheduler_retries_total", { template: flaky })).toBe(1);
    expect(value(families, "rm_scheduler_completions_total", { template: flaky })).toBe(1);
    expect(value(families, "rm_scheduler_timeouts_total", { template: flaky })).toBe(0);
    expect(value(families, "rm_scheduler_dispatches_total", { template: slow })).toBe(1);
    expect(value(families, "rm_scheduler_timeouts_total", { template: slow })).toBe(1);
    expect(value(families, "rm_scheduler_failures_total", { template: slow })).toBe(0);
    expect(value(families, "rm_scheduler_retries_total", { template: slow })).toBe(0);
  });

  it("request latency is labelled by route pattern, method and status class, never by a concrete path", async () => {
    const pool = await makePool();
    const id = (await call("GET", `/api/execution/req_${"0".repeat(32)}`, { token: KEYS.acme })).body;
    expect(id.error.code).toBe("request_not_found");
    await call("GET", "/no/such/route", { token: KEYS.acme });
    expect((await consume(pool.id, 1)).status).toBe(200);

    const families = await scrape();
    const h = "rm_http_request_duration_seconds";
    expect(value(families, `${h}_count`, { method: "GET", route: "/api/execution/:requestId", status_class: "4xx" })).toBeGreaterThanOrEqual(1);
    expect(value(families, `${h}_count`, { method: "GET", route: "unmatched", status_class: "4xx" })).toBeGreaterThanOrEqual(1);
    expect(value(families, `${h}_count`, { method: "POST", route: "/internal/consume", status_class: "2xx" })).toBeGreaterThanOrEqual(1);
    const routes = new Set(families.get(h)!.samples.map((s) => s.labels.route));
    for (const route of routes) expect(route === "unmatched" || route!.startsWith("/"), route).toBe(true);
    expect([...routes].some((r) => r!.includes("req_") || r!.includes("no/such"))).toBe(false);
    const series = buckets(families, h, { method: "POST", route: "/internal/consume", status_class: "2xx" });
    for (let i = 1; i < series.length; i++) expect(series[i]!.n).toBeGreaterThanOrEqual(series[i - 1]!.n);
    expect(series.at(-1)!.n).toBe(value(families, `${h}_count`, { method: "POST", route: "/internal/consume", status_class: "2xx" }));
  });

  it("open alerts are counted by kind, and leave the count when resolved", async () => {
    const before = value(await scrape(), "rm_alerts_open", { kind: "starvation" })!;
    const starved = queueAlerts([{ queue: "deferred", depth: 1, oldestQueuedAt: Date.now() - 11 * 60_000 }], Date.now()).raise[0]!;
    await raiseAlert(env.DB, { ...starved, subject: "metrics-test", dedupeKey: "starvation:metrics-test" }, Date.now());
    expect(value(await scrape(), "rm_alerts_open", { kind: "starvation" })).toBe(before + 1);
    await resolveAlerts(env.DB, "starvation", "metrics-test", Date.now());
    expect(value(await scrape(), "rm_alerts_open", { kind: "starvation" })).toBe(before);
  });

  it("the Grafana dashboard and the alert rules use only series /metrics exposes", async () => {
    const families = await scrape();
    const exposed = new Set([...families.values()].flatMap((f) => f.samples.map((s) => s.name)).concat([...families.keys()]));
    for (const [file, text] of [["ops/grafana-dashboard.json", dashboard], ["ops/prometheus-rules.yml", rules]] as const) {
      const used = new Set(text.match(/\brm_[a-z_]+/g));
      expect(used.size, file).toBeGreaterThan(5);
      for (const name of used) expect(exposed.has(name) || families.get(name.replace(/_(bucket|sum|count)$/, ""))?.type === "histogram", `${file}: ${name}`).toBe(true);
    }
  });

  it("budget gauges: one series per active client with a limit, spend for every active client", async () => {
    const families = await scrape();
    expect(value(families, "rm_client_budget_nanodollars", { client: "acme" })).toBe(10_000_000_000_000);
    expect(value(families, "rm_client_budget_nanodollars", { client: "globex" })).toBe(1_000_000_000_000);
    const clients = families.get("rm_client_spend_month_nanodollars")!.samples.map((s) => s.labels.client);
    expect(clients).toEqual(expect.arrayContaining(["acme", "globex", "initech", "hooli"]));
  });
});

describe("histograms and the text format", () => {
  it("buckets are cumulative and a value on a bound falls in that bound's bucket (le is inclusive)", () => {
    const h = histogramOf([0.5, 1, 1.5, 5, 3600], [1, 5]);
    expect(h.cumulative).toEqual([2, 4, 5]);
    expect(h).toMatchObject({ count: 5, sum: 3608 });
    expect(histogramOf([], [1, 5])).toMatchObject({ cumulative: [0, 0, 0], count: 0, sum: 0 });
  });

  it("label values and HELP text are escaped, so any configured name reads back intact", () => {
    const odd = 'a "quoted" \\ back\nslash';
    const text = exposition([
      { name: "rm_test", type: "gauge", help: "line one\nline two \\ end", samples: [{ labels: { pool: odd }, value: 1.5 }, { value: Infinity }] },
      { name: "rm_test_seconds", type: "histogram", help: "h", samples: [{ labels: { q: "x" }, value: histogramOf([0.2], [0.1, 1]) }] },
    ]);
    const families = parseExposition(text);
    expect(families.get("rm_test")!.help).toBe("line one\\nline two \\\\ end");
    expect(families.get("rm_test")!.samples.map((s) => [s.labels.pool, s.value])).toEqual([[odd, 1.5], [undefined, Infinity]]);
    expect(families.get("rm_test_seconds")!.samples.map((s) => `${s.name}${s.labels.le ?? ""}=${s.value}`)).toEqual([
      "rm_test_seconds_bucket0.1=0", "rm_test_seconds_bucket1=1", "rm_test_seconds_bucket+Inf=1", "rm_test_seconds_sum=0.2", "rm_test_seconds_count=1",
    ]);
  });
});

describe("request log line", () => {
  it("names the route pattern and, on routes about one request, the request; never the credential", async () => {
    const spy = vi.spyOn(console, "log");
    const ctx = createExecutionContext();
    const id = `req_${"a".repeat(32)}`;
    const res = await createApp().fetch(new Request(`https://rm.test/api/execution/${id}`, { headers: { authorization: `Bearer ${KEYS.acme}` } }), env, ctx);
    await res.text();
    await waitOnExecutionContext(ctx);
    const lines = spy.mock.calls.map((args) => JSON.parse(String(args[0])) as Record<string, unknown>).filter((l) => l.msg === "request");
    spy.mockRestore();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: "info", method: "GET", path: `/api/execution/${id}`, route: "/api/execution/:requestId", status: 404,
      principal: "client", client_id: "acme", request_id: id,
    });
    expect(typeof lines[0]!.trace_id).toBe("string");
    expect(typeof lines[0]!.duration_ms).toBe("number");
    expect(typeof lines[0]!.time).toBe("number");
    expect(JSON.stringify(lines)).not.toContain(KEYS.acme);
  });
});
