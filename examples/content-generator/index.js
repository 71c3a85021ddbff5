// Sample downstream worker: "generates content", spending LLM tokens, and reports what it used.
// Simulated: no network. Reached by the Resource Manager through the CONTENT_WORKER service binding.
import { readJob, simulate } from "../shared-sim.js";

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

export default {
  async fetch(request, env) {
    const { job, error } = await readJob(request);
    if (error) return error;
    // A batch ({ jobs: [...] }) is one invocation: the jobs' simulated latencies overlap.
    const jobs = Array.isArray(job.jobs) ? job.jobs : [job];
    const failure = (await Promise.all(jobs.map((j) => simulate(j, env)))).find(Boolean);
    if (failure) return failure;
    if (Array.isArray(job.jobs)) return Response.json({ results: jobs.map(generate) });
    return Response.json(generate(job));
  },
};
