// Simulation helpers shared by the sample workers: latency and faults, no network, and the worker
// protocol on its transports (RPC `run(job)` and `runMany(jobs)`, HTTP `POST /run`).
// A job: { request_id, template, params, attempt, allotted: { <pool>: units }, trace_id? }. trace_id is
// the trace id of the enqueue or execute that made the request (over HTTP also sent as X-Trace-Id);
// each job's log line carries it, so one request can be followed from the Resource Manager's lines to
// the worker's.
// Per request, `params.simulate` may ask for { latency_ms, hold_s, fail: "throw" | "error" | "hang", fail_attempts }:
// hold_s holds the job that many seconds (long jobs; with ACCEPT_MANY = "1" no call stays open meanwhile).
// "hang" answers nothing for HANG_MS (longer than any deadline a test or a demo template sets), then
// throws: a call that never ends would stay open in the runtime for good (under vitest, past its file).

/** How long a simulated hang lasts. */
const HANG_MS = 60_000;

/** A sleep: one timer each. */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Sleeps for one invocation in which sleeps that end at the same time share one timer. The runtime
 * fires at most one of an invocation's timers per turn of its event loop, so the jobs of one `runMany`
 * call (below), each with a timer of its own, would end one turn apart instead of together.
 */
function sharedSleep() {
  const wakeAt = new Map();
  return (ms) => {
    const at = Date.now() + ms;
    let wake = wakeAt.get(at);
    if (!wake) {
      wake = sleep(ms).then(() => wakeAt.delete(at));
      wakeAt.set(at, wake);
    }
    return wake;
  };
}

const INSPECT = Symbol.for("nodejs.util.inspect.custom");
function asJson() {
  return JSON.stringify(this);
}

/**
 * One log line per job, as an object (wrangler tail shows its fields), printed as one line of JSON
 * where it is printed as text (as the Resource Manager's src/log.ts does). JOB_LOG "off" silences it
 * (the test suite's copies of these workers).
 */
export function logJob(job, transport, outcome, env) {
  if (env && env.JOB_LOG === "off") return;
  const line = {
    level: outcome === "ok" ? "info" : "warn", msg: "job", time: Date.now(), template: job.template ?? null, request_id: job.request_id ?? null,
    attempt: job.attempt ?? null, transport, outcome, trace_id: typeof job.trace_id === "string" ? job.trace_id : null,
  };
  Object.defineProperty(line, INSPECT, { value: asJson });
  Object.defineProperty(line, "toString", { value: asJson });
  console.log(line);
}

/** Wait the configured latency, then fail if asked. Resolves to null, or to the error to answer with. */
export async function simulate(job, env, wait = sleep) {
  const sim = (job.params && job.params.simulate) || {};
  const latency = sim.hold_s !== undefined ? Number(sim.hold_s) * 1000 : Number(sim.latency_ms ?? env.LATENCY_MS ?? 0);
  if (latency > 0) await wait(latency);
  const failAttempts = sim.fail_attempts === undefined ? Infinity : Number(sim.fail_attempts);
  const failing = sim.fail && job.attempt <= failAttempts;
  const rate = Number(env.FAILURE_RATE ?? 0);
  if (failing && sim.fail === "hang") {
    await wait(HANG_MS);
    throw new Error(`simulated hang in ${job.template} (attempt ${job.attempt}): no answer for ${HANG_MS} ms`);
  }
  if ((failing && sim.fail === "throw") || (!sim.fail && rate > 0 && Math.random() < rate)) {
    throw new Error(`simulated failure in ${job.template} (attempt ${job.attempt})`);
  }
  if (failing && sim.fail === "error") return { code: "simulated", message: "simulated upstream error" };
  return null;
}

/**
 * Run a job, or a batch (`{ jobs: [...] }`, one invocation: the jobs' simulated latencies overlap), with
 * `work(job)` computing each job's `{ result, usage }`; each result says which transport carried it.
 * Resolves to the protocol's answer, or to `{ failure }` when the simulation asked for an error answer.
 */
