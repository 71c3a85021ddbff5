#!/usr/bin/env node
// Load benchmark: starts three `wrangler dev` instances on 127.0.0.1 and measures them with autocannon.
//
//   (a) floor          bench/floor      a worker that answers 200 and does nothing
//   (b) bucket-do      bench/bucket-do  JSON body -> one RPC into one hot SQLite Durable Object (token bucket)
//   (c) product-hot    repo root        POST /internal/consume, one hot pool
//   (d) product-spread repo root        POST /internal/consume, pools bench-p-0 .. bench-p-99 in turn
//   (f) bucket-spread  bench/bucket-do  (b) over keys bench-p-0 .. bench-p-99 in turn: (d)'s reference
//   (g) product-all    repo root        (c) on an instance with REQUEST_LOG=all (what a log line per request costs)
//
// Usage: node bench/run.mjs   (or npm run bench). Knobs (environment):
//   BENCH_DURATION   seconds per measurement (default 5)
//   BENCH_RUNS       measurements per scenario and connection count (default 5); the median is reported
//   BENCH_WARMUP     warm-up seconds per scenario before measuring (default 2)
//   BENCH_CONNECTIONS comma list of connection counts (default "32,1")
//   BENCH_PORT       first of three consecutive ports (default 8911)
//   BENCH_RETRIES    times a measurement is repeated when other processes used more than BENCH_NOISY_PCT
//                    (default 15) percent of the machine's CPU during it (default 1; 0 disables)
//   BENCH_KEEP_STATE set to 1 to keep the temporary persist directory and wrangler logs
//   BENCH_LOG_PROBE  set to 1 to add scenario (b') = (b) plus one JSON console.log line per request, as the
//                    product writes; it shows what per-request logging costs under wrangler dev
//   BENCH_REQUEST_LOG  all | errors: the product's REQUEST_LOG for (c) and (d) (default: wrangler.toml's, "errors");
//                    (g) always runs with "all", so both are printed
//   BENCH_SCENARIOS  comma-separated keys to run only some scenarios, e.g. "b,c" (default: all)
//   BENCH_SNAPSHOT   set to 1 to run the product from a copy of src/ and its config taken at start, so
//                    that edits made during the run do not make wrangler dev reload it mid-measurement
//   BENCH_BASELINE   a git revision (e.g. HEAD~1): also run the product as it was at that revision, as
//                    scenario (c0) = (c) against it, measured in the same rounds; prints (c)/(c0). An A/B
//                    of a change on this noisy machine, where separate runs differ by more than most changes
// Results: a table on stdout and bench/results/latest.json. Exit status 0 unless the run failed
// (a target missed is reported, not an error).

import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, createWriteStream, readFileSync, existsSync, readdirSync, statSync, cpSync, symlinkSync } from "node:fs";
import { createServer } from "node:net";
import { cpus, tmpdir, platform, release } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import autocannon from "autocannon";
import { freshD1Sql } from "../scripts/local-wrangler.mjs";

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
const ROOT = dirname(BENCH_DIR);
const WRANGLER = join(ROOT, "node_modules", "wrangler", "bin", "wrangler.js");
const HOST = "127.0.0.1";

function intEnv(name, fallback, min, max) {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max) throw new Error(`${name} must be a number in [${min}, ${max}], got ${raw}`);
  return n;
}

const DURATION = intEnv("BENCH_DURATION", 5, 1, 120);
const RUNS = Math.round(intEnv("BENCH_RUNS", 5, 1, 20));
const WARMUP = intEnv("BENCH_WARMUP", 2, 0, 60);
const PORT = Math.round(intEnv("BENCH_PORT", 8911, 1024, 65000));
const CONNECTIONS = (process.env.BENCH_CONNECTIONS || "32,1").split(",").map((s) => {
  const n = Number(s.trim());
  if (!Number.isInteger(n) || n < 1 || n > 1000) throw new Error(`BENCH_CONNECTIONS: bad value ${s}`);
  return n;
});
const RETRIES = Math.round(intEnv("BENCH_RETRIES", 1, 0, 5));
const NOISY_PCT = intEnv("BENCH_NOISY_PCT", 15, 1, 100);
const KEEP_STATE = process.env.BENCH_KEEP_STATE === "1";
const SNAPSHOT = process.env.BENCH_SNAPSHOT === "1";
/** The product's REQUEST_LOG for this run ("all" as configured, or "errors"); empty: wrangler.toml's. */
const REQUEST_LOG = process.env.BENCH_REQUEST_LOG ?? "";
if (!["", "all", "errors"].includes(REQUEST_LOG)) throw new Error("BENCH_REQUEST_LOG must be all or errors");
const LOG_PROBE = process.env.BENCH_LOG_PROBE === "1";
const BASELINE = process.env.BENCH_BASELINE || "";
const ONLY = process.env.BENCH_SCENARIOS ? new Set(process.env.BENCH_SCENARIOS.split(",").map((k) => k.trim())) : null;
const PRODUCT_FILES = ["src", "wrangler.toml", "migrations", "schema.sql", "seed.sql", "package.json", "tsconfig.json", "public", "vendor"];
const PAUSE_MS = 500; // idle gap between measurements
const SETTLE_MAX_MS = 15_000; // longest wait for the product's usage outbox to drain after a measurement
const READY_TIMEOUT_MS = 120_000;
const SPREAD_POOLS = 100;

const INTERNAL_TOKEN = "bench-internal-token";
const ADMIN_TOKEN = "bench-admin-token";
const CHILD_ENV = {
  ...process.env,
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
  WRANGLER_SEND_METRICS: "false",
  FORCE_COLOR: "0",
  NO_COLOR: "1",
};
// wrangler's inspector proxy forwards every inspector message (each console.log) to wrangler's node
// process as an HTTP POST: dev tooling, not the service, and it makes every log line cost a round trip.
// Off by default, as in bench/queue.mjs (VSCODE_INSPECTOR_OPTIONS makes wrangler skip it); BENCH_INSPECTOR=1 keeps it.
delete CHILD_ENV.VSCODE_INSPECTOR_OPTIONS;
if (process.env.BENCH_INSPECTOR !== "1") CHILD_ENV.VSCODE_INSPECTOR_OPTIONS = "{}";

