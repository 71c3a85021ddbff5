#!/usr/bin/env node
// Queue and scheduler benchmark against a real `wrangler dev` on 127.0.0.1 (the Resource Manager with
// the two sample workers of examples/, as `npm start` runs them), in a fresh temporary persist dir.
//
//   1. local D1: the migrations, seed.sql, then bench limits (tiers max_concurrent 1000, pool bench-queue
//      with a bucket no run can empty, template bench-noop on CONTENT_WORKER needing 1 unit of it)
//   2. wrangler dev (secrets from a temporary --env-file), wait for GET / = 200
//   3. POST /admin/scheduler/stop
//   4. enqueue 10,000 requests over the four demo clients and the queues fast/normal/batch:
//      2,000 single calls (16 in flight), then 8,000 in batches of 100 (4 in flight); every answer checked
//      (and workerd's CPU per single enqueue, in all and per workerd process: wrangler's proxy and the workers)
//   5. with the backlog queued and the scheduler stopped: ~200 sequential calls (1 connection) each of
//      GET /api/queue/status, GET /api/queue/position/{id}, POST /api/execute (202 expected)
//   6. POST /admin/scheduler/start; poll GET /api/queue/status every 250 ms while ~200 sequential
//      POST /api/execute are timed. dispatches/s = requests dispatched / seconds until every queue is
//      empty; the drain ends when nothing is in flight either (or when the same requests stay in
//      flight for 30 s with the queues empty, or after QUEUE_BENCH_DRAIN_S). Then GET
//      /api/execution/{id} for 100 random enqueued ids (and 100 of the executes) must say completed
//   6b. (QUEUE_BENCH_SECOND, default on) stop, enqueue a second backlog of the same size in batches, drain it as in 6
//      on the same runtime, verify 100 of it; the baseline drains a second backlog too
//   7. a summary table on stdout, JSON in bench/results/queue-latest.json
//
// Usage: node bench/queue.mjs. Knobs (environment):
//   QUEUE_BENCH_PORT        first port to try (default 8921; the next free one is taken, inspector = port + 1000)
//   QUEUE_BENCH_SINGLE      requests enqueued one per call (default 2000)
//   QUEUE_BENCH_BATCHED     requests enqueued in batches of 100 (default 8000; a multiple of 100)
//   QUEUE_BENCH_SAMPLES     sequential calls per latency measurement (default 200)
//   QUEUE_BENCH_DRAIN_S     longest wait for the drain, seconds (default 180)
//   QUEUE_BENCH_DRAIN_EXECUTE set to 0 not to time POST /api/execute during the drain (default 1)
//   QUEUE_BENCH_EXECUTE_CONCURRENCY  POST /api/execute calls in flight at once during the drain (default 5; 4 until
//                           the thirty-fourth session, when drains of ~10,000/s timed only 39-48 at 4), so that at
//                           least 50 are timed while the backlog drains
//   QUEUE_BENCH_IDLE_EXECUTES POST /api/execute calls timed with nothing queued and the scheduler running, before the
//                           enqueue: that many one at a time, then as many again EXECUTE_CONCURRENCY at a time, each with the
//                           runtime's CPU per execute (the immediate lane's own cost, which executes during a drain take from
//                           it); 0 skips (default 200)
//   QUEUE_BENCH_HOLD_S      > 0: every backlog job is held this many seconds by the sample worker (params.simulate.hold_s,
//                           the content worker with ACCEPT_MANY=1: runMany answers at once and reports later), with the
//                           tiers' max_concurrent at 10,000: the whole backlog runs at once. Reports the peak in flight,
//                           the runtime's memory and CPU per job in flight, and that every job ran once (default 0)
//   QUEUE_BENCH_LOADGEN     what sends the single enqueues, to the service and the baseline alike: wrk (default when
//                           installed: apt-get install wrk; one native thread, bench/wrk.mjs) or node (Node's fetch, which
//                           takes about a third of a core from the server on 2 cores); batches and latencies always use fetch
//   QUEUE_BENCH_BASELINE    set to 0 to skip the baseline (bench/queue-floor: a minimal queue object in its own
//                           wrangler dev, same machine, same run, same sample worker), whose figures the service's are
//                           printed over as ratios (default 1)
//   QUEUE_BENCH_VARS        settings over wrangler.toml's for the service's run, e.g. "SCHEDULER_SHARDS=1" (NAME=value,
//                           space or comma separated; written to its --env-file; the JSON's config records them)
//   QUEUE_BENCH_SECOND      set to 0 to skip the second backlog (default 1): after the first drain, a backlog of the same
//                           size (SINGLE + BATCHED, in batches) is enqueued again and drained by the same runtime, executes
//                           timed as in the first; the baseline does the same. The first drain runs on a fresh runtime (V8
//                           compiles the dispatch path as it goes: a first drain after a start took ~1.5x the CPU per dispatch
//                           of later ones); the second shows the steady state a long-lived isolate reaches. Both are
//                           printed, each over its own baseline (not in hold mode)
//   QUEUE_BENCH_PARAMS_BYTES a prompt of this many characters in each backlog request's params (service and baseline
//                           alike; 0-3,000, under the optimizer's 4,096-byte compression threshold; default 0): what a
//                           caller's real params weigh in the queue's writes
//   QUEUE_BENCH_JOB_LOG     on: the sample workers write their `job` line per job, as under `npm start` (default off, for
//                           the service and the baseline alike). Under wrangler dev every worker's console line goes
//                           through wrangler's node process (each one source-mapped there, even below its log level):
//                           at a drain's 6,000 lines/s that process took 0.87 of a core beside the runtime's 0.72 on
//                           this 2-core machine, and the drain ran at ~6,000/s with them against ~8,400/s without
//                           (docs/benchmarks.md, thirtieth session). In production a worker's lines are its own
//                           isolate's, not the Resource Manager's; the service's own log lines stay on at its shipped level
//   QUEUE_BENCH_KEEP_STATE  set to 1 to keep the temporary persist directory
//   TMPDIR                  where the persist directories are made (both runs); TMPDIR=/dev/shm puts them on tmpfs: a
//                           diagnostic of the local disk's share (each object's commit is a WAL write and an fsync on the
//                           runtime's thread under wrangler dev; docs/benchmarks.md), not the figure to report
//   QUEUE_BENCH_INSPECTOR   set to 1 to keep wrangler's inspector proxy (see below; default off)
//
// wrangler's inspector proxy: by default `wrangler dev` runs an InspectorProxyWorker that enables the
// runtime's Runtime and Network inspector domains and, for every inspector message (each console.log,
// each subrequest such as a service-binding call), makes one HTTP POST of a "debug-log" to the wrangler
// node process (templates/startDevWorker/InspectorProxyWorker.ts, sendDebugLog), discarded there below
// debug log level. Under the drain (thousands of service-binding calls per second) those POSTs pile up
// faster than node answers them, workerd runs out of file descriptors ("Too many open files"), each
// failed POST logs another failing POST, and nothing answers any more. That is dev tooling, not the
// service, so this benchmark turns it off the one way the wrangler CLI allows: the child environment
// carries VSCODE_INSPECTOR_OPTIONS (wrangler and miniflare then skip the inspector proxy, as in a VS Code
// debug terminal; without a js-debug bootloader in NODE_OPTIONS nothing else reads it).
// The wrangler dev output goes to bench/results/queue-wrangler.log. Exit status 0 when the run
// completed (a target missed is reported, not an error), 1 when it failed, 2 on the watchdog.

import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, platform, release, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { freePortPair, freshD1Sql, HOST, ROOT, startWrangler, WRANGLER } from "../scripts/local-wrangler.mjs";
import { haveWrk, wrkCalls } from "./wrk.mjs";

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
const RESULTS_DIR = join(BENCH_DIR, "results");