async function perform(job, env, work, transport, wait = sleep) {
  const jobs = Array.isArray(job.jobs) ? job.jobs : [job];
  let failures;
  try {
    failures = await Promise.all(jobs.map((j) => simulate(j, env, wait)));
  } catch (err) {
    for (const j of jobs) logJob(j, transport, "thrown", env);
    throw err;
  }
  jobs.forEach((j, i) => logJob(j, transport, failures[i] ? failures[i].code : "ok", env));
  const failure = failures.find(Boolean);
  if (failure) return { failure };
  const answers = jobs.map((j) => {
    const answer = work(j);
    return { ...answer, result: { ...answer.result, transport } };
  });
  return Array.isArray(job.jobs) ? { results: answers } : answers[0];
}

function badRequest(message) {
  return Response.json({ error: { code: "bad_request", message } }, { status: 400 });
}

/** HTTP: `POST /run` with the job as JSON; a failure is a 500 with the error envelope. */
export function httpHandler(work) {
  return async (request, env) => {
    if (request.method !== "POST") return badRequest("POST a job to /run");
    let job;
    try {
      job = await request.json();
    } catch {
      return badRequest("the body must be JSON");
    }
    // The trace id comes in the job; X-Trace-Id carries it too, for workers that read headers only
    // (one request's: a batch's jobs each carry their own).
    const traceId = request.headers.get("x-trace-id");
    if (traceId && job && typeof job === "object" && !Array.isArray(job.jobs) && job.trace_id === undefined) job.trace_id = traceId;
    const answer = await perform(job, env, work, "http");
    if (answer.failure) return Response.json({ error: answer.failure }, { status: 500 });
    return Response.json(answer);
  };
}

/** RPC: `run(job)` resolves to the answer; a failure is a thrown error (the scheduler's failed attempt). */
export async function runJob(job, env, work) {
  const answer = await perform(job, env, work, "rpc");
  if (answer.failure) throw new Error(`${answer.failure.code}: ${answer.failure.message}`);
  return answer;
}

/**
 * RPC `runMany(jobs, report)`: independent jobs in one call (the scheduler sends the requests of one
 * template it launches together). Each job runs on its own, and its answer is reported as soon as it
 * ends by calling back `report(answers)`: `{ i: <index in jobs>, result, usage }`, or `{ i, error }` for
 * a job that failed; answers of jobs that end in the same turn go in one call. Resolves when every job
 * has ended; a job that never ends is never reported (the scheduler times it out).
 */
export async function runMany(jobs, env, work, report) {
  const wait = sharedSleep();
  let wave = [];
  let sending = null;
  const answer = (a) => {
    wave.push(a);
    sending ??= Promise.resolve().then(() => {
      const answers = wave;
      wave = [];
      sending = null;
      return report(answers);
    });
    return sending;
  };
  await Promise.all((Array.isArray(jobs) ? jobs : []).map((job, i) => perform(job, env, work, "rpc-many", wait).then(
    (a) => answer(a.failure ? { i, error: `${a.failure.code}: ${a.failure.message}` } : { i, ...a }),
    (err) => answer({ i, error: err instanceof Error ? err.message : String(err) }),
  )));
}

/**
 * RPC `runMany` that holds no call open (the worker var ACCEPT_MANY = "1"): answer `{ accepted: n }` at
 * once, run the jobs after the call under `waitUntil`, and report each answer through `report` as
 * runMany does. The stub is kept with `dup()` (a stub passed to an RPC call is released when the call
 * returns) and released when every job has been reported. The scheduler then holds no call open for
 * held jobs (docs/kam.md: the worker protocol).
 */
export function acceptMany(jobs, env, work, report, ctx) {
  const keep = typeof report.dup === "function" ? report.dup() : report;
  ctx.waitUntil(runMany(jobs, env, work, keep).finally(() => keep[Symbol.dispose]?.()));
  return { accepted: Array.isArray(jobs) ? jobs.length : 0 };
}
