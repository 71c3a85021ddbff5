#!/usr/bin/env node
// The operator's dashboard in headless Chromium, against a real `wrangler dev` on 127.0.0.1.
//
//   1. a fresh temporary persist dir: the migrations, seed.sql and this test's data (an open critical alert
//      whose text carries markup, a failed request with a JSON error body; at scale, 100 pools with an
//      hour of minute samples, 1,000 clients with this month's spend, an hour of queue samples) in the
//      local D1 (one wrangler call)
//   2. wrangler dev with the sample workers of examples/ (secrets from a temporary --env-file; the
//      inspector proxy off, see bench/queue.mjs), ready when GET / answers 200; then some spend through
//      /internal/consume, waited for until the cost report shows it (pool outbox -> D1 rollups), and a
//      pool drained below 10%, waited for until its pool_low alert is open; one GET /metrics, which starts
//      every pool's object as the minute sampler behind the seeded samples would have
//   3. Debian's chromium (/usr/bin/chromium) through playwright-core, a fresh profile, at 1366x768: log
//      in through the form and time the first render (under FIRST_RENDER_BUDGET_MS at this scale), check
//      the cookie (HttpOnly, Secure, SameSite=Strict, no token in it); the header counts the open alerts
//      by severity above the fold (the low pool's warning among them, the critical one highlighted) and
//      the alerts panel comes first; the charts have one point per sample; budgets come in risk order;
//      no amount has more than 2 decimals; failures show code and message; the seeded alert's markup is
//      shown as text, never run. Screenshot: artifacts/dashboard-critical.png
//   4. Ack the alert: it disappears, the admin API says acknowledged, the header's critical count is 0 and
//      the alerts panel goes back after the scheduler (artifacts/dashboard-desktop.png). Stop the scheduler with its
//      button, enqueue a request through the API and watch the page show it queued without a reload
//      (the 5 s refresh), start the scheduler with its button and watch the queue drain
//   5. at 390x844 (a phone): no horizontal overflow, wide tables scroll inside their panels
//      (artifacts/dashboard-phone.png)
//   6. /docs: its files come from the worker (nosniff); Swagger UI renders every operation of /openapi.json,
//      "Try it out" calls this origin, nothing is loaded from another origin and the content security
//      policy blocks nothing (artifacts/docs.png)
//   7. no console error or page error the whole time (a Content-Security-Policy violation is one)
//
// Usage: npm run test:browser. Exit status 0 when every check passed, 1 otherwise. Knobs: BROWSER_TEST_PORT
// (first port to try, default 8971), BROWSER_TEST_KEEP_STATE=1 (keep the temporary directory),
// CHROMIUM_PATH (default /usr/bin/chromium; Debian: apt-get install chromium).

import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { DEV_CONFIGS, freePortPair, freshD1Sql, HOST, killGroup, ROOT, startWrangler } from "../../scripts/local-wrangler.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = join(HERE, "artifacts");
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const FIRST_PORT = Number(process.env.BROWSER_TEST_PORT ?? 8971);
const KEEP_STATE = process.env.BROWSER_TEST_KEEP_STATE === "1";
const READY_TIMEOUT_MS = 90_000;
const WATCHDOG_MS = 300_000;
/** Issue 24: the first render after login, at the scale below. */
const FIRST_RENDER_BUDGET_MS = 2000;
const DESKTOP = { width: 1366, height: 768 };
const PHONE = { width: 390, height: 844 };
/** Longer than the page's 5 s refresh, with room for a loaded machine. */
const REFRESH_WAIT_MS = 15_000;

const ADMIN_TOKEN = "browser-admin-token";
const INTERNAL_TOKEN = "browser-internal-token";
const ACME_KEY = "rmk_demo_enterprise_acme";
const ALERT_ID = "alt_0123456789abcdef0123456789abcdef";
const MARKUP = `<img src=x onerror="alert('xss')">`;

/** Spent through the API once the service runs: [client, pool, units]; the budgets panel shows it. */
const SPEND = [["acme", "openai-gpt4", 1500], ["acme", "email-sendgrid", 40], ["globex", "openai-gpt35", 20000], ["hooli", "sms-twilio", 3]];
const now = Date.now();
const NOW_MIN = Math.floor(now / 60_000) * 60_000;