function intEnv(name, fallback, min, max) {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name} must be an integer in [${min}, ${max}], got ${raw}`);
  return n;
}

const FIRST_PORT = intEnv("QUEUE_BENCH_PORT", 8921, 1024, 64000);
const SINGLE = intEnv("QUEUE_BENCH_SINGLE", 2000, 0, 100_000);
const BATCHED = intEnv("QUEUE_BENCH_BATCHED", 8000, 0, 100_000);
const SAMPLES = intEnv("QUEUE_BENCH_SAMPLES", 200, 10, 10_000);
const DRAIN_MAX_S = intEnv("QUEUE_BENCH_DRAIN_S", 180, 5, 1800);
const KEEP_STATE = process.env.QUEUE_BENCH_KEEP_STATE === "1";
const INSPECTOR = process.env.QUEUE_BENCH_INSPECTOR === "1";
const DRAIN_EXECUTE = process.env.QUEUE_BENCH_DRAIN_EXECUTE !== "0";
const SECOND = process.env.QUEUE_BENCH_SECOND !== "0";
/** Settings over wrangler.toml's for the service's run, e.g. QUEUE_BENCH_VARS="SCHEDULER_SHARDS=1" (written to its --env-file). */
const EXTRA_VARS = (process.env.QUEUE_BENCH_VARS ?? "").split(/[\s,]+/).filter(Boolean).map((v) => {
  if (!/^[A-Z_][A-Z0-9_]*=[^\s]*$/.test(v)) throw new Error(`QUEUE_BENCH_VARS: expected NAME=value items, got ${v}`);
  return v;
});
const EXECUTE_CONCURRENCY = intEnv("QUEUE_BENCH_EXECUTE_CONCURRENCY", 5, 1, 64);
const IDLE_EXECUTES = intEnv("QUEUE_BENCH_IDLE_EXECUTES", 200, 0, 10_000);
const HOLD_S = intEnv("QUEUE_BENCH_HOLD_S", 0, 0, 600);
const BASELINE = process.env.QUEUE_BENCH_BASELINE !== "0";
const JOB_LOG = process.env.QUEUE_BENCH_JOB_LOG === "on";
/** What sends the single enqueues (service and baseline alike): wrk when installed, else Node's fetch. */
const LOADGEN_ASKED = process.env.QUEUE_BENCH_LOADGEN ?? "";
if (!["", "wrk", "node"].includes(LOADGEN_ASKED)) throw new Error(`QUEUE_BENCH_LOADGEN must be wrk or node, got ${LOADGEN_ASKED}`);
let LOADGEN = "node"; // settled in main()
// The optimizer's batching: > 0 makes bench-noop batchable with this batch size and sends every request
// to the batch queue, so the drain sends up to this many requests per worker invocation. 0: off.
const BATCHABLE = intEnv("QUEUE_BENCH_BATCHABLE", 0, 0, 1000);
const PARAMS_BYTES = intEnv("QUEUE_BENCH_PARAMS_BYTES", 0, 0, 3000);
if (BATCHED % 100 !== 0) throw new Error("QUEUE_BENCH_BATCHED must be a multiple of 100");
if (SINGLE + BATCHED === 0) throw new Error("nothing to enqueue");

const BATCH_SIZE = 100;
const SINGLE_CONCURRENCY = 16;
const BATCH_CONCURRENCY = 4;
const WARMUP_CALLS = 5; // per latency measurement, before the timed calls, not counted
const POLL_MS = 250;
/**
 * Near the end of a drain (the queues empty within about two polls at the rate of the last one) the
 * status is polled this often instead, so the drain's time is known to ~50 ms rather than 250 (the
 * baseline drains 10,000 in about half a second: a 250 ms poll was half its time). Both pollers.
 */
const FINE_POLL_MS = 50;
/**
 * The wait before the next status poll: FINE_POLL_MS from the first poll at which the faster of the
 * drain's average rate and its rate since the last poll would empty the queues within two polls, and
 * from then on. (Until the thirty-third session: the average alone, within one poll, and back to
 * POLL_MS when a slow interval moved the estimate. The average lags behind a drain that speeds up, and
 * a rate between two polls 50 ms apart jumps with the shards' chunks, so with ~2,000 left at ~7,000/s
 * it waited another 250 ms: the end was known only to ~270-300 ms, always late.)
 */
function nextPollMs(step, depth, averagePerS, lastPerS) {
  if (step === FINE_POLL_MS) return FINE_POLL_MS;
  const perS = Math.max(averagePerS, lastPerS);
  return depth > 0 && perS > 0 && depth / perS < (2 * POLL_MS) / 1000 ? FINE_POLL_MS : POLL_MS;
}
const VERIFY_SAMPLES = 100;
const READY_TIMEOUT_MS = 120_000;
const CALL_TIMEOUT_MS = 30_000; // any single HTTP call
const EXECUTE_TIMEOUT_MS = 20_000; // POST /api/execute waits at most the template timeout (10 s) + 1 s
const STALL_S = 30; // queues empty but the same requests in flight this long (3 x the template timeout): stop waiting
const MAX_TIMEOUTS = 3; // a latency measurement stops after this many calls without an answer
const WATCHDOG_MS = 15 * 60_000; // the whole run

const ADMIN_TOKEN = "bench-admin-token";
const INTERNAL_TOKEN = "bench-internal-token";
const CLIENTS = [
  { id: "acme", key: "rmk_demo_enterprise_acme" },
  { id: "globex", key: "rmk_demo_premium_globex" },
  { id: "initech", key: "rmk_demo_standard_initech" },
  { id: "hooli", key: "rmk_demo_basic_hooli" },
];
const BENCH_QUEUES = BATCHABLE > 0 ? ["batch"] : ["fast", "normal", "batch"]; // not deferred: it may wait for off-peak
const TEMPLATE = "bench-noop";
/** A prompt of PARAMS_BYTES characters that does not compress (a fixed pseudo-random text: the same in every run). */
const PROMPT = Array.from({ length: PARAMS_BYTES }, (_, i) => "abcdefghijklmnopqrstuvwxyz0123456789 "[(i * 7919 + ((i * i) % 101)) % 37]).join("");
const PARAMS = { ...(HOLD_S > 0 ? { simulate: { hold_s: HOLD_S } } : { simulate: { latency_ms: 0 } }), ...(PARAMS_BYTES > 0 ? { prompt: PROMPT } : {}) };
/** Executes never hold: they time the immediate lane. */
const EXEC_PARAMS = { simulate: { latency_ms: 0 } };
const TEMPLATE_TIMEOUT_MS = HOLD_S > 0 ? (HOLD_S + 60) * 1000 : 10000;
const ACME = CLIENTS[0];

// Raise the limits so that the drain is bounded by the service, not by the demo data.
const BENCH_SQL =
  `UPDATE tiers SET max_concurrent = ${HOLD_S > 0 ? 20000 : 1000}; ` +
  "INSERT INTO pools (id,name,unit,capacity,refill_per_sec,cost_per_unit_nano,sharing,status,version,updated_at) " +
  "VALUES ('bench-queue','bench','units',1000000000000,1000000000,1,'{\"mode\":\"shared\"}','active',1,0) ON CONFLICT(id) DO NOTHING; " +
  "INSERT INTO templates (id,name,binding,requirements,alternative_id,cacheable,batchable,timeout_ms,updated_at) " +
  `VALUES ('bench-noop','bench noop','CONTENT_WORKER','[{\"pool\":\"bench-queue\",\"amount\":1}]',NULL,0,${BATCHABLE > 0 ? 1 : 0},${TEMPLATE_TIMEOUT_MS},0) ` +
  "ON CONFLICT(id) DO UPDATE SET batchable = excluded.batchable, timeout_ms = excluded.timeout_ms; " +
  (BATCHABLE > 0
    ? `INSERT INTO template_options (template_id, cache_ttl_ms, batch_size, compress_threshold_bytes, updated_at) VALUES ('bench-noop', 3600000, ${BATCHABLE}, 4096, 0) ` +
      "ON CONFLICT(template_id) DO UPDATE SET batch_size = excluded.batch_size;"
    : "DELETE FROM template_options WHERE template_id = 'bench-noop';");

const CHILD_ENV = {
  ...process.env,
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
  WRANGLER_SEND_METRICS: "false",
  CLOUDFLARE_LOAD_DEV_VARS_FROM_DOT_ENV: "true",
  FORCE_COLOR: "0",
  NO_COLOR: "1",
};
delete CHILD_ENV.VSCODE_INSPECTOR_OPTIONS;
if (!INSPECTOR) CHILD_ENV.VSCODE_INSPECTOR_OPTIONS = "{}";

// ---------------------------------------------------------------- child processes

/** Every child runs in its own process group so that the whole tree (node/workerd/esbuild) can be ended. */
const children = new Set();
let shuttingDown = false;
let stateDir = null; // the temporary persist directory, removed at the end unless QUEUE_BENCH_KEEP_STATE=1
function removeState() {
  if (stateDir && !KEEP_STATE) rmSync(stateDir, { recursive: true, force: true });
}
const LOG_CAP_BYTES = 20 * 1024 * 1024;

function spawnWrangler(args, logFile) {
  const child = startWrangler(args, { logFile, env: CHILD_ENV, capBytes: LOG_CAP_BYTES, tailLines: 80 });
  children.add(child);
  child.exited.then(() => children.delete(child));
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

process.on("exit", () => signalGroups("SIGKILL"));
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, async () => {
    if (shuttingDown) return;
    shuttingDown = true;
    console.error(`\n${sig}: stopping`);
    await stopAll();
    removeState();
    process.exit(130);
  });
}

/** Run a wrangler command to completion (bounded), failing with its output when it fails. */
async function wranglerOnce(args, logFile, timeoutMs = 90_000) {
  const child = spawnWrangler(args, logFile);
  const timer = setTimeout(() => {
    try { process.kill(-child.pid, "SIGKILL"); } catch { /* gone */ }
  }, timeoutMs);
  const { code, signal } = await child.exited;
  clearTimeout(timer);
  if (code !== 0) throw new Error(`wrangler ${args.slice(0, 4).join(" ")} ... failed (${signal ?? code}):\n${child.tail()}`);
}

function pickPort() {
  return freePortPair(FIRST_PORT, 60);
}

/**
 * The processes of the wrangler dev group (Linux, best effort): { pid, name, fields } with `fields`
 * the /proc/<pid>/stat fields after the command name. null where /proc is not readable.
 */
let devPgid = null;
function devGroup(pgid = devPgid) {
  if (pgid === null || !existsSync("/proc/self/stat")) return null;
  const out = [];
  try {
    for (const pid of readdirSync("/proc")) {
      if (!/^\d+$/.test(pid)) continue;
      let stat;
      try { stat = readFileSync(`/proc/${pid}/stat`, "utf8"); } catch { continue; }
      const close = stat.lastIndexOf(")");
      const fields = stat.slice(close + 2).split(" ");
      if (Number(fields[2]) === pgid) out.push({ pid, name: stat.slice(stat.indexOf("(") + 1, close), fields });
    }
  } catch {
    return null;
  }
  return out;
}

/** Diagnostics: open file descriptors of the dev group's processes by command name, e.g. { workerd: 312, node: 40 }. */
function groupFds() {
  const procs = devGroup();
  if (!procs) return null;
  const out = {};
  for (const { pid, name } of procs) {
    let n = 0;
    try { n = readdirSync(`/proc/${pid}/fd`).length; } catch { continue; }
    out[name] = (out[name] ?? 0) + n;
  }
  return out;
}

/**
 * CPU time (user + system, in clock ticks) used so far by the dev group's workerd processes: read
 * before and after the drain, it gives the runtime's CPU per dispatch, a figure that moves less with
 * the machine's load than a rate does. null where /proc is not readable.
 */
function workerdTicks() {
  const procs = devGroup();
  if (!procs) return null;
  let ticks = 0;
  for (const { name, fields } of procs) if (name === "workerd") ticks += Number(fields[11]) + Number(fields[12]); // utime, stime
  return ticks;
}
const TICKS_PER_S = 100; // Linux USER_HZ

/** The same, per workerd process (wrangler dev runs two: its proxy in front, and the workers): { pid: ticks }. */
function workerdTicksByPid(pgid = devPgid) {
  const procs = devGroup(pgid);
  if (!procs) return null;
  return Object.fromEntries(procs.filter((p) => p.name === "workerd").map(({ pid, fields }) => [pid, Number(fields[11]) + Number(fields[12])]));
}

// ---------------------------------------------------------------- HTTP

let BASE = "";

/** One call with Node's fetch (undici, keep-alive). Never throws: a transport error is status 0. */
async function call(method, path, { token, body, timeoutMs = CALL_TIMEOUT_MS } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  const payload = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body);
  if (payload !== undefined) headers["content-type"] = "application/json";
  const t0 = performance.now();
  try {
    const res = await fetch(BASE + path, { method, headers, body: payload, signal: AbortSignal.timeout(timeoutMs) });
    const text = await res.text();
    const ms = performance.now() - t0;
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    return { status: res.status, ms, json, text, sentAt: Date.now() - ms };
  } catch (err) {
    return { status: 0, ms: performance.now() - t0, json: null, text: `${err?.name ?? "Error"}: ${err?.message ?? err}` };
  }
}

/** Errors of the whole run: counted per phase, the first few kept with their bodies. */
const errors = { total: 0, byPhase: {}, samples: [] };
/** The answer wrangler's dev proxy (ProxyWorker) gives a POST whose connection to the runtime was lost (its text says "restarted"). */
const DEV_PROXY_LOST = "Your worker restarted mid-request";

function recordError(phase, res, what) {
  errors.total += 1;
  if (res.status === 503 && String(res.text).startsWith(DEV_PROXY_LOST)) errors.dev_proxy_lost = (errors.dev_proxy_lost ?? 0) + 1;
  errors.byPhase[phase] = (errors.byPhase[phase] ?? 0) + 1;
  if (errors.samples.length < 30) {
    errors.samples.push({ phase, status: res.status, problem: what, ms: Math.round(res.ms), body: String(res.text).slice(0, 600) });
  }
}

async function mustOk(phase, method, path, opts, status = 200) {
  const res = await call(method, path, opts);
  if (res.status !== status) {
    recordError(phase, res, `expected ${status}`);
    throw new Error(`${phase}: ${method} ${path} answered ${res.status} (expected ${status}): ${res.text.slice(0, 500)}`);
  }
  return res.json;
}

/** Run `count` jobs with at most `concurrency` in flight. */
async function pool(count, concurrency, job) {
  let next = 0;
  const worker = async () => {
    while (!shuttingDown) {
      const i = next++;
      if (i >= count) return;
      await job(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

// ---------------------------------------------------------------- statistics

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function latencyStats(values) {
  const s = [...values].sort((a, b) => a - b);
  const r = (x) => (x == null ? null : Math.round(x * 100) / 100);
  return {
    n: s.length,
    p50_ms: r(percentile(s, 50)),
    p95_ms: r(percentile(s, 95)),
    p99_ms: r(percentile(s, 99)),
    max_ms: r(s.at(-1) ?? null),
    mean_ms: r(s.length ? s.reduce((a, b) => a + b, 0) / s.length : null),
  };
}

const fmt = (n, d = 1) => (n == null ? "-" : Number(n).toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d }));
const pad = (s, w, left = false) => (left ? String(s).padEnd(w) : String(s).padStart(w));

// ---------------------------------------------------------------- phases

function spec(queue) {
  return { template: TEMPLATE, queue, params: PARAMS };
}

/** ids enqueued, with the key of the client that enqueued each. */
const enqueued = []; // { id, client }

/** The second backlog: as many as the first (single and batched), in whole batches. */
function secondSize() {
  return Math.ceil((SINGLE + BATCHED) / BATCH_SIZE) * BATCH_SIZE;
}

/** The single enqueue of call i: its client and queue (wrk cycles through the same list). */
function singleOf(i) {
  return { client: CLIENTS[i % CLIENTS.length], queue: BENCH_QUEUES[Math.floor(i / CLIENTS.length) % BENCH_QUEUES.length] };
}

/** SINGLE enqueues sent by wrk: each answer checked (202, a queued request of its client and queue). */
async function enqueueSingleWrk() {
  const period = CLIENTS.length * BENCH_QUEUES.length;
  const requests = Array.from({ length: period }, (_, i) => {
    const { client, queue } = singleOf(i);
    return {
      method: "POST", path: "/api/queue/enqueue", headers: { authorization: `Bearer ${client.key}`, "content-type": "application/json" },
      body: JSON.stringify(spec(queue)), check: { status: 202, fields: { client_id: client.id, queue, status: "queued" } }, client,
    };
  });
  const r = await wrkCalls({ base: BASE, requests, count: SINGLE, connections: SINGLE_CONCURRENCY, idField: "id" });
  for (const problem of r.problems) recordError("enqueue_single", { status: -1, ms: 0, text: problem }, "wrk: an answer not 202 with a queued request of its client and queue");
  for (const { id, request } of r.ids) enqueued.push({ id, client: requests[request].client });
  return { ok: r.ok, seconds: r.seconds, latency: r.latency };
}

async function enqueueSingle() {
  const latencies = [];
  let ok = 0;
  const ticks0 = workerdTicks();
  const byPid0 = workerdTicksByPid();
  const t0 = performance.now();
  if (LOADGEN === "wrk" && SINGLE > 0) {
    const r = await enqueueSingleWrk();
    return singleResult(r.ok, r.seconds, r.latency, ticks0, byPid0);
  }
  await pool(SINGLE, SINGLE_CONCURRENCY, async (i) => {
    const { client, queue } = singleOf(i);
    const res = await call("POST", "/api/queue/enqueue", { token: client.key, body: spec(queue) });
    latencies.push(res.ms);
    const id = res.json?.request?.id;
    if (res.status !== 202) return recordError("enqueue_single", res, "expected 202");
    if (typeof id !== "string" || res.json.request.status !== "queued" || res.json.request.client_id !== client.id || res.json.request.queue !== queue) {
      return recordError("enqueue_single", res, "202 without a queued request of this client and queue");
    }
    ok += 1;
    enqueued.push({ id, client });
  });
  return singleResult(ok, (performance.now() - t0) / 1000, latencyStats(latencies), ticks0, byPid0);
}

function singleResult(ok, seconds, callLatency, ticks0, byPid0) {
  const ticks1 = workerdTicks();
  // workerd CPU per enqueue: moves less with the machine's load than req/s does.
  const cpuUs = ticks0 == null || ticks1 == null || ok === 0 ? null : ((ticks1 - ticks0) / TICKS_PER_S / ok) * 1e6;
  const byPid1 = workerdTicksByPid();
  const perProcess = byPid0 && byPid1 && ok > 0
    ? Object.fromEntries(Object.entries(byPid1).map(([pid, t]) => [pid, Math.round(((t - (byPid0[pid] ?? 0)) / TICKS_PER_S / ok) * 1e6)]))
    : null;
  return { calls: SINGLE, concurrency: SINGLE_CONCURRENCY, load_generator: LOADGEN, requests_ok: ok, seconds, requests_per_s: ok / seconds, workerd_cpu_us_per_enqueue: cpuUs, workerd_cpu_us_per_enqueue_by_pid: perProcess, call_latency: callLatency };
}

/** `total` requests (a multiple of BATCH_SIZE) in batches, BATCH_CONCURRENCY in flight; the accepted ones go into `into`. */
async function enqueueBatched(total = BATCHED, into = enqueued) {
  const batches = total / BATCH_SIZE;
  const latencies = [];
  let ok = 0;
  const t0 = performance.now();
  await pool(batches, BATCH_CONCURRENCY, async (b) => {
    const client = CLIENTS[b % CLIENTS.length];
    const requests = Array.from({ length: BATCH_SIZE }, (_, j) => spec(BENCH_QUEUES[(b * BATCH_SIZE + j) % BENCH_QUEUES.length]));
    const res = await call("POST", "/api/queue/enqueue", { token: client.key, body: { requests } });
    latencies.push(res.ms);
    if (res.status !== 200) return recordError("enqueue_batch", res, "expected 200");
    const body = res.json;
    if (body?.accepted !== BATCH_SIZE || body?.rejected !== 0 || !Array.isArray(body?.results)) {
      return recordError("enqueue_batch", { ...res, text: JSON.stringify({ accepted: body?.accepted, rejected: body?.rejected, first_rejected: body?.results?.find((r) => !r.ok) }) }, `expected accepted=${BATCH_SIZE}`);
    }
    for (const r of body.results) {
      if (r.ok && typeof r.request?.id === "string" && r.request.status === "queued" && r.request.client_id === client.id) {
        ok += 1;
        into.push({ id: r.request.id, client });
      } else {
        recordError("enqueue_batch", { status: res.status, ms: res.ms, text: JSON.stringify(r) }, "batch item not queued");
      }
    }
  });
  const seconds = (performance.now() - t0) / 1000;
  return { calls: batches, batch_size: BATCH_SIZE, concurrency: BATCH_CONCURRENCY, requests_ok: ok, seconds, requests_per_s: ok / seconds, call_latency: latencyStats(latencies) };
}

/** `SAMPLES` sequential calls (after a few untimed ones); `check` says what is wrong with an answer, or null. */
async function sequential(phase, makeCall, check, { warmup = WARMUP_CALLS, startedAt, stop } = {}) {
  for (let i = 0; i < warmup; i++) await makeCall(-1 - i);
  const latencies = [];
  const statuses = {};
  let bad = 0;
  const t0 = performance.now();
  let timeouts = 0;
  for (let i = 0; i < SAMPLES && !shuttingDown; i++) {
    if (stop?.()) break;
    if (timeouts >= MAX_TIMEOUTS) {
      recordError(phase, { status: 0, ms: 0, text: `stopped after ${timeouts} calls without an answer` }, "service not answering");
      break;
    }
    startedAt?.push(performance.now());
    const res = await makeCall(i);
    latencies.push(res.ms);
    if (res.status === 0) timeouts += 1;
    statuses[res.status] = (statuses[res.status] ?? 0) + 1;
    const problem = check(res);
    if (problem) {
      bad += 1;
      recordError(phase, res, problem);
    }
  }
  return { ...latencyStats(latencies), seconds: (performance.now() - t0) / 1000, statuses, bad, latencies };
}

const randomOf = (list) => list[Math.floor(Math.random() * list.length)];

/** `n` copies of a `sequential` measurement at once, merged (latencies, statuses, bad answers). */
async function concurrently(n, run, sentAt) {
  const sent = Array.from({ length: n }, () => []);
  const parts = await Promise.all(sent.map((mine) => run(mine)));
  const latencies = parts.flatMap((p) => p.latencies);
  // Each call's send time, in the order of `latencies`.
  sentAt.push(...sent.flat());
  const statuses = {};
  for (const p of parts) for (const [k, v] of Object.entries(p.statuses)) statuses[k] = (statuses[k] ?? 0) + v;
  return { ...latencyStats(latencies), seconds: Math.max(...parts.map((p) => p.seconds)), statuses, bad: parts.reduce((a, p) => a + p.bad, 0), latencies, concurrency: n };
}

/** Resident memory (VmRSS, kB) of the dev group's workerd processes, or null. */
function workerdRssKb() {
  const procs = devGroup();
  if (!procs) return null;
  let kb = 0;
  for (const { pid, name } of procs) {
    if (name !== "workerd") continue;
    try {
      kb += Number(readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/)?.[1] ?? 0);
    } catch { /* gone */ }
  }
  return kb;
}

/**
 * Hold mode: the runtime's memory per job in flight (RSS at the peak over RSS before the drain started,
 * over the jobs in flight then) and CPU per job (from the start until the peak: dispatching them all).
 */
function holdFigures(peak, rss0, ticks0, t0) {
  if (!peak) return null;
  return {
    peak_in_flight: peak.in_flight,
    reached_at_s: peak.t,
    rss_before_mb: rss0 == null ? null : rss0 / 1024,
    rss_at_peak_mb: peak.rss_kb == null ? null : peak.rss_kb / 1024,
    rss_per_job_kb: peak.rss_kb == null || rss0 == null ? null : (peak.rss_kb - rss0) / peak.in_flight,
    cpu_us_per_job_to_peak: peak.ticks == null || ticks0 == null ? null : ((peak.ticks - ticks0) / TICKS_PER_S / peak.in_flight) * 1e6,
    t0_ms: t0,
  };
}

/** One POST /api/execute of the bench template as acme (every phase's execute). */
const executeCall = () => call("POST", "/api/execute", { token: ACME.key, body: { template: TEMPLATE, params: EXEC_PARAMS }, timeoutMs: EXECUTE_TIMEOUT_MS });

/**
 * 3b. POST /api/execute with nothing queued and the scheduler running: IDLE_EXECUTES one at a time (after a
 * few untimed), then as many again EXECUTE_CONCURRENCY at a time; each must answer 200 completed. The
 * runtime's CPU per execute (every workerd process of the dev group, its proxy included) is what an
 * execute costs the one thread the drain runs on too.
 */
async function executeIdle() {
  await mustOk("execute_idle", "POST", "/admin/scheduler/start", { token: ADMIN_TOKEN });
  const check = (res) => (res.status !== 200 ? "expected 200" : res.json?.request?.status !== "completed" ? `200 with status ${res.json?.request?.status}` : null);
  const measure = async (concurrency) => {
    const ticks0 = workerdTicks();
    const t0 = performance.now();
    let ok = 0;
    const latencies = [];
    await pool(IDLE_EXECUTES, concurrency, async () => {
      const res = await executeCall();
      latencies.push(res.ms);
      const problem = check(res);
      if (problem) recordError("execute_idle", res, problem);
      else ok += 1;
    });
    const seconds = (performance.now() - t0) / 1000;
    const ticks1 = workerdTicks();
    return {
      concurrency, calls: IDLE_EXECUTES, ok, seconds, executes_per_s: ok / seconds, ...latencyStats(latencies),
      workerd_cpu_us_per_execute: ticks0 == null || ticks1 == null || ok === 0 ? null : ((ticks1 - ticks0) / TICKS_PER_S / ok) * 1e6,
    };
  };
  for (let i = 0; i < WARMUP_CALLS; i++) await executeCall();
  const single = await measure(1);
  const concurrent = await measure(EXECUTE_CONCURRENCY);
  const stopped = await mustOk("execute_idle", "POST", "/admin/scheduler/stop", { token: ADMIN_TOKEN });
  if (stopped.running !== false) throw new Error(`scheduler stop answered running=${stopped.running}`);
  const after = await mustOk("execute_idle", "GET", "/api/queue/status", { token: ADMIN_TOKEN });
  if (depthOf(after) !== 0) recordError("execute_idle", { status: 200, ms: 0, text: JSON.stringify(after.queues) }, `queues not empty after the idle executes: ${depthOf(after)}`);
  return { single, concurrent };
}

function depthOf(status) {
  return (status?.queues ?? []).reduce((sum, q) => sum + (Number(q.depth) || 0), 0);
}

async function drain(executeIds) {
  const before = await mustOk("drain", "GET", "/api/queue/status", { token: ADMIN_TOKEN });
  const backlog = depthOf(before);
  const dispatched0 = before.scheduler.dispatched_total;
  const polls = [];
  let done = false; // every queue empty and nothing in flight
  let gaveUp = false; // DRAIN_MAX_S passed
  let stalled = false; // queues empty, but the same requests in flight for STALL_S
  let doneAt = null;
  let emptyAt = null; // first poll with every queue empty: { t, dispatched }
  let flightSince = null; // { t, in_flight } while the queues are empty and in_flight does not move

  const ticks0 = workerdTicks();
  const rss0 = workerdRssKb();
  const t0 = performance.now();
  const started = await mustOk("drain", "POST", "/admin/scheduler/start", { token: ADMIN_TOKEN });
  if (started.running !== true) throw new Error(`scheduler start answered running=${started.running}`);

  const poller = (async () => {
    let nextAt = t0;
    let step = POLL_MS;
    let seen = { t: 0 };
    while (!shuttingDown) {
      nextAt += step;
      const wait = nextAt - performance.now();
      if (wait > 0) await sleep(wait);
      const res = await call("GET", "/api/queue/status", { token: ADMIN_TOKEN });
      const t = (performance.now() - t0) / 1000;
      if (res.status !== 200) {
        console.log(`    t=${t.toFixed(2)}s status poll answered ${res.status} after ${fmt(res.ms, 0)} ms: ${res.text.slice(0, 120)}`);
        recordError("drain_poll", res, "expected 200");
        polls.push({ t, status: res.status, ms: res.ms, fds: groupFds() });
      } else {
        const s = res.json.scheduler;
        const depth = depthOf(res.json);
        const p = { t, depth, in_flight: s.in_flight, queued: s.queued, dispatched_total: s.dispatched_total, running: s.running, ms: Math.round(res.ms * 10) / 10, fds: groupFds() };
        polls.push(p);
        const empty = depth === 0 && s.queued === 0;
        if (s.in_flight > peakInFlight) {
          peakInFlight = s.in_flight;
          if (HOLD_S > 0) peakAt = { t, in_flight: s.in_flight, rss_kb: workerdRssKb(), ticks: workerdTicks() };
        }
        if (empty && !emptyAt) emptyAt = { t, dispatched: s.dispatched_total - dispatched0, ticks: workerdTicks(), resolution_ms: Math.round((t - seen.t) * 1000) };
        step = nextPollMs(step, depth, (s.dispatched_total - dispatched0) / t, (s.dispatched_total - (seen.dispatched ?? dispatched0)) / (t - seen.t));
        seen = { t, dispatched: s.dispatched_total };
        if (polls.length % (emptyAt ? 20 : 4) === 0 || (empty && polls.at(-2)?.depth !== 0)) {
          console.log(`    t=${t.toFixed(2)}s depth ${depth} in_flight ${s.in_flight} dispatched ${s.dispatched_total - dispatched0} (poll ${fmt(p.ms, 0)} ms${p.fds ? `, fds ${JSON.stringify(p.fds)}` : ""})`);
        }
        if (empty && s.in_flight === 0) {
          done = true;
          doneAt = t;
          return;
        }
        if (empty && s.in_flight > 0) {
          if (!flightSince || flightSince.in_flight !== s.in_flight) flightSince = { t, in_flight: s.in_flight };
          else if (t - flightSince.t >= STALL_S) {
            stalled = true;
            console.log(`    t=${t.toFixed(2)}s queues empty but ${s.in_flight} requests in flight, unchanged for ${STALL_S} s: giving up the wait`);
            return;
          }
        } else flightSince = null;
      }
      if (t > DRAIN_MAX_S) {
        gaveUp = true;
        return;
      }
    }
  })();

  // POST /api/execute while the backlog drains (200 when it ran, 202 when it had to wait). All the
  // calls are made (no warm-up: the path is warm); the ones sent before the queues were empty are
  // also reported on their own.
  const sentAt = [];
  let peakInFlight = 0;
  let peakAt = null; // { t, rssKb, ticks } at the poll that saw the most in flight (hold mode)
  const execAll = !DRAIN_EXECUTE ? { latencies: [], skipped: true } : await concurrently(EXECUTE_CONCURRENCY, (mySent) => sequential(
    "execute_draining",
    executeCall,
    (res) => {
      if (res.status !== 200 && res.status !== 202) return "expected 200 or 202";
      const st = res.json?.request?.status;
      if (res.status === 200 && st !== "completed") return `200 with status ${st}`;
      if (res.status === 202 && !["queued", "dispatching", "running"].includes(st)) return `202 with status ${st}`;
      if (res.json?.request?.id) {
        const r = res.json.request;
        // Where the time went (epoch ms, wall clock): sent -> created in the scheduler -> started -> finished -> answered.
        const phases = r.started_at == null ? null : { to_scheduler: r.created_at - res.sentAt, admit: r.started_at - r.created_at, run_and_settle: (r.finished_at ?? r.started_at) - r.started_at, answer: res.sentAt + res.ms - (r.finished_at ?? r.started_at) };
        executeIds.push({ id: r.id, client: ACME, answered: res.status, status: st, ms: Math.round(res.ms), phases });
      }
      return null;
    },
    { warmup: 0, startedAt: mySent, stop: () => gaveUp || emptyAt !== null },
  ), sentAt);
  await poller;
  const endMs = t0 + (emptyAt?.t ?? Infinity) * 1000;
  const { latencies: execLatencies, ...execAllStats } = execAll;
  // The slowest executes of the drain, each with where its time went (created, started, finished: the request's own times).
  const slowest = executeIds.filter((e) => e.phases).sort((a, b) => b.ms - a.ms).slice(0, 8).map(({ id, ms, phases }) => ({ id, ms, ...phases }));
  const execDuring = { ...latencyStats(execLatencies.filter((_, i) => sentAt[i] < endMs)), all_calls: execAllStats, slowest };

  const okPolls = polls.filter((p) => p.dispatched_total !== undefined);
  const last = okPolls.at(-1);
  let peak = 0;
  let prev = { t: 0, dispatched_total: dispatched0 };
  for (const p of okPolls) {
    const dt = p.t - prev.t;
    if (dt > 0) peak = Math.max(peak, (p.dispatched_total - prev.dispatched_total) / dt);
    prev = p;
  }
  return {
    completed: done,
    stalled,
    gave_up_after_s: gaveUp ? DRAIN_MAX_S : null,
    backlog_at_start: backlog,
    backlog_by_queue: Object.fromEntries((before.queues ?? []).filter((q) => q.depth > 0).map((q) => [q.queue, q.depth])),
    // Dispatch: from the start command to the first poll that saw every queue empty.
    dispatch_s: emptyAt?.t ?? null,
    dispatched_by_then: emptyAt?.dispatched ?? null,
    dispatches_per_s: emptyAt ? emptyAt.dispatched / emptyAt.t : null,
    backlog_per_s: emptyAt ? backlog / emptyAt.t : null,
    peak_dispatches_per_s: peak,
    // The runtime's CPU (every workerd of the dev group) per dispatch until the queues were empty, and
    // how busy it was: about 1.0 means one core's worth (workerd runs its workers on one thread).
    workerd_cpu_us_per_dispatch: emptyAt?.ticks != null && ticks0 != null && emptyAt.dispatched > 0
      ? ((emptyAt.ticks - ticks0) / TICKS_PER_S / emptyAt.dispatched) * 1e6 : null,
    workerd_cores_busy: emptyAt?.ticks != null && ticks0 != null ? (emptyAt.ticks - ticks0) / TICKS_PER_S / emptyAt.t : null,
    // Drain: until nothing is in flight either.
    drain_s: doneAt,
    dispatched_total: last ? last.dispatched_total - dispatched0 : null,
    stuck_in_flight: done ? 0 : (last?.in_flight ?? null),
    remaining_depth: last ? last.depth : null,
    poll_interval_ms: POLL_MS,
    fine_poll_interval_ms: FINE_POLL_MS,
    // The time between the last poll that saw work queued and the first that saw none: the drain ended in between.
    end_resolution_ms: emptyAt?.resolution_ms ?? null,
    poll_latency: latencyStats(polls.map((p) => p.ms)),
    execute_during_drain: execDuring,
    peak_in_flight: peakInFlight,
    hold: HOLD_S > 0 ? holdFigures(peakAt, rss0, ticks0, t0) : null,
    polls,
  };
}

async function verify(sampleFrom) {
  const picked = [];
  const rest = [...sampleFrom];
  for (let i = 0; i < VERIFY_SAMPLES && rest.length; i++) picked.push(rest.splice(Math.floor(Math.random() * rest.length), 1)[0]);
  const byStatus = {};
  let completed = 0;
  const notCompleted = [];
  let unanswered = 0;
  for (const { id, client } of picked) {
    if (unanswered >= MAX_TIMEOUTS) {
      recordError("verify", { status: 0, ms: 0, text: `stopped after ${unanswered} calls without an answer` }, "service not answering");
      break;
    }
    const res = await call("GET", `/api/execution/${id}`, { token: client.key, timeoutMs: 10_000 });
    unanswered = res.status === 0 ? unanswered + 1 : 0;
    const st = res.status === 200 ? res.json?.request?.status : `http_${res.status}`;
    byStatus[st] = (byStatus[st] ?? 0) + 1;
    if (st === "completed" && res.json.request.attempts >= 1 && res.json.request.client_id === client.id) completed += 1;
    else {
      recordError("verify", res, `expected completed, got ${st}`);
      if (notCompleted.length < 10) notCompleted.push({ id, status: st, error: res.json?.request?.error ?? null, attempts: res.json?.request?.attempts ?? null });
    }
  }
  return { sampled: picked.length, completed, by_status: byStatus, not_completed: notCompleted };
}

/** Lines of the wrangler dev log that look like trouble (errors, failed requests, 5xx). */
function scanLog(file) {
  if (!existsSync(file)) return { lines: 0, notable: 0, samples: [] };
  // eslint-disable-next-line no-control-regex
  const lines = readFileSync(file, "utf8").replace(/\x1b\[[0-9;]*m/g, "").split("\n").filter(Boolean);
  const notable = lines.filter((l) => /error|exception|fail|warn|"status":5\d\d|lease_expired|uncaught/i.test(l));
  const counts = {};
  for (const l of notable) {
    const msg = l.match(/"msg":"([^"]+)"/)?.[1] ?? l.replace(/\d+/g, "#").slice(0, 80);
    counts[msg] = (counts[msg] ?? 0) + 1;
  }
  return { lines: lines.length, notable: notable.length, by_kind: counts, samples: notable.slice(0, 8).map((l) => l.slice(0, 400)) };
}

// ---------------------------------------------------------------- baseline

/**
 * The baseline of this run: bench/queue-floor (a minimal queue object calling the same sample worker the
 * same way) in its own wrangler dev, driven like the service: the same single and batched enqueues,
 * then the drain with executes sent meanwhile. The service's figures are printed over these.
 */
async function runBaseline(logFile) {
  const port = await freePortPair(FIRST_PORT + 70, 60);
  const base = `http://${HOST}:${port}`;
  const persist = join(stateDir, "floor-state");
  mkdirSync(persist, { recursive: true });
  const dev = spawnWrangler([
    "dev", "-c", "bench/queue-floor/wrangler.toml", "-c", sampleWorkerConfig("content-generator"), "--ip", HOST, "--port", String(port),
    "--inspector-port", String(port + 1000), "--persist-to", persist, "--log-level", "warn", "--show-interactive-dev-session=false",
  ], logFile);
  const post = async (path, body) => {
    const t = performance.now();
    const res = await fetch(base + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body ?? {}), signal: AbortSignal.timeout(CALL_TIMEOUT_MS) });
    const json = await res.json().catch(() => null);
    return { status: res.status, json, ms: performance.now() - t };
  };
  try {
    const readyBy = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (Date.now() > readyBy) throw new Error(`baseline not ready at ${base}`);
      const ok = await fetch(base + "/", { signal: AbortSignal.timeout(2000) }).then((r) => r.status === 200, () => false);
      if (ok) break;
      await sleep(250);
    }
    const out = {};
    // Its workerd CPU per single enqueue, per process (wrangler's proxy in front, the workers): beside the
    // service's, what the same proxy costs for the floor's smaller answers.
    const byPid0 = workerdTicksByPid(dev.pid);
    let t = performance.now();
    if (LOADGEN === "wrk" && SINGLE > 0) {
      const r = await wrkCalls({
        base, count: SINGLE, connections: SINGLE_CONCURRENCY,
        requests: [{ method: "POST", path: "/enqueue", headers: { "content-type": "application/json" }, body: JSON.stringify({ params: PARAMS }), check: { status: 202, fields: {} } }],
      });
      if (r.ok !== SINGLE) throw new Error(`baseline: ${r.ok} of ${SINGLE} single enqueues answered 202: ${r.problems.slice(0, 3).join("; ")}`);
      out.enqueue_single_per_s = r.perS;
    } else {
      await pool(SINGLE, SINGLE_CONCURRENCY, async () => void (await post("/enqueue", { params: PARAMS })));
      out.enqueue_single_per_s = SINGLE / ((performance.now() - t) / 1000);
    }
    const byPid1 = workerdTicksByPid(dev.pid);
    if (byPid0 && byPid1 && SINGLE > 0) {
      out.workerd_cpu_us_per_enqueue_by_pid = Object.fromEntries(Object.entries(byPid1).map(([pid, ticks]) => [pid, Math.round(((ticks - (byPid0[pid] ?? 0)) / TICKS_PER_S / SINGLE) * 1e6)]));
      out.workerd_cpu_us_per_enqueue = Object.values(out.workerd_cpu_us_per_enqueue_by_pid).reduce((a, b) => a + b, 0);
    }
    t = performance.now();
    await pool(BATCHED / BATCH_SIZE, BATCH_CONCURRENCY, async () => void (await post("/enqueue", { requests: Array.from({ length: BATCH_SIZE }, () => ({ params: PARAMS })) })));
    out.enqueue_batched_per_s = BATCHED / ((performance.now() - t) / 1000);
    const status = async () => (await fetch(base + "/status", { signal: AbortSignal.timeout(CALL_TIMEOUT_MS) })).json();
    // Start the drain, time executes until the queue is empty (as the service's drain).
    const drainOnce = async () => {
      const before = await status();
      const t0 = performance.now();
      await post("/start");
      let emptyAt = null;
      const latencies = [];
      const poller = (async () => {
        // From the start at FINE_POLL_MS: it drains 10,000 in about a quarter of a second, so a first
        // poll at POLL_MS would already see it empty and put its end up to 250 ms late.
        let step = FINE_POLL_MS;
        let seen = { t: 0 };
        while (!emptyAt) {
          await sleep(step);
          const st = await status();
          const t = (performance.now() - t0) / 1000;
          if (st.queued === 0) emptyAt = { t, dispatched: st.dispatched - before.dispatched, resolution_ms: Math.round((t - seen.t) * 1000) };
          step = nextPollMs(step, st.queued, (st.dispatched - before.dispatched) / t, (st.dispatched - (seen.dispatched ?? before.dispatched)) / (t - seen.t));
          seen = { t, dispatched: st.dispatched };
        }
      })();
      // Executes while it drains, as the service's (none with QUEUE_BENCH_DRAIN_EXECUTE=0).
      if (DRAIN_EXECUTE) {
        await Promise.all(Array.from({ length: EXECUTE_CONCURRENCY }, async () => {
          while (!emptyAt) latencies.push((await post("/execute", { params: EXEC_PARAMS })).ms);
        }));
      }
      await poller;
      return { dispatches_per_s: emptyAt.dispatched / emptyAt.t, end_resolution_ms: emptyAt.resolution_ms, execute_during_drain: latencyStats(latencies) };
    };
    Object.assign(out, await drainOnce());
    if (SECOND) {
      // The first drain's last calls end first (as the service's drain waits for nothing in flight):
      // the queue has no stop, and a report would dispatch the second backlog as it is enqueued.
      for (const until = performance.now() + STALL_S * 1000; (await status()).in_flight > 0;) {
        if (performance.now() > until) throw new Error(`baseline: requests still in flight ${STALL_S} s after its first drain`);
        await sleep(FINE_POLL_MS);
      }
      // The second backlog, as the service's: the same size in batches, drained by the same runtime.
      const size = secondSize();
      await pool(size / BATCH_SIZE, BATCH_CONCURRENCY, async () => void (await post("/enqueue", { requests: Array.from({ length: BATCH_SIZE }, () => ({ params: PARAMS })) })));
      out.second = await drainOnce();
    }
    return out;
  } finally {
    try { process.kill(-dev.pid, "SIGTERM"); } catch { /* gone */ }
    await Promise.race([dev.exited, sleep(5000)]);
    try { process.kill(-dev.pid, "SIGKILL"); } catch { /* gone */ }
  }
}

