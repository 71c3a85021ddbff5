// The dashboard's service at scale, shared by its browser test (test/browser/dashboard.browser.mjs) and
// its benchmark (bench/dashboard.mjs): a fresh temporary persist dir with the migrations, seed.sql and
// this data (an open critical alert whose text carries markup, a failed request with a JSON error body;
// 100 pools with an hour of minute samples, 1,000 clients with this month's spend, an hour of queue
// samples); `wrangler dev` with the sample workers; then some spend, a pool drained below 10% with its
// pool_low alert open, and one GET /metrics; and the timed login in Chromium.

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { DEV_CONFIGS, executeD1File, freePortPair, freshD1Sql, HOST, killGroup, startWrangler } from "../../scripts/local-wrangler.mjs";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
/** Debian's Chromium, headless, with nothing of its own on the network. */
export const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync",
];
export const DESKTOP = { width: 1366, height: 768 };
/** Issue 24: the first render after login at this scale; bench/dashboard.mjs reports against it. */
export const FIRST_RENDER_BUDGET_MS = 2000;
/** Longer than the page's 5 s refresh, with room for a loaded machine. */
export const REFRESH_WAIT_MS = 15_000;
const READY_TIMEOUT_MS = 90_000;

export const ADMIN_TOKEN = "browser-admin-token";
export const INTERNAL_TOKEN = "browser-internal-token";
export const ACME_KEY = "rmk_demo_enterprise_acme";
export const ALERT_ID = "alt_0123456789abcdef0123456789abcdef";
export const MARKUP = `<img src=x onerror="alert('xss')">`;

/** Spent through the API once the service runs: [client, pool, units]; the budgets panel shows it. */
const SPEND = [["acme", "openai-gpt4", 1500], ["acme", "email-sendgrid", 40], ["globex", "openai-gpt35", 20000], ["hooli", "sms-twilio", 3]];
const now = Date.now();
const NOW_MIN = Math.floor(now / 60_000) * 60_000;

