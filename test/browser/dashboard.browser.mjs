#!/usr/bin/env node
// The operator's dashboard in headless Chromium, against a real `wrangler dev` on 127.0.0.1.
//
//   1. a fresh temporary persist dir: the migrations, seed.sql and this test's data (an open alert whose
//      text carries markup, a failed request) in the local D1 (one wrangler call)
//   2. wrangler dev with the sample workers of examples/ (secrets from a temporary --env-file; the
//      inspector proxy off, see bench/queue.mjs), ready when GET / answers 200; then some spend through
//      /internal/consume, waited for until the cost report shows it (pool outbox -> D1 rollups)
//   3. Debian's chromium (/usr/bin/chromium) through playwright-core, a fresh profile: log in through
//      the form, check the cookie (HttpOnly, Secure, SameSite=Strict, no token in it), check that the
//      page shows the seeded pools, queues, budget, alert (its markup shown as text, never run) and
//      failure, and take test/browser/artifacts/dashboard.png
//   4. Ack the alert: it disappears, and the admin API says acknowledged. Stop the scheduler with its
//      button, enqueue a request through the API and watch the page show it queued without a reload
//      (the 5 s refresh), start the scheduler with its button and watch the queue drain
//   5. no console error or page error the whole time (a Content-Security-Policy violation is one)
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
const WATCHDOG_MS = 180_000;
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
const SEED_SQL = `
INSERT INTO alerts (id, kind, subject, severity, state, message, details, dedupe_key, count, raised_at, updated_at)
VALUES ('${ALERT_ID}', 'worker_failures', 'content-generate', 'critical', 'open',
        'content-generate failed 7 of 10 calls: ${MARKUP.replaceAll("'", "''")}', '{}', 'worker_failures:content-generate', 3, ${now - 60_000}, ${now - 60_000});
INSERT INTO request_log (id, client_id, template, queue, status, estimate_nano, actual_nano, attempts, created_at, finished_at, error)
VALUES ('req_0000000000000000000000000000fa11', 'initech', 'notify-sms', 'fast', 'failed', 7500000, NULL, 3, ${now - 90_000}, ${now - 30_000},
        'worker answered 500: simulated upstream error');
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
  writeFileSync(sqlFile, [freshD1Sql(), SEED_SQL].join("\n"));

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
  const deliveredBy = Date.now() + REFRESH_WAIT_MS;
  for (;;) {
    const report = await api("GET", "/admin/reports/cost?group_by=client", ADMIN_TOKEN);
    if (report.json?.totals?.by_key?.length === 3) break;
    if (Date.now() > deliveredBy) fail(`the spend did not reach the cost report: ${report.text.slice(0, 300)}`);
    await sleep(250);
  }

  const profile = join(stateDir, "chromium-profile");
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1440, height: 1100 },
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync",
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(REFRESH_WAIT_MS);
  const problems = [];
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console: ${msg.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("dialog", (dialog) => {
    problems.push(`a dialog opened (markup ran as script?): ${dialog.message()}`);
    void dialog.dismiss();
  });

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
  await Promise.all([page.waitForURL(`${BASE}/admin/dashboard`), page.click("form.login button[type=submit]")]);
  await page.locator("#pools").waitFor();
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
  const spenders = await page.locator("#budgets tr[data-client]").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-client")));
  check(spenders.join(",") === "acme,globex,hooli", `the top spenders' budgets are shown, most first (${spenders.join(", ")})`);
  check((await page.locator('#budgets tr[data-client="acme"]').textContent()).includes("$0.049"), "acme's spend is 1,500 GPT-4 tokens and 40 e-mails: $0.049");
  const alert = page.locator(`#alerts li[data-alert-id="${ALERT_ID}"]`);
  check((await alert.count()) === 1, "the open alert is shown");
  check((await alert.textContent()).includes(MARKUP), "the alert's markup is shown as text");
  check((await page.locator("#alerts img").count()) === 0, "the alert's markup made no element");
  check((await page.locator('#failures tr[data-request="req_0000000000000000000000000000fa11"]').count()) === 1, "the recent failure is shown");
  check((await page.locator("#scaling").textContent()).includes("No scaling events."), "the scaling events section is shown, empty");
  const shot = join(ARTIFACTS, "dashboard.png");
  await page.screenshot({ path: shot, fullPage: true });
  check(readFileSync(shot).subarray(1, 4).toString() === "PNG", `a screenshot is at ${shot}`);

  // Ack: the alert disappears, through the admin API.
  await alert.locator('button[data-action="ack"]').click();
  await alert.waitFor({ state: "detached" });
  const acked = await api("GET", `/admin/alerts/${ALERT_ID}`, ADMIN_TOKEN);
  check(acked.json?.alert?.state === "acknowledged", "an acknowledged alert disappears from the page and is acknowledged in the API");

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
