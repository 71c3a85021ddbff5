import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app";
import { call, KEYS, makePool, makeTemplate, settled } from "../support/helpers";

const app = createApp();
type Line = Record<string, any>;

/** Every log line written from now on (objects, as src/log.ts writes them). */
function captureLines(): Line[] {
  const lines: Line[] = [];
  const log = console.log.bind(console);
  vi.spyOn(console, "log").mockImplementation((...args: unknown[]) => {
    const l = args[0];
    if (l && typeof l === "object") lines.push({ ...(l as Line) });
    else if (typeof l === "string" && l.startsWith("{")) lines.push(JSON.parse(l) as Line);
    else log(...args);
  });
  return lines;
}

/** A call through the app with REQUEST_LOG=all (the default logs a fast success only as one of a sample). */
async function post(path: string, json: unknown, traceId: string): Promise<any> {
  const ctx = createExecutionContext();
  const res = await app.fetch(new Request(`https://rm.test${path}`, {
    method: "POST", body: JSON.stringify(json),
    headers: { authorization: `Bearer ${KEYS.acme}`, "content-type": "application/json", "x-trace-id": traceId },
  }), { ...env, REQUEST_LOG: "all" }, ctx);
  const body = await res.json();
  await waitOnExecutionContext(ctx);
  return { status: res.status, body };
}

/** The lines naming a request: directly, or in a batch line's `requests`. */
function about(lines: Line[], id: string): Line[] {
  return lines.filter((l) => l.request_id === id || (Array.isArray(l.requests) && l.requests.some((r: Line) => r.request_id === id)));
}

/** The trace id a line gives a request. */
function traceOn(line: Line, id: string): unknown {
  return line.request_id === id ? line.trace_id : line.requests.find((r: Line) => r.request_id === id).trace_id;
}

describe("a request's trace id through the scheduler", () => {
  afterEach(() => vi.restoreAllMocks());

  it("is on its enqueue, dispatch, worker and settlement lines, in its job and in X-Trace-Id to an HTTP worker", async () => {
    const pool = await makePool({ capacity: 100 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }], { binding: "TRACE_WORKER" });
    const lines = captureLines();
    const r = await post("/api/queue/enqueue", { template, queue: "fast" }, "trace-e2e-enqueue");
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    expect(r.body.trace_id).toBe("trace-e2e-enqueue");
    const id = r.body.request.id as string;
    const done = await settled(id, ["completed"]);

    const enqueueLine = lines.find((l) => l.msg === "request" && l.path === "/api/queue/enqueue");
    expect(enqueueLine).toMatchObject({ method: "POST", status: 202, trace_id: "trace-e2e-enqueue" });
    const mine = about(lines, id);
    expect(mine.map((l) => l.msg)).toEqual(["requests_dispatched", "requests_settled"]);
    for (const l of mine) expect(traceOn(l, id)).toBe("trace-e2e-enqueue");
    expect(mine[0]!.requests.find((x: Line) => x.request_id === id)).toEqual({ request_id: id, trace_id: "trace-e2e-enqueue", attempt: 1 });
    expect(mine[1]!.requests.find((x: Line) => x.request_id === id)).toEqual({ request_id: id, trace_id: "trace-e2e-enqueue", outcome: "completed" });
    // The worker's side (test/support/fixtures/trace-worker.js, the sample workers' HTTP handler): the job and
    // the header carried it, and its own job line has it.
    expect(done.result).toMatchObject({ job_trace_id: "trace-e2e-enqueue", header_trace_id: "trace-e2e-enqueue" });
    expect(done.result.lines).toEqual([expect.objectContaining({ msg: "job", request_id: id, attempt: 1, transport: "http", outcome: "ok", trace_id: "trace-e2e-enqueue" })]);
  });

  it("an execute's trace id reaches its worker; retries, failure and cancel lines carry the enqueue's", async () => {
    const pool = await makePool({ capacity: 100 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }], { binding: "TRACE_WORKER" });
    const lines = captureLines();
    const ran = await post("/api/execute", { template }, "trace-e2e-execute");
    expect(ran.status, JSON.stringify(ran.body)).toBe(200);
    expect(ran.body.request.result).toMatchObject({ job_trace_id: "trace-e2e-execute", header_trace_id: "trace-e2e-execute" });
    expect(about(lines, ran.body.request.id).map((l) => [l.msg, traceOn(l, ran.body.request.id)])).toEqual([
      ["requests_dispatched", "trace-e2e-execute"], ["requests_settled", "trace-e2e-execute"],
    ]);

    // Fails twice (the worker answers 500): one retry after 1 s, then failed.
    const failing = await post("/api/queue/enqueue", { template, queue: "fast", max_attempts: 2, params: { simulate: { fail: "error" } } }, "trace-e2e-fail");
    const failId = failing.body.request.id as string;
    expect((await settled(failId, ["failed"], 8000)).attempts).toBe(2);
    expect(about(lines, failId).map((l) => [l.msg, traceOn(l, failId)])).toEqual([
      ["requests_dispatched", "trace-e2e-fail"], ["dispatch_retry", "trace-e2e-fail"], ["requests_settled", "trace-e2e-fail"],
      ["requests_dispatched", "trace-e2e-fail"], ["request_failed", "trace-e2e-fail"], ["requests_settled", "trace-e2e-fail"],
    ]);

    // Cancelled by a later call with a trace id of its own: the line names the request's.
    const held = await post("/api/queue/enqueue", { template, queue: "normal", not_before: Date.now() + 3_600_000 }, "trace-e2e-cancel");
    const heldId = held.body.request.id as string;
    const cancel = await call("DELETE", `/api/queue/${heldId}`, { token: KEYS.acme, headers: { "x-trace-id": "trace-of-the-delete" } });
    expect(cancel.status).toBe(200);
    expect(about(lines, heldId)).toEqual([expect.objectContaining({ msg: "request_cancelled", request_id: heldId, was: "queued", trace_id: "trace-e2e-cancel" })]);
  });
});