// Scale (issue 24): 100 pools (6 from the migrations, the low pool, 93 more) with an hour of minute
// samples, and 1,000 clients (4 demo, 996 more) with a budget and this month's spend in the rollups.
const SCALE_POOLS = 93;
const SCALE_CLIENTS = 996;
export const LOW_POOL = "browser-low";
/** Samples of the low pool in the last hour, and of the normal queue: what its charts must draw. */
export const LOW_POOL_SAMPLES = 37;
export const QUEUE_SAMPLES = 45;
export const BUDGET_ROWS = 20;
/** Client i's budget and spend (SCALE_SQL computes the same): spend is k/1000 of the budget, k up to 1012 (a few are past their budget). */
function scaleClient(i) {
  const budget = 100_000_000_000 + (i % 7) * 50_000_000_000;
  const k = (i * 7919) % 1013;
  return { id: `scale-${String(i).padStart(4, "0")}`, budget, spent: (budget / 1000) * k, k };
}
const scaleClients = Array.from({ length: SCALE_CLIENTS }, (_, i) => scaleClient(i + 1));
/** The budgets panel's rows: by spent / budget (exact), then more spent, then id. The demo clients spend far less. */
export const expectedRisk = [...scaleClients].sort((a, b) => {
  const d = BigInt(b.spent) * BigInt(a.budget) - BigInt(a.spent) * BigInt(b.budget);
  return d !== 0n ? (d > 0n ? 1 : -1) : b.spent - a.spent || (a.id < b.id ? -1 : 1);
}).slice(0, BUDGET_ROWS);
const day = new Date(now).toISOString().slice(0, 10);
const SCALE_SQL = `
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ${SCALE_CLIENTS})
INSERT INTO clients (id, name, email, tier, monthly_budget_nano, status, created_at, updated_at)
SELECT printf('scale-%04d', i), 'Scale client', 'ops@scale.example', 'standard', 100000000000 + (i % 7) * 50000000000, 'active', ${now}, ${now} FROM c;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ${SCALE_CLIENTS})
INSERT INTO usage_daily (client_id, pool_id, day, units, cost_nano, events)
SELECT printf('scale-%04d', i), 'openai-gpt4', '${day}', 1, (100000000000 + (i % 7) * 50000000000) / 1000 * ((i * 7919) % 1013), 1 FROM c;
WITH RECURSIVE p(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM p WHERE i < ${SCALE_POOLS})
INSERT INTO pools (id, name, unit, capacity, refill_per_sec, cost_per_unit_nano, sharing, status, version, updated_at)
SELECT printf('scale-pool-%03d', i), printf('Scale pool %d', i), 'units', 1000, 10, 1000, '{"mode":"shared"}', 'active', 1, ${now} FROM p;
INSERT INTO pools (id, name, unit, capacity, refill_per_sec, cost_per_unit_nano, sharing, status, version, updated_at)
VALUES ('${LOW_POOL}', 'A pool the test drains', 'units', 1000, 0, 1000, '{"mode":"shared"}', 'active', 1, ${now});
WITH RECURSIVE p(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM p WHERE i < ${SCALE_POOLS}),
  m(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM m WHERE k < 60)
INSERT INTO pool_samples (pool_id, at, level, capacity)
SELECT printf('scale-pool-%03d', i), ${NOW_MIN} - k * 60000, 1000 - ((i * k) % 400), 1000 FROM p, m;
WITH RECURSIVE m(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM m WHERE k < ${LOW_POOL_SAMPLES})
INSERT INTO pool_samples (pool_id, at, level, capacity) SELECT '${LOW_POOL}', ${NOW_MIN} - k * 60000, 50 + k * 25, 1000 FROM m;
WITH RECURSIVE m(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM m WHERE k < ${QUEUE_SAMPLES})
INSERT INTO queue_samples (queue, at, depth, ready, dispatched) SELECT 'normal', ${NOW_MIN} - k * 60000, (k * 37) % 120, (k * 37) % 100, k % 9 FROM m;
`;
const SEED_SQL = `
INSERT INTO alerts (id, kind, subject, severity, state, message, details, dedupe_key, count, raised_at, updated_at)
VALUES ('${ALERT_ID}', 'worker_failures', 'content-generate', 'critical', 'open',
        'content-generate failed 7 of 10 calls: ${MARKUP.replaceAll("'", "''")}', '{}', 'worker_failures:content-generate', 3, ${now - 60_000}, ${now - 60_000});
INSERT INTO request_log (id, client_id, template, queue, status, estimate_nano, actual_nano, attempts, created_at, finished_at, error)
VALUES ('req_0000000000000000000000000000fa11', 'initech', 'notify-sms', 'fast', 'failed', 7500000, NULL, 3, ${now - 90_000}, ${now - 30_000},
        'worker answered 503: {"error":{"code":"upstream_down","message":"Twilio is down"},"trace_id":"t-1"}');
`;



/** The service under `wrangler dev` with the data above. */
export class DashboardService {
  base = "";
  stateDir = null;
  dev = null;

