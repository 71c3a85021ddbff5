#!/usr/bin/env node
// Scrape a real GET /metrics and lint it with `promtool check metrics` (what CI runs).
//
//   1. a temporary persist dir: the local D1 gets the migrations and seed.sql (one wrangler call)
//   2. `wrangler dev` on 127.0.0.1 (the Resource Manager and the sample workers of examples/, as
//      `npm start` runs them), secrets from a temporary --env-file, wrangler's inspector proxy off
//      (VSCODE_INSPECTOR_OPTIONS, see bench/queue.mjs for why)
//   3. a little traffic so that every kind of series exists: consumes (one refused), a 404, an
//      immediate execute that runs a worker
//   4. GET /metrics with the metrics token; the families docs/operations.md lists must be there; the body
//      goes to `promtool check metrics` on stdin, which must print nothing and exit 0
//
// Usage: node ops/check-metrics.mjs (promtool on PATH: Debian's `prometheus` package). Exit status 0
// when the body is valid, 1 otherwise. METRICS_CHECK_KEEP=1 keeps the temporary dir (state, and
// the scraped body in metrics.txt) and prints its path.

import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { DEV_CONFIGS, freePort, freshD1Sql, HOST, ROOT, spawnWrangler, WRANGLER, WRANGLER_ENV } from "../scripts/local-wrangler.mjs";

const TOKENS = { ADMIN_TOKEN: "check-admin-token", INTERNAL_TOKEN: "check-internal-token", METRICS_TOKEN: "check-metrics-token" };
const READY_TIMEOUT_MS = 60_000;
const WATCHDOG_MS = 120_000;
const FAMILIES = [
  "rm_pool_level", "rm_pool_capacity", "rm_pool_utilization_ratio", "rm_pool_denials_total", "rm_pool_leased", "rm_pool_consumes_total", "rm_queue_depth",
  "rm_queue_wait_seconds", "rm_scheduler_settlements_owed", "rm_scheduler_shard_queued", "rm_scheduler_shard_max_queued", "rm_scheduler_dispatches_total", "rm_scheduler_completions_total", "rm_http_request_duration_seconds",
  "rm_spend_nanodollars_total", "rm_client_budget_nanodollars", "rm_alerts_open",
  "rm_rpc_duration_seconds", "rm_rpc_calls_total",
];


const state = mkdtempSync(join(tmpdir(), "rm-metrics-check-"));
let dev = null;
let devOutput = "";

function cleanUp() {
  // The dev server runs in its own process group (node, workerd, esbuild): end the whole group.
  if (dev && dev.exitCode === null) {
    try { process.kill(-dev.pid, "SIGKILL"); } catch { /* already gone */ }
  }
  if (process.env.METRICS_CHECK_KEEP === "1") console.log(`check-metrics: state kept in ${state}`);
  else rmSync(state, { recursive: true, force: true });
}

function fail(message) {
  console.error(`check-metrics: ${message}`);
  if (devOutput) console.error(`--- wrangler dev (last lines) ---\n${devOutput.split("\n").slice(-30).join("\n")}`);
  cleanUp();
  process.exit(1);
}