// ---------------------------------------------------------------- child processes

/** Every child runs in its own process group so that the whole tree (npx/node/workerd) can be ended. */
const children = new Set();
let activeCannon = null;
let shuttingDown = false;

function spawnGroup(args, { cwd, logFile }) {
  const child = spawn(process.execPath, [WRANGLER, ...args], {
    cwd,
    env: CHILD_ENV,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const log = logFile ? createWriteStream(logFile) : null;
  const tail = [];
  const keep = (chunk) => {
    log?.write(chunk);
    tail.push(chunk.toString());
    while (tail.length > 50) tail.shift();
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  child.exited = new Promise((resolve) => child.on("exit", (code, signal) => {
    children.delete(child);
    log?.end();
    resolve({ code, signal });
  }));
  child.tail = () => tail.join("").split("\n").slice(-25).join("\n");
  children.add(child);
  return child;
}

function signalGroups(signal) {
  for (const child of children) {
    try {
      process.kill(-child.pid, signal);
    } catch {
      // already gone
    }
  }
}

async function stopAll() {
  if (children.size === 0) return;
  signalGroups("SIGTERM");
  const deadline = Date.now() + 5_000;
  while (children.size > 0 && Date.now() < deadline) await sleep(100);
  signalGroups("SIGKILL");
}

// Last resort: whatever happens, no process group outlives this script.
process.on("exit", () => signalGroups("SIGKILL"));
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, async () => {
    if (shuttingDown) return;
    shuttingDown = true;
    console.error(`\n${sig}: stopping`);
    activeCannon?.stop();
    await stopAll();
    process.exit(130);
  });
}

/** Run a wrangler command to completion (bounded), failing with its output when it fails. */
async function wranglerOnce(args, cwd, timeoutMs = 60_000) {
  const child = spawnGroup(args, { cwd });
  const timer = setTimeout(() => {
    try { process.kill(-child.pid, "SIGKILL"); } catch { /* gone */ }
  }, timeoutMs);
  const { code, signal } = await child.exited;
  clearTimeout(timer);
  if (code !== 0) throw new Error(`wrangler ${args.join(" ")} failed (${signal ?? code}):\n${child.tail()}`);
}

function portFree(port) {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once("error", () => resolve(false));
    srv.listen(port, HOST, () => srv.close(() => resolve(true)));
  });
}

