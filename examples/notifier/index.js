// Sample downstream worker: "sends" e-mail and SMS, one unit per recipient, and reports what it used.
// Simulated: no network. Reached by the Resource Manager through the NOTIFIER service binding.
import { readJob, simulate } from "../shared-sim.js";

function send(job) {
  const recipients = Array.isArray(job.params?.to) ? job.params.to : [job.params?.to ?? "nobody@example.com"];
  const usage = {};
  for (const [pool, allotted] of Object.entries(job.allotted ?? {})) usage[pool] = Math.min(allotted, recipients.length);
  return { result: { delivered: recipients.length, channel: job.template, request_id: job.request_id }, usage };
}

export default {
  async fetch(request, env) {
    const { job, error } = await readJob(request);
    if (error) return error;
    // A batch ({ jobs: [...] }) is one invocation: the jobs' simulated latencies overlap.
    const jobs = Array.isArray(job.jobs) ? job.jobs : [job];
    const failure = (await Promise.all(jobs.map((j) => simulate(j, env)))).find(Boolean);
    if (failure) return failure;
    if (Array.isArray(job.jobs)) return Response.json({ results: jobs.map(send) });
    return Response.json(send(job));
  },
};
