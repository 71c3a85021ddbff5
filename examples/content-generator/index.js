// Sample downstream worker: "generates content", spending LLM tokens, and reports what it used.
// Simulated: no network. Reached by the Resource Manager through the CONTENT_WORKER service binding,
// over RPC (`run`, and `runMany` for several requests launched together, which the scheduler prefers)
// or HTTP (`POST /run`): all answer the same.
import { WorkerEntrypoint } from "cloudflare:workers";
import { acceptMany, httpHandler, runJob, runMany } from "../shared-sim.js";

function generate(job) {
  const prompt = String(job.params?.prompt ?? "");
  const usage = {};
  for (const [pool, allotted] of Object.entries(job.allotted ?? {})) {
    // Use what the job asks (params.tokens_used), else about three quarters of what was reserved.
    const wanted = job.params?.tokens_used ?? Math.ceil(allotted * 0.75);
    usage[pool] = Math.max(0, Math.min(allotted, Number(wanted)));
  }
  return { result: { text: `Generated ${job.template} for: ${prompt.slice(0, 200)}`, request_id: job.request_id }, usage };
}

const fetchJob = httpHandler(generate);

export default class ContentGenerator extends WorkerEntrypoint {
  fetch(request) {
    return fetchJob(request, this.env);
  }

  run(job) {
    return runJob(job, this.env, generate);
  }

  runMany(jobs, report) {
    // ACCEPT_MANY = "1": answer at once and report each job later (no call held open for long jobs).
    if (this.env.ACCEPT_MANY === "1") return acceptMany(jobs, this.env, generate, report, this.ctx);
    return runMany(jobs, this.env, generate, report);
  }
}