async function waitReady(name, child, url) {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let exited = null;
  child.exited.then((e) => (exited = e));
  while (Date.now() < deadline) {
    if (exited) throw new Error(`${name}: wrangler dev exited early (${exited.signal ?? exited.code}):\n${child.tail()}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await sleep(250);
  }
  throw new Error(`${name}: not ready at ${url} within ${READY_TIMEOUT_MS / 1000}s:\n${child.tail()}`);
}

function startDev(name, { cwd, config, port, inspectorPort, persistTo, extra = [], logFile }) {
  const args = [
    "dev",
    ...(config ? ["--config", config] : []),
    "--port", String(port),
    "--ip", HOST,
    "--inspector-port", String(inspectorPort),
    "--log-level", "warn",
    "--persist-to", persistTo,
    "--show-interactive-dev-session=false",
    ...extra,
  ];
  const child = spawnGroup(args, { cwd, logFile });
  child.name = name;
  return child;
}

// ---------------------------------------------------------------- other load on the machine

/**
 * CPU used on the whole machine versus by this run (this process and its wrangler process groups),
 * from /proc. What the others used during a measurement says how far that measurement can be trusted:
 * on 2 cores a concurrent test run or build easily halves the figures.
 */
let clockTick = 100;
try {
  clockTick = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
} catch {
  // keep 100
}

function cpuTicks() {
  try {
    const fields = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal
    const busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + (fields[7] || 0);
    const groups = new Set([...children].map((c) => c.pid));
    let own = 0;
    // CPU of each process group's workerd: what serving a scenario cost, whatever the load generator did.
    const workerd = new Map();
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      let stat;
      try { stat = readFileSync(`/proc/${entry}/stat`, "utf8"); } catch { continue; }
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // rest[0] = state (field 3), so field n is rest[n - 3]
      const pgid = Number(rest[2]);
      if (Number(entry) === process.pid || groups.has(pgid)) own += Number(rest[11]) + Number(rest[12]);
      if (groups.has(pgid) && stat.includes("(workerd)")) workerd.set(Number(entry), { pgid, ticks: Number(rest[11]) + Number(rest[12]) });
    }
    return { at: Date.now(), busy, own, workerd };
  } catch {
    return null; // not Linux
  }
}

/**
 * Microseconds of workerd CPU per request served by one wrangler process group between two snapshots,
 * split into wrangler's local proxy (the workerd listening on the scenario's port: the same work for
 * every scenario) and the runtime that runs the worker (its other workerd process).
 */
function serverCpuUs(a, b, group, proxyPid, requests) {
  if (!a || !b || !group || !(requests > 0)) return null;
  const used = { proxy: 0, runtime: 0 };
  for (const [pid, { pgid, ticks }] of b.workerd) {
    if (pgid !== group) continue;
    used[pid === proxyPid ? "proxy" : "runtime"] += ticks - (a.workerd.get(pid)?.ticks ?? 0);
  }
  const us = (ticks) => ((ticks / clockTick) * 1e6) / requests;
  return { proxy: us(used.proxy), runtime: us(used.runtime) };
}

/** The pid of the process listening on a TCP port (from `ss -ltnp`), or null. */
function listenerPid(port) {
  try {
    const line = execFileSync("ss", ["-ltnpH", `sport = :${port}`], { encoding: "utf8" }).split("\n").find((l) => l.includes("pid="));
    return line ? Number(line.match(/pid=(\d+)/)[1]) : null;
  } catch {
    return null;
  }
}

/** Percent of the machine's CPU capacity used by processes outside this run between two snapshots. */
function otherCpuPercent(a, b) {
  if (!a || !b || b.at <= a.at) return null;
  const capacity = ((b.at - a.at) / 1000) * clockTick * cpus().length;
  return Math.max(0, ((b.busy - a.busy) - (b.own - a.own)) / capacity) * 100;
}

// ---------------------------------------------------------------- measurement

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

function median(values) {
  const v = values.filter((x) => typeof x === "number" && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/**
 * One autocannon measurement. Besides autocannon's own histogram (whole milliseconds), every 2xx
 * response time is kept at full hrtime precision so one-connection p50s can be compared below 1 ms.
 */
function measure(target, connections, seconds) {
  return new Promise((resolve, reject) => {
    const latencies = [];
    const opts = {
      url: target.url,
      method: target.method,
      headers: target.headers,
      body: target.body,
      connections,
      pipelining: 1,
      duration: seconds,
      timeout: 10,
    };
    if (target.setupRequest) opts.requests = [{ setupRequest: target.setupRequest }];
    const inst = autocannon(opts, (err, result) => {
      activeCannon = null;
      if (err) return reject(err);
      latencies.sort((a, b) => a - b);
      const non2xx = Object.entries(result.statusCodeStats ?? {})
        .filter(([code]) => !code.startsWith("2"))
        .reduce((sum, [, s]) => sum + s.count, 0);
      resolve({
        rps: result.requests.average,
        total: result.requests.total,
        ok: latencies.length,
        p50_ms: percentile(latencies, 50),
        p99_ms: percentile(latencies, 99),
        mean_ms: latencies.length ? latencies.reduce((a, b) => a + b, 0) / latencies.length : null,
        autocannon_p50_ms: result.latency.p50,
        autocannon_p99_ms: result.latency.p99,
        non2xx,
        status_codes: Object.fromEntries(Object.entries(result.statusCodeStats ?? {}).map(([k, v]) => [k, v.count])),
        errors: result.errors,
        timeouts: result.timeouts,
      });
    });
    activeCannon = inst;
    inst.on("response", (_client, statusCode, _bytes, responseTime) => {
      if (statusCode >= 200 && statusCode < 300) latencies.push(responseTime);
    });
  });
}

// ---------------------------------------------------------------- product preparation

function benchPoolsSql() {
  const row = (id, name) =>
    `('${id}','${name}','units',1000000000000,1000000000,1,'{"mode":"shared"}','active',1,1767225600000)`;
  const rows = [row("bench-hot", "bench hot")];
  for (let i = 0; i < SPREAD_POOLS; i++) rows.push(row(`bench-p-${i}`, `bench spread ${i}`));
  return (
    "-- Benchmark pools: capacity and refill so large that a run never sees a 429.\n" +
    "INSERT INTO pools (id, name, unit, capacity, refill_per_sec, cost_per_unit_nano, sharing, status, version, updated_at) VALUES\n  " +
    rows.join(",\n  ") +
    "\nON CONFLICT (id) DO NOTHING;\n"
  );
}

async function prepareProductDb(persistTo, stateDir, productDir) {
  const poolsFile = join(stateDir, "bench-pools.sql");
  writeFileSync(poolsFile, benchPoolsSql());
  const freshSql = join(stateDir, "fresh-d1.sql");
  writeFileSync(freshSql, freshD1Sql(productDir));
  for (const file of [freshSql, poolsFile]) {
    await wranglerOnce(["d1", "execute", "DB", "--local", "--persist-to", persistTo, "--file", file, "--yes"], productDir);
  }
}

async function productPending(baseUrl) {
  const res = await fetch(`${baseUrl}/status`, {
    headers: { authorization: `Bearer ${INTERNAL_TOKEN}` },
    signal: AbortSignal.timeout(5_000),
  });
  if (res.status !== 200) throw new Error(`/status answered ${res.status}`);
  const body = await res.json();
  let pending = 0;
  for (const p of body.pools ?? []) if (String(p.pool).startsWith("bench-")) pending += Number(p.pending_usage_events) || 0;
  return pending;
}

/** Wait (bounded) until the product's pool objects have flushed their usage outboxes to D1. */
async function settleProduct(baseUrl) {
  const started = Date.now();
  let pending = null;
  while (Date.now() - started < SETTLE_MAX_MS) {
    try {
      pending = await productPending(baseUrl);
      if (pending === 0) break;
    } catch (err) {
      pending = `error: ${err.message}`;
      break;
    }
    await sleep(250);
  }
  return { settle_ms: Date.now() - started, pending_after: pending };
}

function gitState() {
  try {
    const head = execFileSync("git", ["rev-parse", "HEAD"], { cwd: ROOT, encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--", ...PRODUCT_FILES], { cwd: ROOT, encoding: "utf8" }).trim();
    return { head, uncommitted_changes: dirty ? dirty.split("\n").length : 0 };
  } catch {
    return null;
  }
}

/** Modification times of the product's sources: a change during the run means wrangler dev reloaded it. */
function sourceStamp(dir) {
  const stamp = [];
  const walk = (p) => {
    let st;
    try { st = statSync(p); } catch { return; }
    if (st.isDirectory()) for (const e of readdirSync(p).sort()) walk(join(p, e));
    else stamp.push(`${p}:${st.mtimeMs}:${st.size}`);
  };
  for (const f of PRODUCT_FILES) walk(join(dir, f));
  return stamp.join("\n");
}

/** The product's files as they were at git revision `rev` (node_modules linked), for the (c0) baseline. */
function baselineProduct(stateDir, rev) {
  const dir = join(stateDir, "baseline-src");
  mkdirSync(dir, { recursive: true });
  const files = PRODUCT_FILES.filter((f) => {
    try { execFileSync("git", ["cat-file", "-e", `${rev}:${f}`], { cwd: ROOT, stdio: "ignore" }); return true; } catch { return false; }
  });
  const tar = execFileSync("git", ["archive", "--format=tar", rev, "--", ...files], { cwd: ROOT, maxBuffer: 256 * 1024 * 1024 });
  execFileSync("tar", ["-x", "-C", dir], { input: tar });
  // vendor/ (/docs's Swagger UI, bundled as text modules) is generated, not in git: the current copy.
  if (existsSync(join(ROOT, "vendor"))) cpSync(join(ROOT, "vendor"), join(dir, "vendor"), { recursive: true });
  symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"), "dir");
  return dir;
}

/** A copy of the product (sources and config; node_modules linked) that nobody edits during the run. */
function snapshotProduct(stateDir) {
  const dir = join(stateDir, "product-src");
  mkdirSync(dir, { recursive: true });
  for (const f of PRODUCT_FILES) if (existsSync(join(ROOT, f))) cpSync(join(ROOT, f), join(dir, f), { recursive: true });
  symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"), "dir");
  return dir;
}

// ---------------------------------------------------------------- main

const fmtInt = (n) => (n == null ? "-" : Math.round(n).toLocaleString("en-US"));
const fmtMs = (n) => (n == null ? "-" : n.toFixed(2));
const pad = (s, w, right = false) => (right ? String(s).padEnd(w) : String(s).padStart(w));

async function preflight(target) {
  const res = await fetch(target.url, {
    method: target.method,
    headers: target.headers,
    body: target.body,
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`${target.label}: preflight answered ${res.status}: ${text.slice(0, 500)}`);
  if (target.check) target.check(text);
  return text;
}

async function main() {
  const started = Date.now();
  if (!existsSync(WRANGLER)) throw new Error(`wrangler not found at ${WRANGLER}; run npm install`);
  // (d) runs on a product instance of its own: under wrangler dev one runtime thread serves every
  // object, and after a (d) burst the hot pool's one-connection p50 stayed about 0.4 ms higher for
  // some 20 s (64 objects' aftermath: evictions closing their databases, garbage collection), which
  // fell on (c)'s measurements in the rounds where (c) followed (d) closely. In production each
  // object runs apart.
  const SPREAD = ONLY === null || ONLY.has("d");
  // (f) and (g) run on instances of their own, like (d): no scenario's aftermath lands on another's.
  const BUCKET_SPREAD = ONLY === null || ONLY.has("f");
  const ALL_LOG = ONLY === null || ONLY.has("g");
  const ports = {
    floor: PORT, bucket: PORT + 1, product: PORT + 2, ...(LOG_PROBE ? { bucketLog: PORT + 3 } : {}), ...(BASELINE ? { baseline: PORT + 4 } : {}),
    ...(SPREAD ? { spread: PORT + 5 } : {}), ...(BUCKET_SPREAD ? { bucketSpread: PORT + 6 } : {}), ...(ALL_LOG ? { productAll: PORT + 7 } : {}),
  };
  const inspector = Object.fromEntries(Object.entries(ports).map(([k, p]) => [k, p + 1000]));
  for (const p of [...Object.values(ports), ...Object.values(inspector)]) {
    if (!(await portFree(p))) throw new Error(`port ${HOST}:${p} is in use; set BENCH_PORT to another base`);
  }

  const stateDir = mkdtempSync(join(tmpdir(), "rm-bench-"));
  const persist = (name) => {
    const d = join(stateDir, name);
    mkdirSync(d, { recursive: true });
    return d;
  };
  const wranglerVersion = JSON.parse(readFileSync(join(ROOT, "node_modules", "wrangler", "package.json"), "utf8")).version;
  console.log(`bench: duration ${DURATION}s x ${RUNS} runs, connections ${CONNECTIONS.join("/")}, warm-up ${WARMUP}s; wrangler ${wranglerVersion}, node ${process.version}, ${cpus().length} cpus`);
  console.log(`bench: state in ${stateDir}`);
  const idleA = cpuTicks();
  await sleep(1_000);
  const idleOther = otherCpuPercent(idleA, cpuTicks());
  if (idleOther != null) {
    console.log(`bench: other processes use ${idleOther.toFixed(0)}% of the machine's CPU before the run${idleOther > NOISY_PCT ? " — the machine is busy; expect noisy figures" : ""}`);
  }

  try {
    // The reference workers start while the product's local D1 is being prepared.
    const floor = startDev("floor", {
      cwd: join(BENCH_DIR, "floor"), port: ports.floor, inspectorPort: inspector.floor,
      persistTo: persist("floor"), logFile: join(stateDir, "floor.log"),
    });
    const bucket = startDev("bucket-do", {
      cwd: join(BENCH_DIR, "bucket-do"), port: ports.bucket, inspectorPort: inspector.bucket,
      persistTo: persist("bucket-do"), logFile: join(stateDir, "bucket-do.log"),
    });
    const bucketLog = LOG_PROBE
      ? startDev("bucket-do+log", {
          cwd: join(BENCH_DIR, "bucket-do"), port: ports.bucketLog, inspectorPort: inspector.bucketLog,
          persistTo: persist("bucket-do-log"), logFile: join(stateDir, "bucket-do-log.log"),
          extra: ["--var", "LOG_EACH_REQUEST:1"],
        })
      : null;
    const productDir = SNAPSHOT ? snapshotProduct(stateDir) : ROOT;
    const stampBefore = sourceStamp(productDir);
    const productPersist = persist("product");
    await prepareProductDb(productPersist, stateDir, productDir);
    const productVars = ["--var", `INTERNAL_TOKEN:${INTERNAL_TOKEN}`, "--var", `ADMIN_TOKEN:${ADMIN_TOKEN}`, ...(REQUEST_LOG ? ["--var", `REQUEST_LOG:${REQUEST_LOG}`] : [])];
    const product = startDev("product", {
      cwd: productDir, port: ports.product, inspectorPort: inspector.product, persistTo: productPersist,
      logFile: join(stateDir, "product.log"), extra: productVars,
    });
    let spread = null;
    if (SPREAD) {
      const spreadPersist = persist("product-spread");
      await prepareProductDb(spreadPersist, stateDir, productDir);
      spread = startDev("product-spread", {
        cwd: productDir, port: ports.spread, inspectorPort: inspector.spread, persistTo: spreadPersist,
        logFile: join(stateDir, "product-spread.log"), extra: productVars,
      });
    }
    const bucketSpread = BUCKET_SPREAD
      ? startDev("bucket-spread", {
          cwd: join(BENCH_DIR, "bucket-do"), port: ports.bucketSpread, inspectorPort: inspector.bucketSpread,
          persistTo: persist("bucket-spread"), logFile: join(stateDir, "bucket-spread.log"),
        })
      : null;
    let productAll = null;
    if (ALL_LOG) {
      const allPersist = persist("product-all");
      await prepareProductDb(allPersist, stateDir, productDir);
      productAll = startDev("product-all", {
        cwd: productDir, port: ports.productAll, inspectorPort: inspector.productAll, persistTo: allPersist,
        logFile: join(stateDir, "product-all.log"),
        extra: ["--var", `INTERNAL_TOKEN:${INTERNAL_TOKEN}`, "--var", `ADMIN_TOKEN:${ADMIN_TOKEN}`, "--var", "REQUEST_LOG:all"],
      });
    }
    let baseline = null;
    if (BASELINE) {
      const baselineDir = baselineProduct(stateDir, BASELINE);
      const baselinePersist = persist("baseline");
      await prepareProductDb(baselinePersist, stateDir, baselineDir);
      baseline = startDev("baseline", {
        cwd: baselineDir, port: ports.baseline, inspectorPort: inspector.baseline, persistTo: baselinePersist,
        logFile: join(stateDir, "baseline.log"), extra: productVars,
      });
    }
    await Promise.all([
      waitReady("floor", floor, `http://${HOST}:${ports.floor}/`),
      waitReady("bucket-do", bucket, `http://${HOST}:${ports.bucket}/`),
      waitReady("product", product, `http://${HOST}:${ports.product}/`),
      ...(bucketLog ? [waitReady("bucket-do+log", bucketLog, `http://${HOST}:${ports.bucketLog}/`)] : []),
      ...(baseline ? [waitReady("baseline", baseline, `http://${HOST}:${ports.baseline}/`)] : []),
      ...(spread ? [waitReady("product-spread", spread, `http://${HOST}:${ports.spread}/`)] : []),
      ...(bucketSpread ? [waitReady("bucket-spread", bucketSpread, `http://${HOST}:${ports.bucketSpread}/`)] : []),
      ...(productAll ? [waitReady("product-all", productAll, `http://${HOST}:${ports.productAll}/`)] : []),
    ]);
    console.log(`bench: all workers ready after ${((Date.now() - started) / 1000).toFixed(1)}s`);

    const productUrl = `http://${HOST}:${ports.product}`;
    const json = { "content-type": "application/json" };
    const hotBody = JSON.stringify({ client_id: "acme", pool: "bench-hot", amount: 1 });
    const consumeHeaders = { ...json, authorization: `Bearer ${INTERNAL_TOKEN}` };
    const checkConsume = (pool) => (text) => {
      const b = JSON.parse(text);
      if (b.pool !== pool || b.units !== 1 || typeof b.event_id !== "string" || typeof b.remaining !== "number") {
        throw new Error(`unexpected consume body: ${text.slice(0, 300)}`);
      }
    };
    let spreadNext = 0;
    const spreadBody = () => JSON.stringify({ client_id: "acme", pool: `bench-p-${spreadNext++ % SPREAD_POOLS}`, amount: 1 });
    let bucketNext = 0;
    const bucketSpreadBody = () => JSON.stringify({ client_id: "acme", pool: `bench-p-${bucketNext++ % SPREAD_POOLS}`, amount: 1 });

    const scenarios = [
      {
        key: "a", name: "floor", label: "(a) floor", group: floor.pid, proxyPid: listenerPid(ports.floor),
        url: `http://${HOST}:${ports.floor}/`, method: "POST", headers: json, body: hotBody,
        check: (t) => { if (t !== "ok") throw new Error(`floor answered ${t.slice(0, 100)}`); },
      },
      {
        key: "b", name: "bucket-do", label: "(b) bucket-do", group: bucket.pid, proxyPid: listenerPid(ports.bucket),
        url: `http://${HOST}:${ports.bucket}/`, method: "POST", headers: json, body: hotBody,
        check: (t) => { const b = JSON.parse(t); if (b.ok !== true) throw new Error(`bucket answered ${t}`); },
      },
      ...(LOG_PROBE
        ? [{
            key: "b'", name: "bucket-do+log", label: "(b') bucket-do + log line", group: bucketLog.pid, proxyPid: listenerPid(ports.bucketLog),
            url: `http://${HOST}:${ports.bucketLog}/`, method: "POST", headers: json, body: hotBody,
            check: (t) => { const b = JSON.parse(t); if (b.ok !== true) throw new Error(`bucket answered ${t}`); },
          }]
        : []),
      {
        key: "c", name: "product-hot", label: "(c) product, 1 hot pool", product: true, group: product.pid, proxyPid: listenerPid(ports.product),
        url: `${productUrl}/internal/consume`, method: "POST", headers: consumeHeaders, body: hotBody,
        check: checkConsume("bench-hot"),
      },
      ...(baseline
        ? [{
            key: "c0", name: "baseline-hot", label: `(c0) product @ ${BASELINE}`.slice(0, 27), product: true, baseUrl: `http://${HOST}:${ports.baseline}`,
            group: baseline.pid, proxyPid: listenerPid(ports.baseline),
            url: `http://${HOST}:${ports.baseline}/internal/consume`, method: "POST", headers: consumeHeaders, body: hotBody,
            check: checkConsume("bench-hot"),
          }]
        : []),
      ...(spread
        ? [{
            key: "d", name: "product-spread", label: `(d) product, ${SPREAD_POOLS} pools`, product: true, baseUrl: `http://${HOST}:${ports.spread}`,
            group: spread.pid, proxyPid: listenerPid(ports.spread),
            url: `http://${HOST}:${ports.spread}/internal/consume`, method: "POST", headers: consumeHeaders, body: hotBody,
            setupRequest: (req) => ({ ...req, body: spreadBody() }),
          }]
        : []),
      ...(bucketSpread
        ? [{
            key: "f", name: "bucket-spread", label: `(f) bucket-do, ${SPREAD_POOLS} keys`, group: bucketSpread.pid, proxyPid: listenerPid(ports.bucketSpread),
            url: `http://${HOST}:${ports.bucketSpread}/`, method: "POST", headers: json, body: hotBody,
            setupRequest: (req) => ({ ...req, body: bucketSpreadBody() }),
          }]
        : []),
      ...(productAll
        ? [{
            key: "g", name: "product-hot-log-all", label: "(g) (c) with REQUEST_LOG=all", product: true, baseUrl: `http://${HOST}:${ports.productAll}`,
            group: productAll.pid, proxyPid: listenerPid(ports.productAll),
            url: `http://${HOST}:${ports.productAll}/internal/consume`, method: "POST", headers: consumeHeaders, body: hotBody,
            check: checkConsume("bench-hot"),
          }]
        : []),
      // Diagnostic, only when asked for (BENCH_SCENARIOS=...,e): the product's HTTP stack without a
      // decision (`GET /`: routing, trace id, request log, JSON answer), to compare with (a).
      ...(ONLY?.has("e")
        ? [{
            key: "e", name: "product-liveness", label: "(e) product, GET /", group: product.pid, proxyPid: listenerPid(ports.product),
            url: `${productUrl}/`, method: "GET",
            check: (t) => { if (JSON.parse(t).status !== "ok") throw new Error(`liveness answered ${t.slice(0, 100)}`); },
          }]
        : []),
    ].filter((s) => ONLY === null || ONLY.has(s.key) || (s.key === "c0" && ONLY.has("c")));

    // Preflight: every target answers 200 with the right body; every spread pool's object exists.
    for (const s of scenarios) if (!s.setupRequest) await preflight(s);
    const spreadTarget = scenarios.find((s) => s.key === "d");
    for (let i = 0; spreadTarget && i < SPREAD_POOLS; i++) {
      const pool = `bench-p-${i}`;
      await preflight({ ...spreadTarget, body: JSON.stringify({ client_id: "acme", pool, amount: 1 }), check: checkConsume(pool) });
    }

    // Warm-up: JIT, isolates, object instances, config caches.
    if (WARMUP > 0) {
      for (const s of scenarios) await measure(s, Math.max(...CONNECTIONS), WARMUP);
      await settleProduct(productUrl);
      if (baseline) await settleProduct(`http://${HOST}:${ports.baseline}`);
      if (spread) await settleProduct(`http://${HOST}:${ports.spread}`);
      if (productAll) await settleProduct(`http://${HOST}:${ports.productAll}`);
      await sleep(PAUSE_MS);
    }

    // Rounds: each round measures every (connections, scenario) pair once; the scenario order rotates
    // from round to round so that drift and after-effects fall on all of them alike.
    const runs = {};
    for (const s of scenarios) for (const c of CONNECTIONS) runs[`${s.key}:${c}`] = [];
    for (let r = 0; r < RUNS; r++) {
      for (const c of CONNECTIONS) {
        for (let i = 0; i < scenarios.length; i++) {
          const s = scenarios[(i + r) % scenarios.length];
          // A measurement during which other processes took a large share of the CPU is repeated
          // (bounded); the quietest attempt is kept.
          let m = null;
          for (let attempt = 0; attempt <= RETRIES; attempt++) {
            const before = cpuTicks();
            const t = await measure(s, c, DURATION);
            t.other_cpu_pct = otherCpuPercent(before, cpuTicks());
            if (s.product) Object.assign(t, await settleProduct(s.baseUrl ?? productUrl));
            // After the product's usage flush: recording usage is part of what a request costs.
            const cpu = serverCpuUs(before, cpuTicks(), s.group, s.proxyPid, t.total);
            t.runtime_cpu_us = cpu?.runtime ?? null;
            t.proxy_cpu_us = cpu?.proxy ?? null;
            t.attempts = attempt + 1;
            if (!m || (t.other_cpu_pct ?? 0) < (m.other_cpu_pct ?? 0)) m = { ...t };
            m.attempts = attempt + 1;
            if (t.other_cpu_pct == null || t.other_cpu_pct <= NOISY_PCT) break;
            process.stdout.write(`  round ${r + 1}/${RUNS} ${pad(s.label, 26, true)} c=${pad(c, 2)}  other processes used ${t.other_cpu_pct.toFixed(0)}% cpu${attempt < RETRIES ? "; measuring again" : ""}\n`);
            await sleep(PAUSE_MS);
          }
          runs[`${s.key}:${c}`].push(m);
          process.stdout.write(
            `  round ${r + 1}/${RUNS} ${pad(s.label, 26, true)} c=${pad(c, 2)}  ${pad(fmtInt(m.rps), 7)} req/s  p50 ${pad(fmtMs(m.p50_ms), 6)} ms  p99 ${pad(fmtMs(m.p99_ms), 7)} ms` +
            (m.other_cpu_pct != null ? `  other cpu ${pad(m.other_cpu_pct.toFixed(0), 3)}%` : "") +
            (m.non2xx || m.errors || m.timeouts ? `  non-2xx ${m.non2xx} errors ${m.errors} timeouts ${m.timeouts}` : "") +
            (m.settle_ms > 300 ? `  (usage flush ${m.settle_ms} ms)` : "") + "\n",
          );
          await sleep(PAUSE_MS);
        }
      }
    }

    // Postflight: the targets still answer correctly after the load, from the same sources.
    for (const s of scenarios) if (!s.setupRequest) await preflight(s);
    const sourcesChanged = sourceStamp(productDir) !== stampBefore;

    // Summaries.
    const summary = {};
    for (const s of scenarios) {
      for (const c of CONNECTIONS) {
        const list = runs[`${s.key}:${c}`];
        summary[`${s.key}:${c}`] = {
          scenario: s.name, label: s.label, connections: c,
          rps: median(list.map((m) => m.rps)),
          p50_ms: median(list.map((m) => m.p50_ms)),
          p99_ms: median(list.map((m) => m.p99_ms)),
          autocannon_p50_ms: median(list.map((m) => m.autocannon_p50_ms)),
          autocannon_p99_ms: median(list.map((m) => m.autocannon_p99_ms)),
          rps_spread_pct: list.length > 1 ? ((Math.max(...list.map((m) => m.rps)) - Math.min(...list.map((m) => m.rps))) / median(list.map((m) => m.rps))) * 100 : 0,
          runtime_cpu_us: median(list.map((m) => m.runtime_cpu_us)),
          proxy_cpu_us: median(list.map((m) => m.proxy_cpu_us)),
          other_cpu_pct_max: list.some((m) => m.other_cpu_pct != null) ? Math.max(...list.map((m) => m.other_cpu_pct ?? 0)) : null,
          non2xx: list.reduce((a, m) => a + m.non2xx, 0),
          errors: list.reduce((a, m) => a + m.errors + m.timeouts, 0),
          runs: list,
        };
      }
    }

    const hi = Math.max(...CONNECTIONS);
    const lo = Math.min(...CONNECTIONS);
    const get = (k, c) => summary[`${k}:${c}`];
    // A comparison is made within each round, between measurements taken a few seconds apart, and the
    // median of the rounds' values is the figure: the machine's speed drifts from minute to minute (in
    // one run (b)'s one-connection p50 went from 3.09 ms in its first round to 4.29 ms in its last),
    // and a ratio of medians taken from different rounds carries that drift. Both are reported.
    const paired = (x, y, c, f) => {
      const xs = get(x, c)?.runs;
      const ys = get(y, c)?.runs;
      if (!xs || !ys) return null;
      const values = xs.map((m, i) => (ys[i] ? f(m, ys[i]) : null)).filter((v) => v != null && Number.isFinite(v));
      return values.length ? median(values) : null;
    };
    const rpsRatio = (m, n) => (n.rps ? m.rps / n.rps : null);
    const p50Diff = (m, n) => (m.p50_ms != null && n.p50_ms != null ? m.p50_ms - n.p50_ms : null);
    const cb = paired("c", "b", hi, rpsRatio);
    const ca = paired("c", "a", hi, rpsRatio);
    const db = paired("d", "b", hi, rpsRatio);
    const cbl = LOG_PROBE ? paired("c", "b'", hi, rpsRatio) : null;
    const p50diff = paired("c", "b", lo, p50Diff);
    // Issue 22's targets: (c) against the floor itself, and the spread case against a bucket spread alike.
    const p50floor = paired("c", "a", lo, p50Diff);
    const df = paired("d", "f", hi, rpsRatio);
    const ga = paired("g", "a", hi, rpsRatio);
    const cg = paired("c", "g", hi, rpsRatio);
    // The same comparisons between the table's medians (a summary has rps and p50_ms like a round).
    const ofSummaries = (x, y, c, f) => (get(x, c) && get(y, c) ? f(get(x, c), get(y, c)) : null);
    const ofMedians = {
      c_over_b: ofSummaries("c", "b", hi, rpsRatio),
      c_over_a: ofSummaries("c", "a", hi, rpsRatio),
      p50_c_minus_b_ms: ofSummaries("c", "b", lo, p50Diff),
      p50_c_minus_a_ms: ofSummaries("c", "a", lo, p50Diff),
      d_over_f: ofSummaries("d", "f", hi, rpsRatio),
    };
    const targets = [
      { name: `throughput (c)/(a) at ${hi} connections`, value: ca, of_medians: ofMedians.c_over_a, target: ">= 0.90", met: ca != null && ca >= 0.9 },
      { name: `p50 (c) - (a) at ${lo} connection(s), ms`, value: p50floor, of_medians: ofMedians.p50_c_minus_a_ms, target: "<= 0.30", met: p50floor != null && p50floor <= 0.3 },
      { name: `throughput (d)/(f) at ${hi} connections`, value: df, of_medians: ofMedians.d_over_f, target: ">= 0.80", met: df != null && df >= 0.8 },
      // The earlier targets, against the single-object bucket (kept for comparison with earlier runs).
      { name: `throughput (c)/(b) at ${hi} connections`, value: cb, of_medians: ofMedians.c_over_b, target: ">= 0.90", met: cb != null && cb >= 0.9 },
      { name: `p50 (c) - (b) at ${lo} connection(s), ms`, value: p50diff, of_medians: ofMedians.p50_c_minus_b_ms, target: "<= 0.50", met: p50diff != null && p50diff <= 0.5 },
    ];

    // Table.
    const line = "-".repeat(114);
    console.log(`\n${line}`);
    console.log(`${pad("scenario", 28, true)}${pad("conns", 6)}${pad("req/s", 10)}${pad("p50 ms", 10)}${pad("p99 ms", 10)}${pad("non-2xx", 9)}${pad("errors", 8)}${pad("spread", 9)}${pad("other cpu", 12)}${pad("cpu us/req", 12)}`);
    console.log(line);
    for (const c of CONNECTIONS) {
      for (const s of scenarios) {
        const m = get(s.key, c);
        const other = m.other_cpu_pct_max == null ? "-" : `${m.other_cpu_pct_max.toFixed(0)}%`;
        console.log(`${pad(s.label, 28, true)}${pad(c, 6)}${pad(fmtInt(m.rps), 10)}${pad(fmtMs(m.p50_ms), 10)}${pad(fmtMs(m.p99_ms), 10)}${pad(m.non2xx, 9)}${pad(m.errors, 8)}${pad(`${m.rps_spread_pct.toFixed(0)}%`, 9)}${pad(other, 12)}${pad(m.runtime_cpu_us == null ? "-" : fmtInt(m.runtime_cpu_us), 12)}`);
      }
    }
    console.log(line);
    console.log(`median of ${RUNS} run(s) of ${DURATION}s each; latency from every 2xx response time (sub-ms precision);`);
    console.log("spread = (max - min) / median of req/s over the runs; other cpu = most CPU that processes outside this run used during one run");
    console.log("cpu us/req = CPU time per request of the workerd that runs the scenario's worker (not wrangler's proxy; the product's includes its usage flush to D1)");
    console.log(`ratio (d)/(b) at ${hi} connections: ${db == null ? "-" : db.toFixed(2)}`);
    if (ga != null) console.log(`REQUEST_LOG=all: (g)/(a) at ${hi} connections ${ga.toFixed(2)}; (c) with the shipped errors against (g) with all: ${cg == null ? "-" : cg.toFixed(2)}`);
    if (LOG_PROBE) console.log(`ratio (c)/(b') at ${hi} connections: ${cbl == null ? "-" : cbl.toFixed(2)}`);
    const cpuC = get("c", hi)?.runtime_cpu_us;
    const cpuB = get("b", hi)?.runtime_cpu_us;
    const proxy = median(Object.values(summary).filter((m) => m.connections === hi).map((m) => m.proxy_cpu_us));
    if (cpuC != null && cpuB != null) console.log(`runtime CPU per request at ${hi} connections: (c) ${fmtInt(cpuC)} us, (b) ${fmtInt(cpuB)} us, (c)/(b) ${(cpuC / cpuB).toFixed(2)}; wrangler's proxy ${fmtInt(proxy)} us`);
    if (baseline && get("c0", hi)) {
      const cpuC0 = get("c0", hi).runtime_cpu_us;
      const tput = paired("c", "c0", hi, rpsRatio);
      console.log(`A/B at ${hi} connections, this tree (c) against ${BASELINE} (c0): throughput (c)/(c0) ${tput == null ? "-" : tput.toFixed(3)}` +
        (cpuC != null && cpuC0 != null ? `, runtime CPU (c) ${fmtInt(cpuC)} us vs (c0) ${fmtInt(cpuC0)} us (${(((cpuC - cpuC0) / cpuC0) * 100).toFixed(1)}%)` : ""));
    }
    console.log("targets: the median over the rounds of each round's own ratio or difference (in brackets: the same from the medians in the table)");
    for (const t of targets) {
      const v = t.value == null ? "-" : t.value.toFixed(2);
      const m = t.of_medians == null ? "-" : t.of_medians.toFixed(2);
      console.log(`${pad(t.name, 44, true)} ${pad(v, 7)}  (${pad(m, 5)})  target ${t.target}  ${t.met ? "met" : "NOT met"}`);
    }
    let warned = false;
    for (const m of Object.values(summary)) {
      if (m.non2xx > 0 || m.errors > 0) {
        warned = true;
        const codes = {};
        for (const r of m.runs) for (const [k, v] of Object.entries(r.status_codes)) if (!k.startsWith("2")) codes[k] = (codes[k] ?? 0) + v;
        console.log(`WARNING: ${m.label} at ${m.connections} connection(s): ${m.non2xx} non-2xx responses ${JSON.stringify(codes)}, ${m.errors} errors/timeouts`);
      }
    }
    if (!warned) console.log("all responses 2xx, no errors or timeouts");
    const busiest = Math.max(0, ...Object.values(summary).map((m) => m.other_cpu_pct_max ?? 0));
    if (busiest > NOISY_PCT) {
      console.log(`WARNING: other processes used up to ${busiest.toFixed(0)}% of the machine's CPU during a measurement; figures are not trustworthy, rerun on a quiet machine`);
    }
    if (sourcesChanged) {
      console.log("WARNING: the product's sources changed during the run, so wrangler dev reloaded it; (c)/(d) may mix two versions (BENCH_SNAPSHOT=1 avoids this)");
    }

    const out = {
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, cpu_model: cpus()[0]?.model, platform: platform(), release: release(), node: process.version, wrangler: wranglerVersion, other_cpu_pct_before: idleOther },
      config: { duration_s: DURATION, runs: RUNS, warmup_s: WARMUP, retries: RETRIES, noisy_pct: NOISY_PCT, connections: CONNECTIONS, ports, spread_pools: SPREAD_POOLS, snapshot: SNAPSHOT },
      product: { git: gitState(), sources_changed_during_run: sourcesChanged },
      summary,
      ratios: {
        c_over_b: cb, c_over_a: ca, d_over_b: db, d_over_f: df, g_over_a: ga, c_over_g: cg, ...(LOG_PROBE ? { c_over_b_log: cbl } : {}),
        p50_c_minus_b_ms: p50diff, p50_c_minus_a_ms: p50floor, of_medians: ofMedians,
      },
      targets,
      elapsed_s: (Date.now() - started) / 1000,
    };
    mkdirSync(join(BENCH_DIR, "results"), { recursive: true });
    writeFileSync(join(BENCH_DIR, "results", "latest.json"), JSON.stringify(out, null, 2) + "\n");
    console.log(`results written to bench/results/latest.json (${out.elapsed_s.toFixed(0)}s in all)`);
  } finally {
    await stopAll();
    if (!KEEP_STATE) rmSync(stateDir, { recursive: true, force: true });
    else console.log(`bench: kept ${stateDir}`);
  }
}

// A hard ceiling: the run ends by itself even if something hangs.
const budgetMs = 300_000 + RUNS * CONNECTIONS.length * 8 * (1 + RETRIES) * (DURATION * 1000 + PAUSE_MS + SETTLE_MAX_MS);
const watchdog = setTimeout(async () => {
  console.error(`bench: watchdog fired after ${budgetMs / 1000}s; stopping`);
  activeCannon?.stop();
  await stopAll();
  process.exit(2);
}, budgetMs);
watchdog.unref();

main().then(
  () => process.exit(0),
  async (err) => {
    console.error(`bench: FAILED: ${err?.stack ?? err}`);
    activeCannon?.stop();
    await stopAll();
    process.exit(1);
  },
);
