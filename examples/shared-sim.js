// Simulation helpers shared by the sample workers: latency and faults, no network.
// Per request, `params.simulate` may ask for { latency_ms, fail: "throw" | "error" | "hang", fail_attempts }.

/** Wait the configured latency, then fail if asked; resolves when the work should go on. */
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
  if (failing && sim.fail === "error") {
    return Response.json({ error: { code: "simulated", message: "simulated upstream error" } }, { status: 500 });
  }
  return null;
}

export function badRequest(message) {
  return Response.json({ error: { code: "bad_request", message } }, { status: 400 });
}

/** Read a job, or a batch of jobs, from the Resource Manager's POST /run. */
export async function readJob(request) {
  if (request.method !== "POST") return { error: badRequest("POST a job to /run") };
  try {
    return { job: await request.json() };
  } catch {
    return { error: badRequest("the body must be JSON") };
  }
}
