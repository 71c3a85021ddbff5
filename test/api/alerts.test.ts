import { createScheduledController } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi, type MockInstance } from "vitest";
import {
  budgetAlerts, mergeDecisions, monthOf, poolAlerts, queueAlerts, workerAlerts,
  QUEUE_BACKUP_DEPTH, STARVATION_WAIT_MS, WORKER_MIN_CALLS, WORKER_WINDOW_MS, type AlertDecision, type WorkerOutcome,
} from "../../src/domain/alerts";
import { runCron } from "../../src/cron";
import { ALERT_WEBHOOK_DEADLINE_MS, applyAlerts } from "../../src/storage/alert-apply";
import { checkAlerts } from "../../src/services/alerts";
import { clearConfigCache } from "../../src/storage/config";
import { decodeCursor, getAlert, raiseAlert, resolveAlerts, type Alert } from "../../src/storage/alerts";
import { upsertPool } from "../../src/storage/pools";
import { ADMIN, call, consume, enqueue, expectError, INTERNAL, KEYS, makePool } from "../support/helpers";

const uid = (prefix: string) => `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
const sink = () => (env as unknown as { ALERT_WEBHOOK: Fetcher }).ALERT_WEBHOOK;

async function rowsFor(subject: string): Promise<Alert[]> {
  const { results } = await env.DB.prepare("SELECT id FROM alerts WHERE subject = ?1 ORDER BY raised_at, id").bind(subject).all<{ id: string }>();
  return Promise.all(results.map(async (r) => (await getAlert(env.DB, r.id))!));
}

/** What the alert-sink auxiliary worker received about `subject`. */
async function delivered(subject: string): Promise<Array<{ alert: Alert; alert_id_header: string }>> {
  const res = await sink().fetch("https://sink/received");
  const all = (await res.json()) as Array<{ alert: Alert; alert_id_header: string }>;
  return all.filter((d) => d.alert.subject === subject);
}

/** The JSON log lines written through a console spy about one alert. */
function warnings(spy: MockInstance, alertId: string): Array<Record<string, unknown>> {
  return spy.mock.calls.flatMap((args) => {
    try {
      return [JSON.parse(String(args[0])) as Record<string, unknown>];
    } catch {
      return [];
    }
  }).filter((l) => l.alert_id === alertId && l.level === "warn");
}

const kinds = (d: AlertDecision) => d.raise.map((r) => r.kind);
const cleared = (d: AlertDecision) => d.clear.map((c) => c.kind);
const cron = () => runCron(createScheduledController({ scheduledTime: Date.now(), cron: "* * * * *" }), env);

describe("poolAlerts (pure)", () => {
  it("a pool is low strictly below 10% of capacity; exactly 10% is not low", () => {
    const cases: Array<[number, number, boolean]> = [
      [100, 100, false], [11, 100, false], [10, 100, false], [9.999, 100, true], [9, 100, true], [0, 100, true],
      [100, 1000, false], [99.999, 1000, true], [1, 10, false], [0.999, 10, true], [1_000_000, 10_000_000, false], [999_999, 10_000_000, true],
    ];
    for (const [level, capacity, low] of cases) {
      const d = poolAlerts([{ id: "p", level, capacity }]);
      expect(kinds(d), `${level}/${capacity}`).toEqual(low ? ["pool_low"] : []);
      expect(cleared(d), `${level}/${capacity}`).toEqual(low ? [] : ["pool_low"]);
    }
  });

  it("a low pool's alert names the pool, is a warning, and dedupes on kind:subject", () => {
    const [a] = poolAlerts([{ id: "openai-gpt4", level: 5, capacity: 100 }]).raise;
    expect(a).toMatchObject({
      kind: "pool_low", subject: "openai-gpt4", severity: "warning", dedupeKey: "pool_low:openai-gpt4", oncePerKey: false,
      details: { pool: "openai-gpt4", level: 5, capacity: 100, threshold_percent: 10 },
    });
    expect(a!.message).toContain("5%");
  });

  it("answers each pool on its own", () => {
    const d = poolAlerts([{ id: "a", level: 1, capacity: 100 }, { id: "b", level: 50, capacity: 100 }, { id: "c", level: 0, capacity: 5 }]);
    expect(d.raise.map((r) => r.subject)).toEqual(["a", "c"]);
    expect(d.clear).toEqual([{ kind: "pool_low", subject: "b" }]);
  });
});

describe("budgetAlerts (pure)", () => {
  const at = (spentNano: number, budgetNano: number | null = 1000) => budgetAlerts({ clientId: "acme", spentNano, budgetNano, month: "2026-04" });

  it("80%, 95% and exhausted (100%) fire at exactly their thresholds, each threshold reached is raised", () => {
    expect(kinds(at(0))).toEqual([]);
    expect(kinds(at(799))).toEqual([]);
    expect(kinds(at(800))).toEqual(["budget_80"]);
    expect(kinds(at(949))).toEqual(["budget_80"]);
    expect(kinds(at(950))).toEqual(["budget_80", "budget_95"]);
    expect(kinds(at(999))).toEqual(["budget_80", "budget_95"]);
    expect(kinds(at(1000))).toEqual(["budget_80", "budget_95", "budget_exhausted"]);
    expect(kinds(at(5000))).toEqual(["budget_80", "budget_95", "budget_exhausted"]);
  });

  it("exhausted clears below 100%; 80%/95% are never cleared for their own month, only for earlier months", () => {
    expect(at(999).clear).toEqual([
      { kind: "budget_80", subject: "acme", keep: "budget_80:acme:2026-04" },
      { kind: "budget_95", subject: "acme", keep: "budget_95:acme:2026-04" },
      { kind: "budget_exhausted", subject: "acme" },
    ]);
    expect(cleared(at(1000))).toEqual(["budget_80", "budget_95"]);
  });

  it("is exact in integer arithmetic where floats are not (nano-dollar products past 2^53)", () => {
    const budget = 9_000_000_000_000_000; // $9M in nano-dollars, below 2^53; x100 is far above it
    expect(kinds(at(7_200_000_000_000_000, budget))).toEqual(["budget_80"]);
    expect(kinds(at(7_199_999_999_999_999 - 1, budget))).toEqual([]);
    expect(kinds(at(8_550_000_000_000_000, budget))).toEqual(["budget_80", "budget_95"]);
    expect(kinds(at(8_549_999_999_999_999 - 1, budget))).toEqual(["budget_80"]);
    expect(kinds(at(budget, budget))).toContain("budget_exhausted");
    expect(kinds(at(budget - 1, budget))).not.toContain("budget_exhausted");
  });

  it("no budget (null) raises nothing and clears exhausted; a zero budget alerts only once something is spent", () => {
    const none = at(10 ** 15, null);
    expect(none.raise).toEqual([]);
    expect(cleared(none)).toContain("budget_exhausted");
    expect(kinds(at(0, 0))).toEqual([]);
    expect(kinds(at(1, 0))).toEqual(["budget_80", "budget_95", "budget_exhausted"]);
  });

  it("monthly kinds carry the month in their dedupe key, exhausted does not; severities rise with the threshold", () => {
    const d = at(1000);
    expect(d.raise.map((r) => [r.dedupeKey, r.severity, r.oncePerKey])).toEqual([
      ["budget_80:acme:2026-04", "info", true],
      ["budget_95:acme:2026-04", "warning", true],
      ["budget_exhausted:acme", "critical", false],
    ]);
    expect(d.raise[0]!.details).toMatchObject({ client_id: "acme", spent_nano: 1000, budget_nano: 1000, month: "2026-04" });
  });

  it("monthOf is the UTC calendar month", () => {
    expect(monthOf(Date.UTC(2026, 3, 30, 23, 59, 59, 999))).toBe("2026-04");
    expect(monthOf(Date.UTC(2026, 4, 1))).toBe("2026-05");
    expect(monthOf(Date.UTC(2026, 11, 31, 23, 59, 59, 999))).toBe("2026-12");
  });
});

describe("queueAlerts (pure)", () => {
  const now = 1_800_000_000_000;
  const q = (queue: string, depth: number, oldestQueuedAt: number | null = depth ? now : null) => ({ queue, depth, oldestQueuedAt });

  it("backup is more than 1,000 queued in all: 1,000 is not, 1,001 is", () => {
    expect(QUEUE_BACKUP_DEPTH).toBe(1000);
    expect(kinds(queueAlerts([q("normal", 1000)], now))).toEqual([]);
    expect(cleared(queueAlerts([q("normal", 1000)], now))).toContain("queue_backup");
    const d = queueAlerts([q("normal", 600), q("batch", 401), q("fast", 0)], now);
    expect(kinds(d)).toEqual(["queue_backup"]);
    expect(d.raise[0]).toMatchObject({ subject: "all", dedupeKey: "queue_backup:all", details: { queued: 1001, by_queue: { normal: 600, batch: 401, fast: 0 } } });
  });

  it("starvation is a request queued more than 10 minutes: exactly 10 minutes is not", () => {
    expect(STARVATION_WAIT_MS).toBe(600_000);
    expect(kinds(queueAlerts([q("batch", 3, now - 600_000)], now))).toEqual([]);
    const d = queueAlerts([q("batch", 3, now - 600_001), q("fast", 1, now - 5)], now);
    expect(d.raise).toMatchObject([{ kind: "starvation", subject: "batch", details: { oldest_wait_ms: 600_001 } }]);
    expect(d.clear).toContainEqual({ kind: "starvation", subject: "fast" });
  });

  it("an empty queue is never starved, whatever its last timestamp", () => {
    const d = queueAlerts([q("deferred", 0, now - 3_600_000), q("normal", 0, null)], now);
    expect(d.raise).toEqual([]);
    expect(d.clear).toEqual([{ kind: "queue_backup", subject: "all" }, { kind: "starvation", subject: "deferred" }, { kind: "starvation", subject: "normal" }]);
  });
});

describe("workerAlerts (pure)", () => {
  const now = 1_800_000_000_000;
  const calls = (template: string, n: number, kind: "ok" | "failed" | "timeout", at = now - 1000): WorkerOutcome[] =>
    Array.from({ length: n }, () => ({ template, ok: kind === "ok", timedOut: kind === "timeout", at }));

  it("failures: at least 50% of at least 10 calls in the window", () => {
    expect(WORKER_MIN_CALLS).toBe(10);
    expect(kinds(workerAlerts([...calls("t", 5, "ok"), ...calls("t", 5, "failed")], now))).toEqual(["worker_failures"]);
    expect(kinds(workerAlerts([...calls("t", 6, "ok"), ...calls("t", 4, "failed")], now))).toEqual([]);
    expect(kinds(workerAlerts([...calls("t", 9, "failed")], now))).toEqual([]);
    expect(kinds(workerAlerts([...calls("t", 10, "ok"), ...calls("t", 10, "failed")], now))).toEqual(["worker_failures"]);
    expect(kinds(workerAlerts([...calls("t", 11, "ok"), ...calls("t", 10, "failed")], now))).toEqual([]);
  });

  it("timeouts are judged on their own and do not also count as failures", () => {
    const d = workerAlerts([...calls("t", 5, "ok"), ...calls("t", 5, "timeout")], now);
    expect(kinds(d)).toEqual(["worker_timeouts"]);
    expect(cleared(d)).toEqual(["worker_failures"]);
    expect(d.raise[0]).toMatchObject({ subject: "t", severity: "warning", details: { calls: 10, failed: 0, timed_out: 5 } });
    expect(kinds(workerAlerts([...calls("t", 5, "failed"), ...calls("t", 5, "timeout")], now))).toEqual(["worker_failures", "worker_timeouts"]);
    expect(kinds(workerAlerts([...calls("t", 6, "failed"), ...calls("t", 4, "timeout")], now))).toEqual(["worker_failures"]);
  });

  it("the window is (now - 5 min, now]: a call exactly 5 minutes old or in the future does not count", () => {
    expect(WORKER_WINDOW_MS).toBe(300_000);
    const nine = calls("t", 9, "failed");
    expect(kinds(workerAlerts([...nine, ...calls("t", 1, "failed", now - WORKER_WINDOW_MS)], now))).toEqual([]);
    expect(kinds(workerAlerts([...nine, ...calls("t", 1, "failed", now - WORKER_WINDOW_MS + 1)], now))).toEqual(["worker_failures"]);
    expect(kinds(workerAlerts([...nine, ...calls("t", 1, "failed", now)], now))).toEqual(["worker_failures"]);
    expect(kinds(workerAlerts([...nine, ...calls("t", 1, "failed", now + 1)], now))).toEqual([]);
    expect(kinds(workerAlerts(calls("t", 10, "failed", now - 60_001), now, 60_000))).toEqual([]);
    expect(kinds(workerAlerts(calls("t", 10, "failed", now - 59_999), now, 60_000))).toEqual(["worker_failures"]);
  });

  it("judges each template separately and clears templates whose calls are all outside the window", () => {
    const d = workerAlerts([...calls("bad", 10, "failed"), ...calls("good", 10, "ok"), ...calls("old", 20, "failed", now - 3_600_000)], now);
    expect(d.raise.map((r) => `${r.kind}:${r.subject}`)).toEqual(["worker_failures:bad"]);
    expect(d.clear.map((c) => `${c.kind}:${c.subject}`)).toEqual([
      "worker_timeouts:bad", "worker_failures:good", "worker_timeouts:good", "worker_failures:old", "worker_timeouts:old",
    ]);
    expect(workerAlerts([], now)).toEqual({ raise: [], clear: [] });
  });
});

describe("raising and resolving in D1", () => {
  it("a repeat while open is de-duplicated: one row, count 2, latest details; delivered once", async () => {
    const pool = uid("dedupe");
    const first = await applyAlerts(env, poolAlerts([{ id: pool, level: 3, capacity: 100 }]), 1000);
    const second = await applyAlerts(env, poolAlerts([{ id: pool, level: 2, capacity: 100 }]), 2000);
    expect(first).toMatchObject({ repeated: 0 });
    expect(first.raised).toHaveLength(1);
    expect(second).toMatchObject({ raised: [], repeated: 1 });
    const rows = await rowsFor(pool);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      id: first.raised[0]!.id, kind: "pool_low", state: "open", severity: "warning", count: 2, raised_at: 1000, updated_at: 2000,
      dedupe_key: `pool_low:${pool}`, details: { level: 2 }, acked_at: null, resolved_at: null,
    });
    expect(rows[0]!.id).toMatch(/^alt_[a-f0-9]{32}$/);
    const sent = await delivered(pool);
    expect(sent).toHaveLength(1);
    expect(sent[0]!.alert).toMatchObject({ id: rows[0]!.id, kind: "pool_low", subject: pool, count: 1, state: "open" });
    expect(sent[0]!.alert_id_header).toBe(rows[0]!.id);
  });

  it("D1 itself refuses a second unresolved row for a dedupe key (the partial unique index)", async () => {
    const subject = uid("unique");
    await raiseAlert(env.DB, poolAlerts([{ id: subject, level: 0, capacity: 1 }]).raise[0]!, 1);
    const insert = env.DB.prepare(
      `INSERT INTO alerts (id, kind, subject, severity, message, dedupe_key, raised_at, updated_at)
       VALUES (?1, 'pool_low', ?2, 'warning', 'x', ?3, 1, 1)`,
    ).bind(`alt_${"0".repeat(32)}`, subject, `pool_low:${subject}`);
    await expect(insert.run()).rejects.toThrow(/UNIQUE/);
  });

  it("resolves automatically when the condition clears; raising again afterwards opens a new alert", async () => {
    const pool = uid("resolve");
    const a = (await applyAlerts(env, poolAlerts([{ id: pool, level: 1, capacity: 100 }]), 1000)).raised[0]!;
    const cleared = await applyAlerts(env, poolAlerts([{ id: pool, level: 50, capacity: 100 }]), 2000);
    expect(cleared.resolved).toBe(1);
    expect(await getAlert(env.DB, a.id)).toMatchObject({ state: "resolved", resolved_at: 2000, updated_at: 2000 });
    expect((await applyAlerts(env, poolAlerts([{ id: pool, level: 60, capacity: 100 }]), 2500)).resolved).toBe(0);
    const again = (await applyAlerts(env, poolAlerts([{ id: pool, level: 0, capacity: 100 }]), 3000)).raised[0]!;
    expect(again.id).not.toBe(a.id);
    expect(again).toMatchObject({ state: "open", count: 1, raised_at: 3000, dedupe_key: a.dedupe_key });
    expect((await rowsFor(pool)).map((r) => r.state)).toEqual(["resolved", "open"]);
    expect((await delivered(pool)).map((d) => d.alert.id)).toEqual([a.id, again.id]);
  });

  it("an acknowledged alert still counts repeats without being re-delivered, and resolves when cleared", async () => {
    const q = uid("ackq");
    const old = 1_800_000_000_000 - STARVATION_WAIT_MS - 1;
    const starve = (now: number) => queueAlerts([{ queue: q, depth: 2, oldestQueuedAt: old }], now);
    const a = (await applyAlerts(env, starve(1_800_000_000_000), 10)).raised[0]!;
    const acked = await call("POST", `/admin/alerts/${a.id}/ack`, { token: ADMIN });
    expect(acked.status).toBe(200);
    const repeat = await applyAlerts(env, starve(1_800_000_000_000), 20);
    expect(repeat).toMatchObject({ raised: [], repeated: 1 });
    expect(await getAlert(env.DB, a.id)).toMatchObject({ state: "acknowledged", count: 2 });
    await applyAlerts(env, queueAlerts([{ queue: q, depth: 0, oldestQueuedAt: null }], 1_800_000_000_000), 30);
    expect(await getAlert(env.DB, a.id)).toMatchObject({ state: "resolved", resolved_at: 30 });
    expect(await delivered(q)).toHaveLength(1);
  });

  it("budget_80 and budget_95 fire once per month, stay open within it, are not raised again after resolving; again next month", async () => {
    const client = uid("client");
    const budget = 1_000_000_000;
    const april = (spentNano: number, budgetNano = budget) => budgetAlerts({ clientId: client, spentNano, budgetNano, month: "2026-04" });
    const may = (spentNano: number) => budgetAlerts({ clientId: client, spentNano, budgetNano: budget, month: "2026-05" });

    const first = await applyAlerts(env, april(960_000_000), 1000);
    expect(first.raised.map((a) => a.kind)).toEqual(["budget_80", "budget_95"]);
    expect((await applyAlerts(env, april(970_000_000), 2000)).repeated).toBe(2);
    // a raised budget lowers the share spent: the month's alerts stay open all the same
    expect((await applyAlerts(env, april(970_000_000, 10 * budget), 3000)).resolved).toBe(0);
    expect((await rowsFor(client)).map((r) => [r.kind, r.state, r.count]).sort()).toEqual([["budget_80", "open", 2], ["budget_95", "open", 2]]);

    const b80 = first.raised.find((a) => a.kind === "budget_80")!;
    expect(await resolveAlerts(env.DB, "budget_80", client, 4000)).toEqual([b80.id]);
    const suppressed = await applyAlerts(env, april(990_000_000), 5000);
    expect(suppressed.raised).toEqual([]);
    expect(suppressed.repeated).toBe(1); // budget_95, still open
    expect((await rowsFor(client)).filter((r) => r.kind === "budget_80")).toHaveLength(1);

    // the new month resolves April's leftovers and raises nothing below 80%
    const turned = await applyAlerts(env, may(10_000_000), 6000);
    expect(turned).toMatchObject({ raised: [], resolved: 1 });
    expect((await rowsFor(client)).every((r) => r.state === "resolved")).toBe(true);

    const mayAlerts = await applyAlerts(env, may(850_000_000), 7000);
    expect(mayAlerts.raised.map((a) => [a.kind, a.dedupe_key])).toEqual([["budget_80", `budget_80:${client}:2026-05`]]);
    expect((await delivered(client)).map((d) => `${d.alert.kind}:${d.alert.dedupe_key.slice(-7)}`).sort()).toEqual([
      "budget_80:2026-04", "budget_80:2026-05", "budget_95:2026-04",
    ]);
  });

  it("budget_exhausted opens at 100% and resolves as soon as spending fits again", async () => {
    const client = uid("spent");
    const at = (spentNano: number, budgetNano: number | null) => budgetAlerts({ clientId: client, spentNano, budgetNano, month: "2026-04" });
    const raised = await applyAlerts(env, at(1000, 1000), 1);
    const exhausted = raised.raised.find((a) => a.kind === "budget_exhausted")!;
    expect(exhausted).toMatchObject({ severity: "critical", dedupe_key: `budget_exhausted:${client}` });
    await applyAlerts(env, at(1000, 2000), 2);
    expect(await getAlert(env.DB, exhausted.id)).toMatchObject({ state: "resolved" });
    await applyAlerts(env, at(2000, 2000), 3);
    await applyAlerts(env, at(2000, null), 4);
    expect((await rowsFor(client)).filter((r) => r.kind === "budget_exhausted").map((r) => r.state)).toEqual(["resolved", "resolved"]);
  });

  it("worker failure and timeout alerts raise and resolve through applyAlerts", async () => {
    const template = uid("tpl");
    const now = 1_800_000_000_000;
    const outcomes = (failed: number): WorkerOutcome[] => Array.from({ length: 10 }, (_, i) => ({ template, ok: i >= failed, timedOut: false, at: now - i }));
    const raised = await applyAlerts(env, workerAlerts(outcomes(7), now), now);
    expect(raised.raised).toMatchObject([{ kind: "worker_failures", subject: template, severity: "critical" }]);
    expect((await applyAlerts(env, workerAlerts(outcomes(1), now), now + 1)).resolved).toBe(1);
  });

  it("one batch carries decisions for many subjects at once", async () => {
    const [p1, p2, q] = [uid("many"), uid("many"), uid("manyq")];
    const applied = await applyAlerts(env, mergeDecisions(
      poolAlerts([{ id: p1, level: 0, capacity: 10 }, { id: p2, level: 0, capacity: 10 }]),
      queueAlerts([{ queue: q, depth: 1, oldestQueuedAt: 0 }], STARVATION_WAIT_MS + 1),
    ), 1);
    expect(applied.raised.map((a) => a.subject).sort()).toEqual([p1, p2, q].sort());
    expect(await applyAlerts(env, { raise: [], clear: [] }, 2)).toEqual({ raised: [], repeated: 0, resolved: 0 });
  });
});

describe("webhook delivery", () => {
  it("a failing webhook is logged, never thrown: the alert is stored and was offered once", async () => {
    const pool = uid("sink-fail");
    const warn = vi.spyOn(console, "log"); // every level is written with console.log (src/log.ts)
    try {
      const applied = await applyAlerts(env, poolAlerts([{ id: pool, level: 0, capacity: 10 }]), 1);
      expect(applied.raised).toHaveLength(1);
      expect(warnings(warn, applied.raised[0]!.id)).toMatchObject([{ msg: "alert_delivery_failed", status: 500 }]);
    } finally {
      warn.mockRestore();
    }
    expect(await rowsFor(pool)).toHaveLength(1);
    expect(await delivered(pool)).toHaveLength(1);
  });

  it("a webhook that does not answer is abandoned at the deadline", async () => {
    const pool = uid("sink-slow");
    const started = Date.now();
    const applied = await applyAlerts(env, poolAlerts([{ id: pool, level: 0, capacity: 10 }]), 1);
    const took = Date.now() - started;
    expect(applied.raised).toHaveLength(1);
    expect(took).toBeGreaterThanOrEqual(ALERT_WEBHOOK_DEADLINE_MS - 50);
    expect(took).toBeLessThan(4500);
    expect(await rowsFor(pool)).toHaveLength(1);
  });

  it("without a binding, ALERT_WEBHOOK_URL is used (a bad one fails quietly); with neither, nothing is sent", async () => {
    const viaUrl = uid("via-url");
    const none = uid("no-hook");
    const urlEnv = { ...env, ALERT_WEBHOOK: undefined, ALERT_WEBHOOK_URL: "not-a-url" } as unknown as Env;
    const bareEnv = { ...env, ALERT_WEBHOOK: undefined, ALERT_WEBHOOK_URL: "" } as unknown as Env;
    const warn = vi.spyOn(console, "log"); // every level is written with console.log (src/log.ts)
    try {
      const a = (await applyAlerts(urlEnv, poolAlerts([{ id: viaUrl, level: 0, capacity: 10 }]), 1)).raised[0]!;
      expect(warnings(warn, a.id)).toMatchObject([{ msg: "alert_delivery_failed" }]);
      const b = (await applyAlerts(bareEnv, poolAlerts([{ id: none, level: 0, capacity: 10 }]), 1)).raised[0]!;
      expect(warnings(warn, b.id)).toEqual([]);
    } finally {
      warn.mockRestore();
    }
    expect(await delivered(viaUrl)).toEqual([]);
    expect(await delivered(none)).toEqual([]);
  });
});

describe("GET /admin/alerts and ack", () => {
  it("lists newest first with filters, and the cursor walks every matching row exactly once", async () => {
    const queues = Array.from({ length: 7 }, () => uid("page"));
    // all in one batch at one time: ties on raised_at are broken by id
    await applyAlerts(env, queueAlerts(queues.map((queue) => ({ queue, depth: 1, oldestQueuedAt: 0 })), STARVATION_WAIT_MS + 1), 5_000_000_000_000);
    await applyAlerts(env, poolAlerts([{ id: uid("page-pool"), level: 0, capacity: 10 }]), 5_000_000_000_001);

    const seen: any[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const r = await call("GET", `/admin/alerts?kind=starvation&state=open&limit=3${cursor ? `&cursor=${cursor}` : ""}`, { token: ADMIN });
      expect(r.status).toBe(200);
      expect(r.body.alerts.length).toBeLessThanOrEqual(3);
      seen.push(...r.body.alerts);
      cursor = r.body.next_cursor;
      pages += 1;
    } while (cursor && pages < 50);
    const { results } = await env.DB.prepare("SELECT id FROM alerts WHERE kind = 'starvation' AND state = 'open' ORDER BY raised_at DESC, id DESC").all<{ id: string }>();
    expect(seen.map((a) => a.id)).toEqual(results.map((r) => r.id));
    expect(new Set(seen.map((a) => a.id)).size).toBe(seen.length);
    expect(seen.every((a) => a.kind === "starvation" && a.state === "open")).toBe(true);
    expect(queues.every((q) => seen.some((a) => a.subject === q))).toBe(true);
    expect(pages).toBe(Math.ceil(results.length / 3));

    const all = await call("GET", "/admin/alerts?limit=200", { token: ADMIN });
    const times = all.body.alerts.map((a: any) => a.raised_at);
    expect(times).toEqual([...times].sort((a, b) => b - a));
    expect(all.body.alerts[0].kind).toBe("pool_low"); // raised last
    expect(typeof all.body.trace_id).toBe("string");

    const critical = await call("GET", "/admin/alerts?severity=critical", { token: ADMIN });
    expect(critical.body.alerts.every((a: any) => a.severity === "critical")).toBe(true);
    const resolved = await call("GET", "/admin/alerts?state=resolved&kind=pool_low", { token: ADMIN });
    expect(resolved.body.alerts.every((a: any) => a.state === "resolved" && a.kind === "pool_low")).toBe(true);
  });

  it("a page of the default size is 50, and the last page has no next_cursor", async () => {
    const pools = Array.from({ length: 51 }, (_, i) => ({ id: uid(`bulk${i}`), level: 0, capacity: 10 }));
    await applyAlerts(env, poolAlerts(pools), 6_000_000_000_000);
    const first = await call("GET", "/admin/alerts?kind=pool_low", { token: ADMIN });
    expect(first.body.alerts).toHaveLength(50);
    expect(decodeCursor(first.body.next_cursor)).not.toBeNull();
    const { n } = (await env.DB.prepare("SELECT COUNT(*) AS n FROM alerts WHERE kind = 'pool_low'").first<{ n: number }>())!;
    const rest = await call("GET", `/admin/alerts?kind=pool_low&limit=200&cursor=${first.body.next_cursor}`, { token: ADMIN });
    expect(rest.body.alerts).toHaveLength(n - 50);
    expect(rest.body.next_cursor).toBeNull();
  });

  it("GET one alert; ack turns open into acknowledged; acking again is idempotent; a resolved alert is 409", async () => {
    const pool = uid("ack");
    const a = (await applyAlerts(env, poolAlerts([{ id: pool, level: 0, capacity: 10 }]), Date.now())).raised[0]!;
    const one = await call("GET", `/admin/alerts/${a.id}`, { token: ADMIN });
    expect(one.status).toBe(200);
    expect(one.body.alert).toMatchObject({ id: a.id, kind: "pool_low", subject: pool, state: "open", details: { pool } });

    const acked = await call("POST", `/admin/alerts/${a.id}/ack`, { token: ADMIN });
    expect(acked.status).toBe(200);
    expect(acked.body.alert.state).toBe("acknowledged");
    expect(typeof acked.body.alert.acked_at).toBe("number");
    const again = await call("POST", `/admin/alerts/${a.id}/ack`, { token: ADMIN });
    expect(again.status).toBe(200);
    expect(again.body.alert).toEqual(acked.body.alert);

    await applyAlerts(env, poolAlerts([{ id: pool, level: 10, capacity: 10 }]), Date.now());
    const conflict = await call("POST", `/admin/alerts/${a.id}/ack`, { token: ADMIN });
    expectError(conflict, 409, "alert_state");
    expect(conflict.body.error.details).toMatchObject({ alert_id: a.id, state: "resolved" });
  });

  it("an unknown alert is 404; a malformed id is 400", async () => {
    const unknown = `alt_${"f".repeat(32)}`;
    expectError(await call("GET", `/admin/alerts/${unknown}`, { token: ADMIN }), 404, "alert_not_found");
    expectError(await call("POST", `/admin/alerts/${unknown}/ack`, { token: ADMIN }), 404, "alert_not_found");
    expectError(await call("GET", "/admin/alerts/not-an-alert", { token: ADMIN }), 400, "validation_failed");
    expectError(await call("POST", "/admin/alerts/alt_XYZ/ack", { token: ADMIN }), 400, "validation_failed");
  });

  it("bad filters, limits and cursors are 400 naming the field", async () => {
    const bad: Array<[string, string]> = [
      ["state=closed", "state"], ["kind=pool_high", "kind"], ["severity=loud", "severity"],
      ["limit=0", "limit"], ["limit=201", "limit"], ["limit=abc", "limit"], ["limit=2.5", "limit"],
      ["cursor=not-a-cursor", "cursor"], [`cursor=${btoa("123:alt_nope")}`, "cursor"], ["status=open", ""],
    ];
    for (const [query, field] of bad) {
      const r = await call("GET", `/admin/alerts?${query}`, { token: ADMIN });
      expectError(r, 400, "validation_failed");
      if (field) expect(r.body.error.details.fields.map((f: any) => f.path), query).toContain(`query.${field}`);
    }
    expect((await call("GET", "/admin/alerts?limit=1", { token: ADMIN })).status).toBe(200);
    expect((await call("GET", "/admin/alerts?limit=200", { token: ADMIN })).status).toBe(200);
  });

  it("admin token only: 401 without or with a wrong credential, 403 for API keys and the internal token", async () => {
    const id = `alt_${"a".repeat(32)}`;
    for (const [method, path] of [["GET", "/admin/alerts"], ["GET", `/admin/alerts/${id}`], ["POST", `/admin/alerts/${id}/ack`]] as const) {
      expectError(await call(method, path), 401, "unauthorized");
      expectError(await call(method, path, { token: "rmk_not_a_real_key" }), 401, "unauthorized");
      expectError(await call(method, path, { token: KEYS.acme }), 403, "forbidden");
      expectError(await call(method, path, { token: INTERNAL }), 403, "forbidden");
    }
  });

  it("the routes and their error codes are in the OpenAPI document", async () => {
    const doc = (await call("GET", "/openapi.json")).body;
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(["/admin/alerts", "/admin/alerts/{alertId}", "/admin/alerts/{alertId}/ack"]));
    expect(doc.paths["/admin/alerts/{alertId}/ack"].post.responses["409"].description).toContain("alert_state");
  });
});

describe("the cron re-check", () => {
  it("raises pool_low for a drained pool (not at exactly 10%), counts repeats, and resolves it when the pool is no longer low", async () => {
    const pool = await makePool({ capacity: 100, refillPerSec: 0 });
    expect((await consume(pool.id, 90)).status).toBe(200);
    await cron();
    expect(await rowsFor(pool.id)).toEqual([]);

    expect((await consume(pool.id, 1)).status).toBe(200);
    await cron();
    const [raised] = await rowsFor(pool.id);
    expect(raised).toMatchObject({ kind: "pool_low", state: "open", count: 1, details: { level: 9, capacity: 100 } });
    await cron();
    expect(await rowsFor(pool.id)).toMatchObject([{ id: raised!.id, count: 2 }]);
    expect((await delivered(pool.id)).map((d) => d.alert.id)).toEqual([raised!.id]);

    // a smaller capacity makes the same 9 units 18%
    await upsertPool(env.DB, { ...pool, capacity: 50 });
    clearConfigCache();
    await cron();
    expect(await rowsFor(pool.id)).toMatchObject([{ id: raised!.id, state: "resolved" }]);
  });

  it("clears pool_low for a disabled pool", async () => {
    const pool = await makePool({ capacity: 10, refillPerSec: 0 });
    expect((await consume(pool.id, 10)).status).toBe(200);
    await checkAlerts(env, Date.now());
    expect((await rowsFor(pool.id)).map((r) => r.state)).toEqual(["open"]);
    await upsertPool(env.DB, { ...pool, status: "disabled" });
    clearConfigCache();
    await checkAlerts(env, Date.now());
    expect((await rowsFor(pool.id)).map((r) => r.state)).toEqual(["resolved"]);
  });

  it("raises queue_backup at 1,001 queued (not 1,000) and resolves it when the queue drains below", async () => {
    expect((await call("POST", "/admin/scheduler/stop", { token: ADMIN })).status).toBe(200);
    const ids: string[] = [];
    const add = async (n: number) => {
      const r = await enqueue({ requests: Array.from({ length: n }, (_, i) => ({ template: "notify-email", queue: "batch", params: { i } })) });
      expect(r.status).toBe(200);
      expect(r.body.accepted).toBe(n);
      ids.push(...r.body.results.map((x: any) => x.request.id));
    };
    for (let i = 0; i < 10; i += 1) await add(100);
    await checkAlerts(env, Date.now());
    expect(await rowsFor("all")).toEqual([]);

    await add(1);
    const applied = await checkAlerts(env, Date.now());
    expect(applied.raised.map((a) => a.kind)).toContain("queue_backup");
    const [backup] = await rowsFor("all");
    expect(backup).toMatchObject({ kind: "queue_backup", state: "open", details: { queued: 1001, by_queue: { batch: 1001 } } });
    // "all" is no unique subject: other test files' alerts reach the same sink, so count by id
    expect((await delivered("all")).filter((d) => d.alert.id === backup!.id)).toHaveLength(1);

    expect((await call("DELETE", `/api/queue/${ids[0]}`, { token: KEYS.acme })).status).toBe(200);
    await checkAlerts(env, Date.now());
    expect(await rowsFor("all")).toMatchObject([{ id: backup!.id, state: "resolved" }]);
  });
});
