import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app";
import { ADMIN } from "../support/helpers";

const app = createApp();

/** Run one request through the app with REQUEST_LOG set, returning the request log lines it wrote. */
async function requestLines(requestLog: string, path: string, token?: string): Promise<Array<Record<string, unknown>>> {
  const spy = vi.spyOn(console, "log");
  const ctx = createExecutionContext();
  const res = await app.fetch(new Request(`https://rm.test${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} }), { ...env, REQUEST_LOG: requestLog }, ctx);
  await res.text();
  await waitOnExecutionContext(ctx);
  const lines = spy.mock.calls.map((args) => JSON.parse(String(args[0])) as Record<string, unknown>).filter((l) => l.msg === "request");
  spy.mockRestore();
  return lines;
}

describe("per-request log line", () => {
  afterEach(() => vi.restoreAllMocks());

  it("REQUEST_LOG=all logs every request once, with trace id, status and duration, and no credential", async () => {
    const lines = await requestLines("all", "/admin/scheduler/status", ADMIN);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: "info", method: "GET", path: "/admin/scheduler/status", status: 200, principal: "admin" });
    expect(typeof lines[0]!.trace_id).toBe("string");
    expect(typeof lines[0]!.duration_ms).toBe("number");
    expect(JSON.stringify(lines)).not.toContain(ADMIN);
  });

  it("REQUEST_LOG=errors skips a fast success and still logs a failure", async () => {
    expect(await requestLines("errors", "/")).toHaveLength(0);
    const failed = await requestLines("errors", "/admin/scheduler/status");
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ status: 401, path: "/admin/scheduler/status" });
  });
});
