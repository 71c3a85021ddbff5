import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app";
import { ADMIN, INTERNAL, makePool } from "../support/helpers";

const app = createApp();

/** Run requests through the app with these vars, returning the request log lines they wrote and their statuses. */
async function run(vars: Record<string, string>, requests: Array<() => Request>): Promise<{ lines: Array<Record<string, unknown>>; statuses: number[] }> {
  const spy = vi.spyOn(console, "log");
  const statuses: number[] = [];
  for (const make of requests) {
    const ctx = createExecutionContext();
    const res = await app.fetch(make(), { ...env, ...vars }, ctx);
    await res.text();
    await waitOnExecutionContext(ctx);
    statuses.push(res.status);
  }
  const lines = spy.mock.calls.map((args) => JSON.parse(String(args[0])) as Record<string, unknown>).filter((l) => l.msg === "request");
  spy.mockRestore();
  return { lines, statuses };
}

const liveness = () => new Request("https://rm.test/");
const unauthorized = () => new Request("https://rm.test/admin/scheduler/status");
const times = <T>(n: number, f: T): T[] => Array.from({ length: n }, () => f);

describe("request log at the hot path's rate (REQUEST_LOG=errors, the default)", () => {
  afterEach(() => vi.restoreAllMocks());

  it("the shipped default is errors with one in 100 of the rest", () => {
    expect(env.REQUEST_LOG).toBe("errors");
    expect(env.REQUEST_LOG_SAMPLE).toBe("100");
  });

  it("one in REQUEST_LOG_SAMPLE of the requests that need no line gets one, marked as sampled; failures always do", async () => {
    const { lines, statuses } = await run({ REQUEST_LOG: "errors", REQUEST_LOG_SAMPLE: "3" }, [...times(9, liveness), unauthorized]);
    expect(statuses).toEqual([...Array(9).fill(200), 401]);
    const sampled = lines.filter((l) => l.status === 200);
    expect(sampled).toHaveLength(3);
    for (const l of sampled) expect(l).toMatchObject({ path: "/", sampled_one_in: 3 });
    const failed = lines.filter((l) => l.status === 401);
    expect(failed).toHaveLength(1);
    expect(failed[0]!.sampled_one_in).toBeUndefined();
  });

  it("a 429 is a limiter's ordinary answer: sampled like a success, not logged each time; 0 samples nothing", async () => {
    // Free, so no money lease is taken (its renewal timer would hold each request's waitUntil open for seconds).
    const pool = await makePool({ capacity: 1, leases: "off", costPerUnitNano: 0 });
    const spend = () => new Request("https://rm.test/internal/consume", {
      method: "POST", headers: { authorization: `Bearer ${INTERNAL}`, "content-type": "application/json" },
      body: JSON.stringify({ client_id: "acme", pool: pool.id, amount: 1 }),
    });
    const { lines, statuses } = await run({ REQUEST_LOG: "errors", REQUEST_LOG_SAMPLE: "0" }, times(6, spend));
    expect(statuses).toEqual([200, 429, 429, 429, 429, 429]);
    expect(lines).toHaveLength(0);
    const all = await run({ REQUEST_LOG: "all", REQUEST_LOG_SAMPLE: "0" }, [spend, () => new Request("https://rm.test/", { headers: { authorization: `Bearer ${ADMIN}` } })]);
    expect(all.lines.map((l) => l.status)).toEqual([429, 200]);
    expect(all.lines[0]!.sampled_one_in).toBeUndefined();
  });
});
