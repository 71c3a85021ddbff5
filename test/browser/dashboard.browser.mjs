#!/usr/bin/env node
// The operator's dashboard in headless Chromium, against a real `wrangler dev` on 127.0.0.1.
//
//   1-2. the service at scale (./dashboard-service.mjs, shared with bench/dashboard.mjs): a fresh
//      temporary persist dir with the migrations, seed.sql and this test's data (an open critical alert
//      whose text carries markup, a failed request with a JSON error body; 100 pools with an hour of
//      minute samples, 1,000 clients with this month's spend, an hour of queue samples); wrangler dev with
//      the sample workers of examples/ (secrets from a temporary --env-file); some spend through
//      /internal/consume, waited for until the cost report shows it, a pool drained below 10% with its
//      pool_low alert open, and one GET /metrics, which starts every pool's object
//   3. Debian's chromium (/usr/bin/chromium) through playwright-core, a fresh profile, at 1366x768: log
//      in through the form (the first render's time is printed; bench/dashboard.mjs measures it against
//      issue 24's 2 s), check the cookie (HttpOnly, Secure, SameSite=Strict, no token in it); the header
//      counts the open alerts by severity above the fold (the low pool's warning among them, the
//      critical one highlighted) and the alerts panel comes first; the charts have one point per sample;
//      budgets come in risk order; no amount has more than 2 decimals; failures show code and message;
//      the seeded alert's markup is shown as text, never run. Screenshot: artifacts/dashboard-critical.png
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

import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import {
  ACME_KEY, ADMIN_TOKEN, ALERT_ID, BUDGET_ROWS, CHROMIUM, CHROMIUM_ARGS, DashboardService, DESKTOP, expectedRisk, LOW_POOL,
  LOW_POOL_SAMPLES, MARKUP, QUEUE_SAMPLES, REFRESH_WAIT_MS, renderFigures, timeFirstRender,
} from "./dashboard-service.mjs";
import { killGroup } from "../../scripts/local-wrangler.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = join(HERE, "artifacts");
const FIRST_PORT = Number(process.env.BROWSER_TEST_PORT ?? 8971);
const KEEP_STATE = process.env.BROWSER_TEST_KEEP_STATE === "1";
const WATCHDOG_MS = 300_000;
const PHONE = { width: 390, height: 844 };

const service = new DashboardService();
let context = null;

function fail(message) {
  throw new Error(message);
}

function check(condition, message) {
  if (!condition) fail(message);
  console.log(`  ok  ${message}`);
}

const api = (...args) => service.api(...args);

async function run() {
  const started = Date.now();
  if (!existsSync(CHROMIUM)) fail(`no Chromium at ${CHROMIUM}: apt-get install -y --no-install-recommends chromium (or set CHROMIUM_PATH)`);
  mkdirSync(ARTIFACTS, { recursive: true });
  const logFile = join(ARTIFACTS, "wrangler.log");
  writeFileSync(logFile, "");
  await service.start({ logFile, firstPort: FIRST_PORT });
  const BASE = service.base;
  console.log(`dashboard browser test: service ready at ${BASE} after ${((Date.now() - started) / 1000).toFixed(1)} s`);
  const { openWarnings } = await service.prepare();

  const profile = join(service.stateDir, "chromium-profile");
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: DESKTOP,
    args: CHROMIUM_ARGS,
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
  // Timed against issue 24's 2 s budget by bench/dashboard.mjs, not here: printed for the log.
  const render = await timeFirstRender(page, BASE);
  console.log(`  first render after login: ${renderFigures(render)} with 100 pools and 1,000 clients`);
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
  await service.stop({ keepState: KEEP_STATE });
}

const watchdog = setTimeout(() => {
  console.error(`dashboard browser test: no result within ${WATCHDOG_MS / 1000} s`);
  if (service.dev) killGroup(service.dev, "SIGKILL");
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
  if (service.dev) console.error(`wrangler dev output (end):\n${service.tail()}`);
} finally {
  await cleanup();
  clearTimeout(watchdog);
}
process.exit(status);