/**
 * A sample worker's wrangler config as examples/<name>/wrangler.toml has it, with `vars` over its [vars]
 * (written to the state directory; `main` made absolute). JOB_LOG off unless QUEUE_BENCH_JOB_LOG=on.
 */
function sampleWorkerConfig(name, vars = {}) {
  const all = { ...(JOB_LOG ? {} : { JOB_LOG: "off" }), ...vars };
  const text = readFileSync(join(ROOT, "examples", name, "wrangler.toml"), "utf8")
    .split("\n").filter((line) => !Object.keys(all).some((k) => line.startsWith(`${k} = `))).join("\n") // the file's own lines for these go
    .replace(/^main = "(.*)"$/m, (_, file) => `main = "${join(ROOT, "examples", name, file)}"`)
    .replace(/^\[vars\]$/m, ["[vars]", ...Object.entries(all).map(([k, v]) => `${k} = "${v}"`)].join("\n"));
  const toml = join(stateDir, `${name}.toml`);
  writeFileSync(toml, text);
  return toml;
}

/** The wrangler dev configs of the service's session: in hold mode the content worker answers runMany at once (ACCEPT_MANY). */
function devConfigs() {
  const content = sampleWorkerConfig("content-generator", HOLD_S === 0 ? {} : { ACCEPT_MANY: "1", JOB_LOG: "off" });
  return ["-c", "wrangler.toml", "-c", content, "-c", sampleWorkerConfig("notifier")];
}