  /** Build the D1 and start `wrangler dev` on the first free port pair from `firstPort`; ready when GET / answers 200. */
  async start({ logFile, firstPort }) {
    this.stateDir = mkdtempSync(join(tmpdir(), "rm-dashboard-"));
    const persist = join(this.stateDir, "state");
    mkdirSync(persist, { recursive: true });
    const envFile = join(this.stateDir, "test.env");
    writeFileSync(envFile, `ADMIN_TOKEN=${ADMIN_TOKEN}\nINTERNAL_TOKEN=${INTERNAL_TOKEN}\n`);
    const sqlFile = join(this.stateDir, "data.sql");
    writeFileSync(sqlFile, [freshD1Sql(), SEED_SQL, SCALE_SQL].join("\n"));

    await executeD1File({ persist, sqlFile, logFile });

    const port = await freePortPair(firstPort, 50);
    this.base = `http://${HOST}:${port}`;
    this.dev = startWrangler([
      "dev", ...DEV_CONFIGS, "--ip", HOST, "--port", String(port), "--inspector-port", String(port + 1000),
      "--persist-to", persist, "--log-level", "warn", "--env-file", envFile, "--show-interactive-dev-session=false",
    ], { logFile });
    let exited = null;
    this.dev.exited.then((e) => (exited = e));
    const readyBy = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (exited) throw new Error(`wrangler dev exited early (${exited.signal ?? exited.code}):\n${this.dev.tail()}`);
      if (Date.now() > readyBy) throw new Error(`not ready at ${this.base}/ within ${READY_TIMEOUT_MS / 1000} s:\n${this.dev.tail()}`);
      const up = await fetch(`${this.base}/`, { signal: AbortSignal.timeout(2000) }).then((r) => r.status, () => 0);
      if (up === 200) break;
      await sleep(250);
    }
  }

  async api(method, path, token, body) {
    const headers = { authorization: `Bearer ${token}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    const res = await fetch(this.base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(15_000) });
    const text = await res.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: res.status, json, text };
  }

  /**
   * Spend through the API until the cost report shows it, drain the low pool until its pool_low alert is
   * open, and start every pool's object with one GET /metrics. Returns the open warnings then.
   */
  async prepare() {
    for (const [client_id, pool, amount] of SPEND) {
      const spent = await this.api("POST", "/internal/consume", INTERNAL_TOKEN, { client_id, pool, amount });
      if (spent.status !== 200) throw new Error(`consume answered ${spent.status}: ${spent.text.slice(0, 300)}`);
    }
    // Drain the low pool to 5% of its capacity: its object raises pool_low (a warning) from its next alarm.
    const drained = await this.api("POST", "/internal/consume", INTERNAL_TOKEN, { client_id: "acme", pool: LOW_POOL, amount: 950 });
    if (drained.status !== 200) throw new Error(`consume from ${LOW_POOL} answered ${drained.status}: ${drained.text.slice(0, 300)}`);
    const deliveredBy = Date.now() + REFRESH_WAIT_MS;
    for (;;) {
      const report = await this.api("GET", "/admin/reports/cost?group_by=client", ADMIN_TOKEN);
      const keys = new Set((report.json?.totals?.by_key ?? []).map((k) => k.key));
      const low = await this.api("GET", "/admin/alerts?state=open&kind=pool_low", ADMIN_TOKEN);
      if (["acme", "globex", "hooli"].every((k) => keys.has(k)) && low.json?.alerts?.some((a) => a.subject === LOW_POOL)) break;
      if (Date.now() > deliveredBy) throw new Error(`the spend did not reach the cost report, or no pool_low alert: ${report.text.slice(0, 300)} ${low.text.slice(0, 300)}`);
      await sleep(250);
    }
    const openWarnings = (await this.api("GET", "/admin/alerts?state=open&severity=warning&limit=100", ADMIN_TOKEN)).json.alerts.length;
    // The seeded hour of pool samples stands for a running platform, whose minute cron reads every pool's
    // object; seeded straight into D1, they left the 100 objects never started. One read-only scrape
    // starts them, as the sampler or a Prometheus scrape would have: otherwise the first render would
    // time 100 objects created one after another (under wrangler dev every object shares one thread).
    const scrape = await this.api("GET", "/metrics", ADMIN_TOKEN);
    if (scrape.status !== 200 || !scrape.text.includes("rm_pool_level")) throw new Error(`GET /metrics answered ${scrape.status}: ${scrape.text.slice(0, 300)}`);
    return { openWarnings };
  }

  tail() {
    return this.dev?.tail() ?? "";
  }

  async stop({ keepState = false } = {}) {
    if (this.dev) {
      killGroup(this.dev, "SIGTERM");
      const gone = await Promise.race([this.dev.exited.then(() => true), sleep(5000).then(() => false)]);
      if (!gone) killGroup(this.dev, "SIGKILL");
    }
    if (this.stateDir && !keepState) rmSync(this.stateDir, { recursive: true, force: true });
  }
}

/**
 * On the login form of `base`/admin/dashboard: log in with the admin token, and time from the click
 * until the pools panel is shown. Returns that time and the page's navigation timing.
 */
export async function timeFirstRender(page, base) {
  await page.fill("#token", ADMIN_TOKEN);
  const submitted = Date.now();
  await Promise.all([page.waitForURL(`${base}/admin/dashboard`, { waitUntil: "load" }), page.click("form.login button[type=submit]")]);
  await page.locator("#pools").waitFor();
  const ms = Date.now() - submitted;
  const nav = await page.evaluate(() => performance.getEntriesByType("navigation")[0].toJSON());
  return { ms, nav };
}

/** How a first render prints: its time, and the navigation's response end and load end. */
export function renderFigures({ ms, nav }) {
  return `${ms} ms (response ${Math.round(nav.responseEnd)} ms, load ${Math.round(nav.loadEventEnd)} ms)`;
}