// Scale (issue 24): 100 pools (6 from the migrations, the low pool, 93 more) with an hour of minute
// samples, and 1,000 clients (4 demo, 996 more) with a budget and this month's spend in the rollups.
const SCALE_POOLS = 93;
const SCALE_CLIENTS = 996;
const LOW_POOL = "browser-low";
/** Samples of the low pool in the last hour, and of the normal queue: what its charts must draw. */
const LOW_POOL_SAMPLES = 37;
const QUEUE_SAMPLES = 45;
const BUDGET_ROWS = 20;
/** Client i's budget and spend (SCALE_SQL computes the same): spend is k/1000 of the budget, k up to 1012 (a few are past their budget). */
function scaleClient(i) {
  const budget = 100_000_000_000 + (i % 7) * 50_000_000_000;
  const k = (i * 7919) % 1013;
  return { id: `scale-${String(i).padStart(4, "0")}`, budget, spent: (budget / 1000) * k, k };
}
const scaleClients = Array.from({ length: SCALE_CLIENTS }, (_, i) => scaleClient(i + 1));
/** The budgets panel's rows: by spent / budget (exact), then more spent, then id. The demo clients spend far less. */
const expectedRisk = [...scaleClients].sort((a, b) => {
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


let stateDir = null;
let dev = null;
let context = null;

function fail(message) {
  throw new Error(message);
}

function check(condition, message) {
  if (!condition) fail(message);
  console.log(`  ok  ${message}`);
}


let BASE = "";

async function api(method, path, token, body) {
  const headers = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(BASE + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(15_000) });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, json, text };
}

async function startService(logFile) {
  stateDir = mkdtempSync(join(tmpdir(), "rm-browser-test-"));
  const persist = join(stateDir, "state");
  mkdirSync(persist, { recursive: true });
  const envFile = join(stateDir, "test.env");
  writeFileSync(envFile, `ADMIN_TOKEN=${ADMIN_TOKEN}\nINTERNAL_TOKEN=${INTERNAL_TOKEN}\n`);
  const sqlFile = join(stateDir, "data.sql");
  writeFileSync(sqlFile, [freshD1Sql(), SEED_SQL, SCALE_SQL].join("\n"));

  const d1 = startWrangler(["d1", "execute", "DB", "--local", "--persist-to", persist, "--yes", "--file", sqlFile], { logFile });
  const timer = setTimeout(() => killGroup(d1, "SIGKILL"), 90_000);
  const applied = await d1.exited;
  clearTimeout(timer);
  if (applied.code !== 0) fail(`wrangler d1 execute failed (${applied.signal ?? applied.code}):\n${d1.tail()}`);

  const port = await freePortPair(FIRST_PORT, 50);
  BASE = `http://${HOST}:${port}`;
  dev = startWrangler([
    "dev", ...DEV_CONFIGS, "--ip", HOST, "--port", String(port), "--inspector-port", String(port + 1000),
    "--persist-to", persist, "--log-level", "warn", "--env-file", envFile, "--show-interactive-dev-session=false",
  ], { logFile });
  let exited = null;
  dev.exited.then((e) => (exited = e));
  const readyBy = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (exited) fail(`wrangler dev exited early (${exited.signal ?? exited.code}):\n${dev.tail()}`);
    if (Date.now() > readyBy) fail(`not ready at ${BASE}/ within ${READY_TIMEOUT_MS / 1000} s:\n${dev.tail()}`);
    const up = await fetch(`${BASE}/`, { signal: AbortSignal.timeout(2000) }).then((r) => r.status, () => 0);
    if (up === 200) break;
    await sleep(250);
  }
}