// ---------------------------------------------------------------- main

async function main() {
  const started = Date.now();
  if (!existsSync(WRANGLER)) throw new Error(`wrangler not found at ${WRANGLER}; run npm install`);
  const wranglerVersion = JSON.parse(readFileSync(join(ROOT, "node_modules", "wrangler", "package.json"), "utf8")).version;
  mkdirSync(RESULTS_DIR, { recursive: true });
  const logFile = join(RESULTS_DIR, "queue-wrangler.log");
  writeFileSync(logFile, "");

  const port = await pickPort();
  BASE = `http://${HOST}:${port}`;
  stateDir = mkdtempSync(join(tmpdir(), "rm-queue-bench-"));
  const persist = join(stateDir, "state");
  mkdirSync(persist, { recursive: true });
  const envFile = join(stateDir, "bench.env");
  writeFileSync(envFile, `ADMIN_TOKEN=${ADMIN_TOKEN}\nINTERNAL_TOKEN=${INTERNAL_TOKEN}\n${EXTRA_VARS.map((v) => `${v}\n`).join("")}`);

  const wrkInstalled = await haveWrk();
  LOADGEN = LOADGEN_ASKED || (wrkInstalled ? "wrk" : "node");
  if (LOADGEN === "wrk" && !wrkInstalled) throw new Error("QUEUE_BENCH_LOADGEN=wrk but wrk is not installed (apt-get install wrk)");
  console.log(`queue bench: ${SINGLE} single + ${BATCHED} batched enqueues, ${SAMPLES} samples per latency; wrangler ${wranglerVersion}, node ${process.version}, ${cpus().length} cpus, load ${loadavg().map((x) => x.toFixed(2)).join(" ")}`);
  if (EXTRA_VARS.length) console.log(`queue bench: the service runs with ${EXTRA_VARS.join(" ")} over wrangler.toml`);
  console.log(`queue bench: single enqueues sent by ${LOADGEN === "wrk" ? "wrk (one native thread; QUEUE_BENCH_LOADGEN=node: Node's fetch)" : "Node's fetch (QUEUE_BENCH_LOADGEN=wrk: wrk, apt-get install wrk)"}, service and baseline alike`);
  console.log(`queue bench: ${BASE}, state in ${stateDir}, wrangler log in bench/results/queue-wrangler.log`);
  console.log(`queue bench: the sample workers' job lines ${JOB_LOG ? "on (as under npm start)" : "off (QUEUE_BENCH_JOB_LOG=on keeps them)"}, service and baseline alike`);
  console.log(`queue bench: wrangler inspector proxy ${INSPECTOR ? "ON (wrangler's default)" : "off (VSCODE_INSPECTOR_OPTIONS set; QUEUE_BENCH_INSPECTOR=1 keeps it)"}`);

  const result = { date: new Date().toISOString() };
  try {
    // 0. the baseline, in the same run (not in hold mode: it has no held jobs).
    if (BASELINE && HOLD_S === 0) {
      console.log("queue bench: baseline (bench/queue-floor, a minimal queue object)...");
      result.baseline = await runBaseline(logFile);
      const b = result.baseline;
      console.log(`  enqueue ${fmt(b.enqueue_single_per_s, 0)} req/s single (workerd CPU ${fmt(b.workerd_cpu_us_per_enqueue, 0)} us each ${JSON.stringify(b.workerd_cpu_us_per_enqueue_by_pid ?? null)}), ${fmt(b.enqueue_batched_per_s, 0)} batched; drain ${fmt(b.dispatches_per_s, 0)}/s; execute p95 ${fmt(b.execute_during_drain.p95_ms, 2)} ms (n=${b.execute_during_drain.n})`);
    }
    // 1-2. local D1 and limits, then wrangler dev.
    const d1 = ["d1", "execute", "DB", "--local", "--persist-to", persist, "--yes"];
    const freshSql = join(stateDir, "fresh-d1.sql");
    writeFileSync(freshSql, freshD1Sql());
    await wranglerOnce([...d1, "--file", freshSql], logFile);
    await wranglerOnce([...d1, "--command", BENCH_SQL], logFile);
    const dev = spawnWrangler([
      "dev", ...devConfigs(), "--ip", HOST, "--port", String(port), "--inspector-port", String(port + 1000),
      "--persist-to", persist, "--log-level", "warn", "--env-file", envFile, "--show-interactive-dev-session=false",
    ], logFile);
    devPgid = dev.pid;
    let exited = null;
    dev.exited.then((e) => (exited = e));
    const readyBy = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (exited) throw new Error(`wrangler dev exited early (${exited.signal ?? exited.code}):\n${dev.tail()}`);
      if (Date.now() > readyBy) throw new Error(`not ready at ${BASE}/ within ${READY_TIMEOUT_MS / 1000}s:\n${dev.tail()}`);
      const res = await call("GET", "/", { timeoutMs: 2_000 });
      if (res.status === 200) break;
      await sleep(250);
    }
    console.log(`queue bench: service ready after ${((Date.now() - started) / 1000).toFixed(1)}s`);

    // Secrets came from the env file, and the bench data is there.
    const auth = await call("GET", "/admin/scheduler/status", { token: ADMIN_TOKEN });
    if (auth.status !== 200) throw new Error(`the admin token from --env-file was not accepted (${auth.status}): ${auth.text.slice(0, 300)}`);
    const est = await call("POST", "/api/resources/estimate", { token: ACME.key, body: { template: TEMPLATE } });
    if (est.status !== 200) throw new Error(`template ${TEMPLATE} not usable (${est.status}): ${est.text.slice(0, 300)}`);

    // 3. stop the scheduler; the queues start empty.
    const stopped = await mustOk("setup", "POST", "/admin/scheduler/stop", { token: ADMIN_TOKEN });
    if (stopped.running !== false) throw new Error(`scheduler stop answered running=${stopped.running}`);
    const empty = await mustOk("setup", "GET", "/api/queue/status", { token: ADMIN_TOKEN });
    if (depthOf(empty) !== 0) throw new Error(`queues not empty at start: ${depthOf(empty)}`);
    // Touch every key once (isolate caches of keys and config), not an enqueue.
    for (const c of CLIENTS) await mustOk("setup", "GET", "/api/queue/status", { token: c.key });

    // 3b. executes with nothing queued (the immediate lane's own cost).
    if (IDLE_EXECUTES > 0) {
      console.log(`queue bench: ${IDLE_EXECUTES} executes with nothing queued, one at a time, then ${EXECUTE_CONCURRENCY} at a time...`);
      result.execute_idle = await executeIdle();
      for (const m of [result.execute_idle.single, result.execute_idle.concurrent]) {
        console.log(`  c=${m.concurrency}: ${fmt(m.executes_per_s, 0)}/s, p50 ${fmt(m.p50_ms, 2)} p95 ${fmt(m.p95_ms, 2)} p99 ${fmt(m.p99_ms, 2)} ms, workerd CPU ${fmt(m.workerd_cpu_us_per_execute, 0)} us per execute`);
      }
    }

    // 4. enqueue.
    console.log(`queue bench: enqueueing ${SINGLE} single (${SINGLE_CONCURRENCY} in flight)...`);
    result.enqueue_single = await enqueueSingle();
    console.log(`  ${fmt(result.enqueue_single.requests_per_s)} req/s, ${result.enqueue_single.requests_ok} ok in ${fmt(result.enqueue_single.seconds, 2)} s, workerd CPU ${fmt(result.enqueue_single.workerd_cpu_us_per_enqueue, 0)} us per enqueue ${JSON.stringify(result.enqueue_single.workerd_cpu_us_per_enqueue_by_pid)}`);
    console.log(`queue bench: enqueueing ${BATCHED} in batches of ${BATCH_SIZE} (${BATCH_CONCURRENCY} in flight)...`);
    result.enqueue_batched = await enqueueBatched();
    console.log(`  ${fmt(result.enqueue_batched.requests_per_s)} req/s, ${result.enqueue_batched.requests_ok} ok in ${fmt(result.enqueue_batched.seconds, 2)} s`);
    const afterEnqueue = await mustOk("enqueue_check", "GET", "/api/queue/status", { token: ADMIN_TOKEN });
    result.queued_after_enqueue = depthOf(afterEnqueue);
    result.queued_by_queue = Object.fromEntries(afterEnqueue.queues.map((q) => [q.queue, q.depth]));
    console.log(`queue bench: ${result.queued_after_enqueue} queued ${JSON.stringify(result.queued_by_queue)}, scheduler running=${afterEnqueue.scheduler.running}`);
    if (result.queued_after_enqueue !== enqueued.length) {
      recordError("enqueue_check", { status: 200, ms: 0, text: JSON.stringify(afterEnqueue.queues) }, `status says ${result.queued_after_enqueue} queued, ${enqueued.length} were accepted`);
    }
    if (enqueued.length === 0) throw new Error("nothing was enqueued");

    // 5. latency with the backlog queued and the scheduler stopped.
    console.log(`queue bench: latency with ${result.queued_after_enqueue} queued, scheduler stopped (${SAMPLES} sequential calls each)...`);
    const latency = {};
    latency.status = await sequential(
      "status",
      () => call("GET", "/api/queue/status", { token: ACME.key }),
      (res) => (res.status !== 200 ? "expected 200" : depthOf(res.json) < enqueued.length ? `depth ${depthOf(res.json)} < ${enqueued.length}` : null),
    );
    latency.position = await sequential(
      "position",
      () => {
        const { id, client } = randomOf(enqueued);
        return call("GET", `/api/queue/position/${id}`, { token: client.key });
      },
      (res) => (res.status !== 200 ? "expected 200" : typeof res.json?.position !== "number" || res.json.status !== "queued" ? "no position for a queued request" : null),
    );
    const executeIds = [];
    latency.execute_stopped = await sequential(
      "execute_stopped",
      executeCall,
      (res) => {
        if (res.status !== 202) return "expected 202";
        if (res.json?.request?.status !== "queued" || res.json.request.queue !== "immediate") return "202 without a queued immediate request";
        executeIds.push({ id: res.json.request.id, client: ACME, answered: 202 });
        return null;
      },
    );
    for (const v of Object.values(latency)) delete v.latencies;
    result.latency_stopped = latency;
    for (const [k, v] of Object.entries(latency)) console.log(`  ${pad(k, 16, true)} p50 ${fmt(v.p50_ms, 2)}  p95 ${fmt(v.p95_ms, 2)}  p99 ${fmt(v.p99_ms, 2)}  max ${fmt(v.max_ms, 2)} ms${v.bad ? `  (${v.bad} bad answers)` : ""}`);

    // 6. drain.
    console.log(`queue bench: starting the scheduler, draining${DRAIN_EXECUTE ? " (execute timed meanwhile)" : ""}...`);
    result.drain = await drain(executeIds);
    const d = result.drain;
    console.log(`  backlog ${d.backlog_at_start}: ${d.dispatch_s == null ? "queues NOT emptied" : `${d.dispatched_by_then} dispatched in ${fmt(d.dispatch_s, 2)} s = ${fmt(d.dispatches_per_s, 0)}/s (peak ${fmt(d.peak_dispatches_per_s, 0)}/s)`}; ${d.completed ? `nothing in flight after ${fmt(d.drain_s, 2)} s` : `${d.stuck_in_flight} still in flight when the wait ended`}`);

    // Verify: a sample of the enqueued requests completed.
    result.verify = await verify(enqueued);
    console.log(`  verify: ${result.verify.completed}/${result.verify.sampled} sampled enqueued requests completed ${JSON.stringify(result.verify.by_status)}`);
    result.verify_execute = await verify(executeIds);
    console.log(`  verify: ${result.verify_execute.completed}/${result.verify_execute.sampled} sampled execute requests completed ${JSON.stringify(result.verify_execute.by_status)}`);
    // 6b. a second backlog of the same size, drained by the same (now warm) runtime.
    if (SECOND && HOLD_S === 0) {
      const size = secondSize();
      console.log(`queue bench: second backlog: ${size} in batches, scheduler stopped, then drained by the same runtime...`);
      await mustOk("second", "POST", "/admin/scheduler/stop", { token: ADMIN_TOKEN });
      const again = [];
      const enq = await enqueueBatched(size, again);
      console.log(`  ${fmt(enq.requests_per_s)} req/s, ${enq.requests_ok} ok in ${fmt(enq.seconds, 2)} s`);
      result.drain_second = await drain([]);
      const d2 = result.drain_second;
      console.log(`  backlog ${d2.backlog_at_start}: ${d2.dispatch_s == null ? "queues NOT emptied" : `${d2.dispatched_by_then} dispatched in ${fmt(d2.dispatch_s, 2)} s = ${fmt(d2.dispatches_per_s, 0)}/s`}; ${d2.completed ? `nothing in flight after ${fmt(d2.drain_s, 2)} s` : `${d2.stuck_in_flight} still in flight when the wait ended`}`);
      result.verify_second = await verify(again);
      console.log(`  verify: ${result.verify_second.completed}/${result.verify_second.sampled} sampled requests of the second backlog completed ${JSON.stringify(result.verify_second.by_status)}`);
    }
    const finalState = await call("GET", "/api/queue/status", { token: ADMIN_TOKEN });
    result.final_status = finalState.json;
  } finally {
    await stopAll();
    removeState();
    if (KEEP_STATE) console.log(`queue bench: kept ${stateDir}`);
  }

  result.wrangler_log = scanLog(join(RESULTS_DIR, "queue-wrangler.log"));
  summarize(result, { port, wranglerVersion, started });
}