async function call(base, method, path, { token, json } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (json !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(base + path, { method, headers, body: json === undefined ? undefined : JSON.stringify(json), signal: AbortSignal.timeout(15_000) });
  return { status: res.status, text: await res.text(), contentType: res.headers.get("content-type") };
}

async function main() {
  if (spawnSync("promtool", ["--version"], { stdio: "ignore" }).status !== 0) fail("promtool not found: apt-get install prometheus");
  const persist = join(state, "state");
  const envFile = join(state, "check.env");
  writeFileSync(envFile, Object.entries(TOKENS).map(([k, v]) => `${k}=${v}\n`).join(""));
  const sql = join(state, "migrations-and-seed.sql");
  writeFileSync(sql, freshD1Sql());

  const d1 = spawnSync(process.execPath, [WRANGLER, "d1", "execute", "DB", "--local", "--persist-to", persist, "--yes", "--file", sql], {
    cwd: ROOT, env: WRANGLER_ENV, encoding: "utf8", timeout: 60_000,
  });
  if (d1.status !== 0) fail(`loading migrations and seed failed:\n${d1.stdout}\n${d1.stderr}`);

  const [port, inspectorPort] = [await freePort(), await freePort()];
  const base = `http://${HOST}:${port}`;
  dev = spawnWrangler([
    "dev", ...DEV_CONFIGS, "--ip", HOST, "--port", String(port), "--inspector-port", String(inspectorPort),
    "--persist-to", persist, "--log-level", "warn", "--env-file", envFile, "--show-interactive-dev-session=false",
  ]);
  const keep = (chunk) => { devOutput = (devOutput + chunk.toString()).slice(-20_000); };
  dev.stdout.on("data", keep);
  dev.stderr.on("data", keep);

  const readyBy = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (dev.exitCode !== null) fail(`wrangler dev exited early (${dev.exitCode})`);
    if (Date.now() > readyBy) fail(`not ready at ${base}/ within ${READY_TIMEOUT_MS / 1000} s`);
    const ok = await call(base, "GET", "/").then((r) => r.status === 200, () => false);
    if (ok) break;
    await sleep(250);
  }

  const internal = { token: TOKENS.INTERNAL_TOKEN };
  for (const amount of [400, 400, 400]) {
    // email-sendgrid holds 1,000: the third is refused (a denial).
    await call(base, "POST", "/internal/consume", { ...internal, json: { client_id: "acme", pool: "email-sendgrid", amount } });
  }
  await call(base, "GET", "/no/such/route");
  const executed = await call(base, "POST", "/api/execute", { token: "rmk_demo_enterprise_acme", json: { template: "notify-sms", params: { to: "+15550100" } } });
  // 200 when it ran within the call; 202 when it was queued (a slow machine): the scrape below waits for it.
  if (executed.status !== 200 && executed.status !== 202) fail(`POST /api/execute answered ${executed.status}: ${executed.text.slice(0, 300)}`);

  const denied = await call(base, "GET", "/metrics", internal);
  if (denied.status !== 403) fail(`GET /metrics with the internal token answered ${denied.status}, expected 403`);
  const completed = /^rm_scheduler_completions_total\{template="notify-sms"\} 1$/m;
  let scraped;
  for (const giveUpAt = Date.now() + 30_000; ;) {
    scraped = await call(base, "GET", "/metrics", { token: TOKENS.METRICS_TOKEN });
    if (scraped.status !== 200) fail(`GET /metrics answered ${scraped.status}: ${scraped.text.slice(0, 300)}`);
    if (completed.test(scraped.text)) break;
    if (Date.now() > giveUpAt) fail("the executed request is not counted in rm_scheduler_completions_total");
    await sleep(250);
  }
  if (!scraped.contentType?.startsWith("text/plain; version=0.0.4")) fail(`content type ${scraped.contentType}`);
  const missing = FAMILIES.filter((f) => !scraped.text.includes(`# TYPE ${f} `));
  if (missing.length) fail(`families missing: ${missing.join(", ")}`);
  if (!/^rm_pool_denials_total\{pool="email-sendgrid"\} 1$/m.test(scraped.text)) fail("the refused consume is not counted in rm_pool_denials_total");

  writeFileSync(join(state, "metrics.txt"), scraped.text);
  const lint = spawnSync("promtool", ["check", "metrics"], { input: scraped.text, encoding: "utf8" });
  const problems = `${lint.stdout}${lint.stderr}`.trim();
  if (lint.status !== 0 || problems) fail(`promtool check metrics (exit ${lint.status}):\n${problems}`);
  const lines = scraped.text.split("\n").filter((l) => l && !l.startsWith("#")).length;
  console.log(`check-metrics: promtool check metrics passed (${lines} samples, ${scraped.text.length} bytes)`);
  cleanUp();
}

const watchdog = setTimeout(() => fail(`gave up after ${WATCHDOG_MS / 1000} s`), WATCHDOG_MS);
watchdog.unref();
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => fail(`stopped by ${sig}`));
main().catch((err) => fail(err instanceof Error ? err.stack ?? err.message : String(err)));