async function run() {
  const started = Date.now();
  if (!existsSync(CHROMIUM)) fail(`no Chromium at ${CHROMIUM}: apt-get install -y --no-install-recommends chromium (or set CHROMIUM_PATH)`);
  mkdirSync(ARTIFACTS, { recursive: true });
  const logFile = join(ARTIFACTS, "wrangler.log");
  writeFileSync(logFile, "");
  await startService(logFile);
  console.log(`dashboard browser test: service ready at ${BASE} after ${((Date.now() - started) / 1000).toFixed(1)} s`);
  for (const [client_id, pool, amount] of SPEND) {
    const spent = await api("POST", "/internal/consume", INTERNAL_TOKEN, { client_id, pool, amount });
    if (spent.status !== 200) fail(`consume answered ${spent.status}: ${spent.text.slice(0, 300)}`);
  }
  // Drain the low pool to 5% of its capacity: its object raises pool_low (a warning) from its next alarm.
  const drained = await api("POST", "/internal/consume", INTERNAL_TOKEN, { client_id: "acme", pool: LOW_POOL, amount: 950 });
  if (drained.status !== 200) fail(`consume from ${LOW_POOL} answered ${drained.status}: ${drained.text.slice(0, 300)}`);
  const deliveredBy = Date.now() + REFRESH_WAIT_MS;
  for (;;) {
    const report = await api("GET", "/admin/reports/cost?group_by=client", ADMIN_TOKEN);
    const keys = new Set((report.json?.totals?.by_key ?? []).map((k) => k.key));
    const low = await api("GET", "/admin/alerts?state=open&kind=pool_low", ADMIN_TOKEN);
    if (["acme", "globex", "hooli"].every((k) => keys.has(k)) && low.json?.alerts?.some((a) => a.subject === LOW_POOL)) break;
    if (Date.now() > deliveredBy) fail(`the spend did not reach the cost report, or no pool_low alert: ${report.text.slice(0, 300)} ${low.text.slice(0, 300)}`);
    await sleep(250);
  }
  const openWarnings = (await api("GET", "/admin/alerts?state=open&severity=warning&limit=100", ADMIN_TOKEN)).json.alerts.length;
  // The seeded hour of pool samples stands for a running platform, whose minute cron reads every pool's
  // object; seeded straight into D1, they left the 100 objects never started. One read-only scrape
  // starts them, as the sampler or a Prometheus scrape would have: otherwise the first render would
  // time 100 objects created one after another (under wrangler dev every object shares one thread).
  const scrape = await api("GET", "/metrics", ADMIN_TOKEN);
  if (scrape.status !== 200 || !scrape.text.includes("rm_pool_level")) fail(`GET /metrics answered ${scrape.status}: ${scrape.text.slice(0, 300)}`);

  const profile = join(stateDir, "chromium-profile");
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: DESKTOP,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync",
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(REFRESH_WAIT_MS);
  const problems = [];
  const watch = (p) => {
    p.on("console", (msg) => {
      if (msg.type() === "error") problems.push(`console: ${msg.text()}`);
    });
    p.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
    p.on("dialog", (dialog) => {
      problems.push(`a dialog opened (markup ran as script?): ${dialog.message()}`);
      void dialog.dismiss();
    });
  };
  watch(page);

  // Login.
  await page.goto(`${BASE}/admin/dashboard`);
  await page.locator("form.login").waitFor();
  check(!(await page.content()).includes(ADMIN_TOKEN), "the login form holds no secret");
  await page.fill("#token", "not-the-token");
  await Promise.all([page.waitForLoadState("load"), page.click("form.login button[type=submit]")]);
  check((await page.locator("form.login [role=alert]").textContent())?.includes("not the admin token"), "a wrong token is refused with the form again");
  // Chromium logs that 401 as a failed resource load: expected here, and the only one.
  const refused = problems.splice(0);
  check(refused.length === 1 && refused[0].includes("401"), "the refused login is the only failed load so far");
  await page.fill("#token", ADMIN_TOKEN);
  const submitted = Date.now();
  await Promise.all([page.waitForURL(`${BASE}/admin/dashboard`, { waitUntil: "load" }), page.click("form.login button[type=submit]")]);
  await page.locator("#pools").waitFor();
  const firstRenderMs = Date.now() - submitted;
  const nav = await page.evaluate(() => performance.getEntriesByType("navigation")[0].toJSON());
  check(firstRenderMs < FIRST_RENDER_BUDGET_MS,
    `the first render after login takes ${firstRenderMs} ms (< ${FIRST_RENDER_BUDGET_MS}) with 100 pools and 1,000 clients (response ${Math.round(nav.responseEnd)} ms, load ${Math.round(nav.loadEventEnd)} ms)`);
  check((await page.locator("#pools tr[data-pool]").count()) === 100, "all 100 pools are shown");
  const cookie = (await context.cookies(`${BASE}/admin/dashboard`)).find((c) => c.name === "rm_admin_session");
  check(cookie && cookie.httpOnly && cookie.secure && cookie.sameSite === "Strict" && cookie.path === "/admin", "the session cookie is HttpOnly, Secure, SameSite=Strict, Path=/admin");
  check(!cookie.value.includes(ADMIN_TOKEN), "the session cookie does not hold the token");
  check((await page.evaluate(() => document.cookie)) === "", "the page's script cannot read the session cookie");
  check(!(await page.content()).includes(ADMIN_TOKEN), "the dashboard holds no secret");

  // The seeded state.
  const pools = await page.locator("#pools tr[data-pool]").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-pool")));
  check(["d1-queries", "email-sendgrid", "kv-storage", "openai-gpt35", "openai-gpt4", "sms-twilio"].every((p) => pools.includes(p)), `the pools are shown (${pools.join(", ")})`);
  check((await page.locator('#pools tr[data-pool="openai-gpt4"] meter').count()) === 1, "each pool has a level bar");
  const queues = await page.locator("#queues tr[data-queue]").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-queue")));
  check(queues.join(",") === "immediate,fast,normal,batch,deferred", "the five queues are shown with their depth and waits");
  const risky = await page.locator("#budgets tr[data-client]").evaluateAll((rows) => rows.map((r) => ({
    id: r.getAttribute("data-client"), permille: r.querySelector("td.used").getAttribute("data-permille"), over: r.querySelector("td.projection").getAttribute("data-overrun"),
    budget: Number(r.querySelector("td.used .money").getAttribute("data-nano")), projected: Number(r.querySelector("td.projection .money").getAttribute("data-nano")),
  })));
  check(risky.map((r) => r.id).join(",") === expectedRisk.map((c) => c.id).join(","),
    `budgets come in risk order: the ${BUDGET_ROWS} of 1,000 clients closest to their limit, closest first (${risky.slice(0, 3).map((r) => `${r.id} ${r.permille / 10}%`).join(", ")}, ...)`);
  check(risky.every((r, i) => Number(r.permille) === expectedRisk[i].k), "each shows its budget use to the tenth of a percent");
  check(risky.every((r, i) => r.budget === expectedRisk[i].budget && r.projected >= expectedRisk[i].spent && (r.over === "true") === (r.projected > r.budget)),
    `each shows a month-end projection (at least what is spent), marked when it passes the budget (${risky.filter((r) => r.over === "true").length} of ${risky.length} marked)`);
  const amounts = await page.evaluate(() => document.body.innerText.match(/\$[\d,]*\.\d+/g) ?? []);
  check(amounts.length > 50 && amounts.every((a) => /\.\d{2}$/.test(a)), `no amount has more than 2 decimals (${amounts.length} amounts, e.g. ${amounts.slice(0, 3).join(" ")})`);
  const money = await page.locator("#budgets .money").first().getAttribute("title");
  check(/^[\d,]+ nano-dollars \(\$\d+(\.\d+)?\)$/.test(money), `the exact nano-dollars are in the amount's tooltip (${money})`);
  const stamp = page.locator("#failures time").first();
  check(/ago$/.test(await stamp.textContent()) && / UTC$/.test(await stamp.getAttribute("title")), "times read as relative, with the UTC time on hover");
  const alert = page.locator(`#alerts li[data-alert-id="${ALERT_ID}"]`);
  check((await alert.count()) === 1, "the open alert is shown");
  check((await alert.textContent()).includes(MARKUP), "the alert's markup is shown as text");
  check((await page.locator("#alerts img").count()) === 0, "the alert's markup made no element");
  const failure = page.locator('#failures tr[data-request="req_0000000000000000000000000000fa11"] td.failure');
  check((await failure.innerText()).trim() === "upstream_down Twilio is down", "the recent failure shows its code and message, not raw JSON");
  check((await page.locator("#scaling").textContent()).includes("No scaling events."), "the scaling events section is shown, empty");
  // The header, above the fold at 1366x768: the open alerts by severity, the critical one highlighted.
  const warning = page.locator('#summary a[data-severity="warning"]');
  const warnBox = await warning.boundingBox();
  check(Number(await warning.getAttribute("data-count")) === openWarnings && openWarnings >= 1 && warnBox.y + warnBox.height <= DESKTOP.height,
    `the low pool's alert is counted in the header above the fold (${(await warning.innerText()).trim()} at y=${Math.round(warnBox.y)})`);
  check((await page.locator(`#alerts li:has-text("pool ${LOW_POOL} is at")`).count()) === 1, "the low pool's alert is listed in the alerts panel");
  const critical = page.locator('#summary a[data-severity="critical"]');
  check((await critical.getAttribute("data-count")) === "1" && (await critical.getAttribute("class")).includes("hot") && (await critical.getAttribute("href")) === "#alerts",
    "the header highlights the critical alert and links to the alerts panel");
  check((await page.locator("#summary .sched").innerText()).trim() === "scheduler running", "the header shows the scheduler's state");
  const firstPanel = () => page.evaluate(() => document.querySelector("#panels section").id);
  check((await firstPanel()) === "alerts", "with a critical alert open, the alerts panel comes first");

  // Charts: one point per sample of the last hour.
  const points = (sel) => page.locator(sel).evaluate((l) => ({ n: Number(l.getAttribute("data-points")), drawn: l.getAttribute("points").trim().split(/\s+/).length }));
  const lowChart = await points(`#trend-pools polyline[data-series="${LOW_POOL}"]`);
  check(lowChart.n === LOW_POOL_SAMPLES && lowChart.drawn === LOW_POOL_SAMPLES, `the pool chart draws ${lowChart.drawn} points for ${LOW_POOL_SAMPLES} samples`);
  const lowSpark = await points(`#pools tr[data-pool="${LOW_POOL}"] svg.spark polyline`);
  check(lowSpark.drawn === LOW_POOL_SAMPLES, `the pool's sparkline draws ${lowSpark.drawn} points for ${LOW_POOL_SAMPLES} samples`);
  const depthChart = await points('#trend-queue-depth polyline[data-series="normal"]');
  check(depthChart.drawn === QUEUE_SAMPLES, `the queue depth chart draws ${depthChart.drawn} points for ${QUEUE_SAMPLES} samples`);
  const labels = await page.locator("#trend-pools svg text").allTextContents();
  check(["0%", "100%", "-60 min", "now", "% of capacity in use"].every((l) => labels.includes(l)), "the charts label their axes");
  check((await page.locator(`#trend-pools li[data-series="${LOW_POOL}"]`).innerText()).includes("95.0% used"), "the pool chart shows the current value");

  const shot = async (name, fullPage) => {
    const file = join(ARTIFACTS, name);
    await page.screenshot({ path: file, fullPage });
    check(readFileSync(file).subarray(1, 4).toString() === "PNG", `a screenshot is at ${file}`);
  };
  await shot("dashboard-critical.png", false);

  // Ack: the alert disappears, through the admin API.
  await alert.locator('button[data-action="ack"]').click();
  await alert.waitFor({ state: "detached" });
  const acked = await api("GET", `/admin/alerts/${ALERT_ID}`, ADMIN_TOKEN);
  check(acked.json?.alert?.state === "acknowledged", "an acknowledged alert disappears from the page and is acknowledged in the API");
  await page.waitForFunction(() => document.querySelector('#summary a[data-severity="critical"]')?.getAttribute("data-count") === "0");
  check((await firstPanel()) === "scheduler", "with no critical alert, the header's count is 0 and the alerts panel follows the scheduler");
  await shot("dashboard-desktop.png", true);

  // Stop, watch the page refresh itself, start.
  await page.click('#scheduler button[data-action="stop"]');
  await page.locator('#scheduler strong[data-running="false"]').waitFor();
  check((await api("GET", "/admin/scheduler/status", ADMIN_TOKEN)).json?.running === false, "the Stop button stops the scheduler");
  const queued = await api("POST", "/api/queue/enqueue", ACME_KEY, { template: "notify-email", queue: "normal", params: { to: ["ops@acme.example"] } });
  if (queued.status !== 202) fail(`enqueue answered ${queued.status}: ${queued.text.slice(0, 300)}`);
  const depth = page.locator('#queues tr[data-queue="normal"] td.depth');
  await page.waitForFunction(() => document.querySelector('#queues tr[data-queue="normal"] td.depth')?.textContent === "1", null, { timeout: REFRESH_WAIT_MS });
  check((await depth.textContent()) === "1", "the page refreshes itself: the request queued meanwhile is shown without a reload");
  await page.click('#scheduler button[data-action="start"]');
  await page.locator('#scheduler strong[data-running="true"]').waitFor();
  check((await api("GET", "/admin/scheduler/status", ADMIN_TOKEN)).json?.running === true, "the Start button starts the scheduler");
  await page.waitForFunction(() => document.querySelector('#queues tr[data-queue="normal"] td.depth')?.textContent === "0", null, { timeout: REFRESH_WAIT_MS });
  check(true, "the queue drains once the scheduler runs");

  // A phone: no sideways scrolling of the page; wide tables scroll inside their panels.
  const phone = await context.newPage();
  watch(phone);
  await phone.setViewportSize(PHONE);
  await phone.goto(`${BASE}/admin/dashboard`);
  await phone.locator("#pools").waitFor();
  const widths = await phone.evaluate(() => ({
    page: document.documentElement.scrollWidth, view: window.innerWidth,
    inner: [...document.querySelectorAll("section .scroll")].filter((d) => d.scrollWidth > d.clientWidth).length,
  }));
  check(widths.page <= PHONE.width && widths.view === PHONE.width, `no horizontal overflow at ${PHONE.width} px (page ${widths.page} px wide)`);
  check(widths.inner > 0, `wide tables scroll inside their panels (${widths.inner} of them)`);
  const phoneShot = join(ARTIFACTS, "dashboard-phone.png");
  await phone.screenshot({ path: phoneShot, fullPage: false });
  check(readFileSync(phoneShot).subarray(1, 4).toString() === "PNG", `a screenshot is at ${phoneShot}`);

  // /docs: Swagger UI served by the worker (src/routes/docs-files.ts) over /openapi.json, under a self-only policy.
  for (const [path, type] of [["/docs/init.js", "text/javascript"], ["/docs/swagger-ui/swagger-ui-bundle.js", "text/javascript"], ["/docs/swagger-ui/swagger-ui.css", "text/css"]]) {
    const res = await fetch(BASE + path, { signal: AbortSignal.timeout(15_000) });
    await res.arrayBuffer();
    check(res.status === 200 && res.headers.get("content-type")?.startsWith(type) && res.headers.get("x-content-type-options") === "nosniff",
      `${path} is served (${res.status}, ${res.headers.get("content-type")}, nosniff)`);
  }
  const docs = await context.newPage();
  watch(docs);
  await docs.addInitScript(() => {
    window.__violations = [];
    document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const foreign = [];
  docs.on("request", (r) => {
    if (!r.url().startsWith(`${BASE}/`) && !r.url().startsWith("data:")) foreign.push(r.url());
  });
  await docs.goto(`${BASE}/docs`);
  await docs.locator(".opblock").first().waitFor();
  const documented = Object.values((await api("GET", "/openapi.json", ADMIN_TOKEN)).json.paths)
    .reduce((n, item) => n + Object.keys(item).filter((k) => ["get", "put", "post", "delete", "patch"].includes(k)).length, 0);
  check((await docs.locator(".opblock").count()) === documented, `/docs renders all ${documented} operations of /openapi.json`);
  const health = docs.locator('.opblock:has(.opblock-summary-path[data-path="/health"])').first();
  await health.locator(".opblock-summary").click();
  await health.locator("button.execute").click();
  const answered = health.locator(".live-responses-table tbody .response-col_status").first();
  await answered.waitFor();
  check((await answered.innerText()).trim() === "200", "/docs tries an operation on this origin: GET /health answers 200");
  const docsShot = join(ARTIFACTS, "docs.png");
  await docs.screenshot({ path: docsShot, fullPage: false });
  const violations = await docs.evaluate(() => window.__violations);
  check(violations.length === 0 && foreign.length === 0,
    `/docs loads nothing from another origin and its content security policy blocks nothing${violations.length || foreign.length ? `: ${[...violations, ...foreign].join(" | ")}` : ""}`);

  check(problems.length === 0, `no console error, page error or dialog${problems.length ? `: ${problems.join(" | ")}` : ""}`);
  console.log(`dashboard browser test: passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

async function cleanup() {
  await context?.close().catch(() => {});
  if (dev) {
    killGroup(dev, "SIGTERM");
    const gone = await Promise.race([dev.exited.then(() => true), sleep(5000).then(() => false)]);
    if (!gone) killGroup(dev, "SIGKILL");
  }
  if (stateDir && !KEEP_STATE) rmSync(stateDir, { recursive: true, force: true });
}

const watchdog = setTimeout(() => {
  console.error(`dashboard browser test: no result within ${WATCHDOG_MS / 1000} s`);
  if (dev) killGroup(dev, "SIGKILL");
  process.exit(1);
}, WATCHDOG_MS);
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, async () => {
    await cleanup();
    process.exit(130);
  });
}

let status = 0;
try {
  await run();
} catch (err) {
  status = 1;
  console.error(`dashboard browser test: FAILED: ${err instanceof Error ? err.message : String(err)}`);
  if (dev) console.error(`wrangler dev output (end):\n${dev.tail()}`);
} finally {
  await cleanup();
  clearTimeout(watchdog);
}
process.exit(status);