/** Executes during the drain that made a request (answered 200 or 202). */
function executesAnswered(E) {
  const st = E.all_calls?.statuses ?? {};
  return (st[200] ?? 0) + (st[202] ?? 0);
}

function summarize(result, { port, wranglerVersion, started }) {
  const L = result.latency_stopped;
  const D = result.drain;
  const E = D.execute_during_drain;
  const rows = [
    ["enqueue, single calls", `${fmt(result.enqueue_single.requests_per_s, 0)} req/s`, `${result.enqueue_single.requests_ok}/${SINGLE} ok, ${LOADGEN} c=${SINGLE_CONCURRENCY}, call p50 ${fmt(result.enqueue_single.call_latency.p50_ms, 1)} p95 ${fmt(result.enqueue_single.call_latency.p95_ms, 1)} ms, ${fmt(result.enqueue_single.workerd_cpu_us_per_enqueue, 0)} us CPU each`],
    ["enqueue, batches of 100", `${fmt(result.enqueue_batched.requests_per_s, 0)} req/s`, `${result.enqueue_batched.requests_ok}/${BATCHED} ok, c=${BATCH_CONCURRENCY}, call p50 ${fmt(result.enqueue_batched.call_latency.p50_ms, 1)} p95 ${fmt(result.enqueue_batched.call_latency.p95_ms, 1)} ms`],
  ];
  const latRows = [
    ["GET /api/queue/status", L.status, "stopped"],
    ["GET /api/queue/position/{id}", L.position, "stopped"],
    ["POST /api/execute (202)", L.execute_stopped, "stopped"],
    ...(result.execute_idle ? [
      ["POST /api/execute (idle, c=1)", { ...result.execute_idle.single, statuses: `nothing queued: ${fmt(result.execute_idle.single.executes_per_s, 0)}/s, ${fmt(result.execute_idle.single.workerd_cpu_us_per_execute, 0)} us CPU each` }, "idle"],
      [`POST /api/execute (idle, c=${EXECUTE_CONCURRENCY})`, { ...result.execute_idle.concurrent, statuses: `nothing queued: ${fmt(result.execute_idle.concurrent.executes_per_s, 0)}/s, ${fmt(result.execute_idle.concurrent.workerd_cpu_us_per_execute, 0)} us CPU each` }, "idle"],
    ] : []),
    ...(DRAIN_EXECUTE ? [
      ["POST /api/execute (draining)", { ...E, statuses: "those sent before the queues were empty" }, "draining"],
      ["POST /api/execute (after start)", E.all_calls, "after start"],
    ] : []),
  ];
  const line = "-".repeat(100);
  console.log(`\n${line}`);
  console.log(`${pad("enqueue", 30, true)}${pad("rate", 14)}   details`);
  console.log(line);
  for (const [a, b, c] of rows) console.log(`${pad(a, 30, true)}${pad(b, 14)}   ${c}`);
  console.log(line);
  console.log(`${pad(`latency, ${result.queued_after_enqueue} queued`, 30, true)}${pad("n", 5)}${pad("p50 ms", 10)}${pad("p95 ms", 10)}${pad("p99 ms", 10)}${pad("max ms", 10)}   statuses`);
  console.log(line);
  for (const [name, s] of latRows) console.log(`${pad(name, 30, true)}${pad(s.n, 5)}${pad(fmt(s.p50_ms, 2), 10)}${pad(fmt(s.p95_ms, 2), 10)}${pad(fmt(s.p99_ms, 2), 10)}${pad(fmt(s.max_ms, 2), 10)}   ${typeof s.statuses === "string" ? s.statuses : JSON.stringify(s.statuses)}`);
  console.log(line);
  console.log(`${pad("dispatch (queues empty)", 30, true)}${D.dispatch_s == null ? `queues NOT empty within the wait: depth ${D.remaining_depth}` : `${D.dispatched_by_then} dispatched in ${fmt(D.dispatch_s, 2)} s (backlog ${D.backlog_at_start} + executes), the end known to ${D.end_resolution_ms} ms (polls every ${POLL_MS} ms, every ${FINE_POLL_MS} ms near the end)`}`);
  console.log(`${pad("  dispatches/s", 30, true)}${fmt(D.dispatches_per_s, 0)} (backlog/time ${fmt(D.backlog_per_s, 0)}), peak between polls ${fmt(D.peak_dispatches_per_s, 0)}`);
  if (D.workerd_cpu_us_per_dispatch != null) console.log(`${pad("  workerd CPU", 30, true)}${fmt(D.workerd_cpu_us_per_dispatch, 0)} us per dispatch, ${fmt(D.workerd_cores_busy, 2)} cores busy`);
  const slow = D.execute_during_drain?.slowest?.[0];
  if (slow) console.log(`${pad("  slowest execute", 30, true)}${slow.ms} ms: ${fmt(slow.to_scheduler, 0)} before the scheduler held it (HTTP, the worker's checks, and workerd's queue: one thread under wrangler dev), admit ${slow.admit}, run and settle ${slow.run_and_settle}, answer ${fmt(slow.answer, 0)}`);
  console.log(`${pad("drain (nothing in flight)", 30, true)}${D.completed ? `after ${fmt(D.drain_s, 2)} s` : `NOT reached: ${D.stuck_in_flight} requests still in flight when the wait ended${D.stalled ? ` (unchanged for ${STALL_S} s)` : ""}`}`);
  console.log(`${pad("  verify", 30, true)}${result.verify.completed}/${result.verify.sampled} enqueued completed; ${result.verify_execute.completed}/${result.verify_execute.sampled} executes completed`);
  const D2 = result.drain_second;
  const E2 = D2?.execute_during_drain;
  if (D2) {
    console.log(`${pad("second backlog (warm)", 30, true)}${D2.dispatch_s == null ? `queues NOT empty within the wait: depth ${D2.remaining_depth}` : `${D2.dispatched_by_then} dispatched in ${fmt(D2.dispatch_s, 2)} s (backlog ${D2.backlog_at_start} + executes), the end known to ${D2.end_resolution_ms} ms`}`);
    console.log(`${pad("  dispatches/s", 30, true)}${fmt(D2.dispatches_per_s, 0)} (backlog/time ${fmt(D2.backlog_per_s, 0)}), peak between polls ${fmt(D2.peak_dispatches_per_s, 0)}`);
    if (D2.workerd_cpu_us_per_dispatch != null) console.log(`${pad("  workerd CPU", 30, true)}${fmt(D2.workerd_cpu_us_per_dispatch, 0)} us per dispatch, ${fmt(D2.workerd_cores_busy, 2)} cores busy`);
    if (DRAIN_EXECUTE) console.log(`${pad("  POST /api/execute", 30, true)}n ${E2.n}, p50 ${fmt(E2.p50_ms, 2)} p95 ${fmt(E2.p95_ms, 2)} p99 ${fmt(E2.p99_ms, 2)} max ${fmt(E2.max_ms, 2)} ms (sent before the queues were empty)`);
    console.log(`${pad("  verify", 30, true)}${result.verify_second.completed}/${result.verify_second.sampled} of the second backlog completed; ${D2.completed ? `nothing in flight after ${fmt(D2.drain_s, 2)} s` : `NOT drained: ${D2.stuck_in_flight} in flight`}`);
  }
  console.log(line);

  const p95Target = 200;
  const targets = [
    { name: "p95 GET /api/queue/status (stopped)", value: L.status.p95_ms, target: `< ${p95Target} ms`, met: L.status.p95_ms != null && L.status.p95_ms < p95Target },
    { name: "p95 GET /api/queue/position (stopped)", value: L.position.p95_ms, target: `< ${p95Target} ms`, met: L.position.p95_ms != null && L.position.p95_ms < p95Target },
    { name: "p95 POST /api/execute (stopped)", value: L.execute_stopped.p95_ms, target: `< ${p95Target} ms`, met: L.execute_stopped.p95_ms != null && L.execute_stopped.p95_ms < p95Target },
    ...(DRAIN_EXECUTE ? [
      { name: "p95 POST /api/execute (draining)", value: E.p95_ms, target: `< ${p95Target} ms`, met: E.p95_ms != null && E.p95_ms < p95Target && E.n >= 50 },
      { name: "p99 POST /api/execute (draining)", value: E.p99_ms, target: "< 500 ms", met: E.p99_ms != null && E.p99_ms < 500 && E.n >= 50 },
      { name: "executes timed during the drain", value: E.n, target: ">= 50", met: E.n >= 50 },
    ] : []),
    { name: "enqueue, single calls, req/s", value: result.enqueue_single.requests_per_s, target: ">= 600", met: result.enqueue_single.requests_per_s >= 600 },
    { name: "dispatches/s", value: D.dispatches_per_s, target: ">= 8000", met: D.dispatches_per_s != null && D.dispatches_per_s >= 8000 },
    { name: "dispatches/s (aim)", value: D.dispatches_per_s, target: ">= 12000", met: D.dispatches_per_s != null && D.dispatches_per_s >= 12000 },
    ...(HOLD_S > 0 ? [
      // The held backlog is the enqueued requests; the executes (202s while stopped, and those during the drain) do not hold.
      { name: "peak requests in flight (hold mode)", value: D.peak_in_flight, target: `>= ${enqueued.length}`, met: D.peak_in_flight >= enqueued.length },
      { name: "dispatched exactly once (hold mode)", value: D.dispatched_total, target: `= ${D.backlog_at_start + executesAnswered(E)}`, met: D.dispatched_total === D.backlog_at_start + executesAnswered(E) },
    ] : []),
    ...(D2 ? [
      { name: "dispatches/s, second backlog (warm)", value: D2.dispatches_per_s, target: ">= 8000", met: D2.dispatches_per_s != null && D2.dispatches_per_s >= 8000 },
      ...(DRAIN_EXECUTE ? [
        { name: "p95 POST /api/execute (second drain)", value: E2.p95_ms, target: `< ${p95Target} ms`, met: E2.p95_ms != null && E2.p95_ms < p95Target && E2.n >= 50 },
        { name: "p99 POST /api/execute (second drain)", value: E2.p99_ms, target: "< 500 ms", met: E2.p99_ms != null && E2.p99_ms < 500 && E2.n >= 50 },
      ] : []),
      { name: "sampled requests completed (second)", value: result.verify_second.completed, target: `= ${result.verify_second.sampled}`, met: result.verify_second.completed === result.verify_second.sampled && D2.completed },
    ] : []),
    { name: "requests left in flight after the drain", value: D.stuck_in_flight, target: "= 0", met: D.completed },
    { name: "sampled requests completed", value: result.verify.completed, target: `= ${result.verify.sampled}`, met: result.verify.completed === result.verify.sampled },
  ];
  const B = result.baseline;
  if (B) {
    // The same figures over this run's baseline (a minimal queue object, bench/queue-floor): machines differ, ratios less.
    result.ratios = {
      enqueue_single: result.enqueue_single.requests_per_s / B.enqueue_single_per_s,
      enqueue_batched: result.enqueue_batched.requests_per_s / B.enqueue_batched_per_s,
      dispatches: D.dispatches_per_s == null ? null : D.dispatches_per_s / B.dispatches_per_s,
      execute_p95: E.p95_ms == null || !B.execute_during_drain.p95_ms ? null : E.p95_ms / B.execute_during_drain.p95_ms,
      execute_p99: E.p99_ms == null || !B.execute_during_drain.p99_ms ? null : E.p99_ms / B.execute_during_drain.p99_ms,
      dispatches_second: D2?.dispatches_per_s == null || !B.second ? null : D2.dispatches_per_s / B.second.dispatches_per_s,
    };
    const r = result.ratios;
    console.log(`${pad("baseline (minimal queue object)", 42, true)}enqueue ${fmt(B.enqueue_single_per_s, 0)} req/s single, ${fmt(B.enqueue_batched_per_s, 0)} batched; drain ${fmt(B.dispatches_per_s, 0)}/s (end known to ${B.end_resolution_ms} ms); execute during its drain p95 ${fmt(B.execute_during_drain.p95_ms, 2)} p99 ${fmt(B.execute_during_drain.p99_ms, 2)} ms (n=${B.execute_during_drain.n})`);
    if (B.second) console.log(`${pad("baseline, second backlog", 42, true)}drain ${fmt(B.second.dispatches_per_s, 0)}/s (end known to ${B.second.end_resolution_ms} ms); execute during it p95 ${fmt(B.second.execute_during_drain.p95_ms, 2)} p99 ${fmt(B.second.execute_during_drain.p99_ms, 2)} ms (n=${B.second.execute_during_drain.n})`);
    console.log(`${pad("service / baseline", 42, true)}enqueue single ${fmt(r.enqueue_single, 2)}, batched ${fmt(r.enqueue_batched, 2)}; dispatches/s ${fmt(r.dispatches, 2)}${r.dispatches_second == null ? "" : ` (second backlog ${fmt(r.dispatches_second, 2)})`}; execute p95 ${fmt(r.execute_p95, 2)}x, p99 ${fmt(r.execute_p99, 2)}x`);
    console.log(line);
  }
  if (D.hold) {
    const h = D.hold;
    console.log(`${pad("hold mode", 42, true)}${h.peak_in_flight} in flight at once after ${fmt(h.reached_at_s, 1)} s; workerd RSS ${fmt(h.rss_before_mb, 0)} -> ${fmt(h.rss_at_peak_mb, 0)} MB = ${fmt(h.rss_per_job_kb, 2)} kB per job in flight; CPU ${fmt(h.cpu_us_per_job_to_peak, 0)} us per job to dispatch`);
    console.log(line);
  }
  for (const t of targets) console.log(`${pad(t.name, 42, true)}${pad(t.value == null ? "-" : fmt(t.value, t.name.startsWith("p95") ? 2 : 0), 10)}  target ${pad(t.target, 10, true)} ${t.met ? "met" : "NOT met"}`);
  console.log(line);
  if (errors.total === 0) console.log("errors: none (every answer had the expected status and body)");
  else {
    console.log(`errors: ${errors.total} ${JSON.stringify(errors.byPhase)}`);
    for (const e of errors.samples.slice(0, 10)) console.log(`  [${e.phase}] ${e.status} ${e.problem} (${e.ms} ms): ${e.body.slice(0, 300)}`);
    if (errors.dev_proxy_lost) {
      console.log(`  ${errors.dev_proxy_lost} of them answered by wrangler's dev proxy, not the service: its call to the runtime failed (it says "restarted"`);
      console.log("  for any POST whose call fails; in the runs looked into, the runtime had not restarted: docs/benchmarks.md, the dev proxy's 503)");
    }
  }
  const wl = result.wrangler_log;
  console.log(`wrangler log: ${wl.lines} lines, ${wl.notable} notable${wl.notable ? ` ${JSON.stringify(wl.by_kind)}` : ""}`);

  const out = {
    ...result,
    machine: { cpus: cpus().length, cpu_model: cpus()[0]?.model, platform: platform(), release: release(), node: process.version, wrangler: wranglerVersion, loadavg_end: loadavg() },
    config: { vars: EXTRA_VARS, job_log: JOB_LOG, load_generator_single: LOADGEN, hold_s: HOLD_S, idle_executes: IDLE_EXECUTES, second_backlog: SECOND && HOLD_S === 0, execute_concurrency: EXECUTE_CONCURRENCY, baseline: BASELINE, port, wrangler_inspector_proxy: INSPECTOR, execute_during_drain: DRAIN_EXECUTE, params_bytes: PARAMS_BYTES, single: SINGLE, batched: BATCHED, batch_size: BATCH_SIZE, single_concurrency: SINGLE_CONCURRENCY, batch_concurrency: BATCH_CONCURRENCY, samples: SAMPLES, warmup_calls: WARMUP_CALLS, poll_ms: POLL_MS, drain_max_s: DRAIN_MAX_S, template: TEMPLATE, queues: BENCH_QUEUES, batchable: BATCHABLE },
    targets,
    errors,
    elapsed_s: (Date.now() - started) / 1000,
  };
  writeFileSync(join(RESULTS_DIR, "queue-latest.json"), JSON.stringify(out, null, 2) + "\n");
  console.log(`results written to bench/results/queue-latest.json (${out.elapsed_s.toFixed(0)} s in all)`);
}

const watchdog = setTimeout(async () => {
  console.error(`queue bench: watchdog fired after ${WATCHDOG_MS / 1000}s; stopping`);
  shuttingDown = true;
  await stopAll();
  removeState();
  process.exit(2);
}, WATCHDOG_MS);
watchdog.unref();

main().then(
  () => process.exit(0),
  async (err) => {
    console.error(`queue bench: FAILED: ${err?.stack ?? err}`);
    if (errors.total) console.error(`errors so far: ${JSON.stringify(errors.samples.slice(0, 5), null, 2)}`);
    await stopAll();
    removeState();
    process.exit(1);
  },
);
