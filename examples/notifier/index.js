// Sample downstream worker: "sends" e-mail and SMS, one unit per recipient, and reports what it used.
// Simulated: no network. Reached by the Resource Manager through the NOTIFIER service binding. It
// speaks HTTP only (`POST /run`), as a worker that predates the RPC protocol would.
import { httpHandler } from "../shared-sim.js";

function send(job) {
  const recipients = Array.isArray(job.params?.to) ? job.params.to : [job.params?.to ?? "nobody@example.com"];
  const usage = {};
  for (const [pool, allotted] of Object.entries(job.allotted ?? {})) usage[pool] = Math.min(allotted, recipients.length);
  return { result: { delivered: recipients.length, channel: job.template, request_id: job.request_id }, usage };
}

export default { fetch: httpHandler(send) };
