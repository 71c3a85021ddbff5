// Simulation helpers shared by the sample workers: latency and faults, no network, and the worker
// protocol on both transports (RPC `run(job)` and HTTP `POST /run`).
// Per request, `params.simulate` may ask for { latency_ms, fail: "throw" | "error" | "hang", fail_attempts }.

/** Wait the configured latency, then fail if asked. Resolves to null, or to the error to answer with. */
export async function simulate(job, env) {
  const sim = (job.params && job.params.simulate) || {};
  const latency = Number(sim.latency_ms ?? env.LATENCY_MS ?? 0);
  if (latency > 0) await new Promise((r) => setTimeout(r, latency));
  const failAttempts = sim.fail_attempts === undefined ? Infinity : Number(sim.fail_attempts);
  const failing = sim.fail && job.attempt <= failAttempts;
  const rate = Number(env.FAILURE_RATE ?? 0);
  if (failing && sim.fail === "hang") await new Promise(() => {});
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
async function perform(job, env, work, transport) {
  const jobs = Array.isArray(job.jobs) ? job.jobs : [job];
  const failure = (await Promise.all(jobs.map((j) => simulate(j, env)))).find(Boolean);
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
