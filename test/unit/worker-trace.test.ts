import { describe, expect, it, vi } from "vitest";
import { httpHandler, runJob, runMany } from "../../examples/shared-sim.js";

const work = (job: { template?: string }) => ({ result: { done: job.template ?? null }, usage: {} });

/** The sample workers' job lines written while `fn` runs. */
async function jobLines(fn: () => Promise<unknown>): Promise<Array<Record<string, unknown>>> {
  const spy = vi.spyOn(console, "log");
  try {
    await fn();
    return spy.mock.calls.map(([l]) => l as Record<string, unknown>).filter((l) => typeof l === "object" && l?.msg === "job");
  } finally {
    spy.mockRestore();
  }
}

describe("the sample workers log each job with its trace id", () => {
  it("RPC run(job): the job's trace_id; a failed job's line too", async () => {
    const lines = await jobLines(async () => {
      await runJob({ request_id: "req_1", template: "t", attempt: 1, trace_id: "trace-rpc" }, {}, work);
      await expect(runJob({ request_id: "req_2", template: "t", attempt: 2, trace_id: "trace-fail", params: { simulate: { fail: "error" } } }, {}, work)).rejects.toThrow("simulated");
    });
    expect(lines).toEqual([
      expect.objectContaining({ level: "info", request_id: "req_1", attempt: 1, transport: "rpc", outcome: "ok", trace_id: "trace-rpc" }),
      expect.objectContaining({ level: "warn", request_id: "req_2", attempt: 2, transport: "rpc", outcome: "simulated", trace_id: "trace-fail" }),
    ]);
    expect(String(lines[0])).toBe(JSON.stringify(lines[0]));
  });

  it("HTTP POST /run: X-Trace-Id when the job carries none; the job's own wins", async () => {
    const handler = httpHandler(work);
    const post = (job: unknown, traceId?: string) => handler(new Request("https://w/run", { method: "POST", body: JSON.stringify(job), headers: traceId ? { "x-trace-id": traceId } : {} }), {}).then((r) => r.json());
    const lines = await jobLines(async () => {
      await post({ request_id: "req_3", template: "t", attempt: 1 }, "trace-header");
      await post({ request_id: "req_4", template: "t", attempt: 1, trace_id: "trace-job" }, "trace-header");
      await post({ request_id: "req_5", template: "t", attempt: 1 });
    });
    expect(lines.map((l) => [l.request_id, l.transport, l.trace_id])).toEqual([["req_3", "http", "trace-header"], ["req_4", "http", "trace-job"], ["req_5", "http", null]]);
  });

  it("runMany: each job's own trace id; JOB_LOG off silences the lines", async () => {
    const jobs = [{ request_id: "req_6", template: "t", attempt: 1, trace_id: "a" }, { request_id: "req_7", template: "t", attempt: 1, trace_id: "b" }];
    expect((await jobLines(() => runMany(jobs, {}, work, () => undefined))).map((l) => [l.request_id, l.transport, l.trace_id])).toEqual([["req_6", "rpc-many", "a"], ["req_7", "rpc-many", "b"]]);
    expect(await jobLines(() => runMany(jobs, { JOB_LOG: "off" }, work, () => undefined))).toEqual([]);
  });
});
