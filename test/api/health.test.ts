import { describe, expect, it } from "vitest";
import { call, KEYS } from "../support/helpers";

describe("liveness and health", () => {
  it("GET / answers without credentials and returns a trace id in header and body", async () => {
    const r = await call("GET", "/");
    expect(r.status).toBe(200);
    expect(r.body.status).toBe("ok");
    expect(r.body.trace_id).toBe(r.headers.get("x-trace-id"));
  });

  it("echoes a well-formed caller trace id", async () => {
    const r = await call("GET", "/", { headers: { "x-trace-id": "abc-123" } });
    expect(r.headers.get("x-trace-id")).toBe("abc-123");
    expect(r.body.trace_id).toBe("abc-123");
  });

  it("GET /health reports D1 and the pool object up", async () => {
    const r = await call("GET", "/health");
    expect(r.status).toBe(200);
    expect(r.body.dependencies.d1.status).toBe("ok");
    expect(r.body.dependencies.pool_object.status).toBe("ok");
  });

  it("GET /status lists the seeded pools with capacity and utilization", async () => {
    const r = await call("GET", "/status", { token: KEYS.acme });
    expect(r.status).toBe(200);
    const gpt4 = r.body.pools.find((p: any) => p.pool === "openai-gpt4");
    expect(gpt4).toMatchObject({ capacity: 10000, refill_per_sec: 166, utilization: 0, level: 10000 });
    expect(r.body.counts.pools).toBe(6);
  });
});
