import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { makePool } from "../support/helpers";

/** Drive examples/kam-caller, a separate worker calling the RPC entrypoint through its RM binding. */
async function caller(method: string, path: string, json?: unknown, headers: Record<string, string> = {}) {
  const res = await env.KAM_CALLER.fetch(`https://kam-caller${path}`, { method, body: json === undefined ? undefined : JSON.stringify(json), headers });
  return { status: res.status, body: (await res.json()) as any };
}

describe("examples/kam-caller: a worker calling the service through a binding", () => {
  it("spends; when the pool is short it waits the retry_after_ms the refusal names and succeeds", async () => {
    const pool = await makePool({ capacity: 2, refillPerSec: 4 });
    expect(await caller("POST", "/spend", { client_id: "acme", pool: pool.id, amount: 2 })).toMatchObject({ status: 200, body: { ok: true, remaining: 0, waited_ms: 0 } });
    const started = Date.now();
    const again = await caller("POST", "/spend", { client_id: "acme", pool: pool.id, amount: 1 }, { "x-trace-id": "caller-trace-7" });
    expect(again).toMatchObject({ status: 200, body: { ok: true, units: 1, trace_id: "caller-trace-7" } });
    expect(again.body.waited_ms).toBeGreaterThan(0);
    expect(again.body.waited_ms).toBeLessThanOrEqual(250);
    expect(Date.now() - started).toBeGreaterThanOrEqual(again.body.waited_ms);
  });

  it("gives up past MAX_WAIT_MS and answers the refusal with its code and details", async () => {
    const pool = await makePool({ capacity: 1, refillPerSec: 0 });
    await caller("POST", "/spend", { client_id: "acme", pool: pool.id, amount: 1 });
    const refused = await caller("POST", "/spend", { client_id: "acme", pool: pool.id, amount: 1 });
    expect(refused).toMatchObject({ status: 409, body: { ok: false, waited_ms: 0, error: { code: "rate_limited", details: { pool: pool.id, retry_after_ms: null } }, retry_after_s: 3600 } });
  });

  it("executes a template and reads the request back", async () => {
    const ran = await caller("POST", "/generate", { client_id: "globex", template: "notify-email", params: { to: ["a@x"] } });
    expect(ran).toMatchObject({ status: 200, body: { ok: true, request: { client_id: "globex", template: "notify-email" } } });
    const read = await caller("GET", `/jobs/${ran.body.request.id}?client_id=globex`);
    expect(read).toMatchObject({ status: 200, body: { status: ran.body.request.status, request: { id: ran.body.request.id } } });
    expect(await caller("GET", `/jobs/${ran.body.request.id}?client_id=acme`)).toMatchObject({ status: 409, body: { ok: false, error: { code: "request_not_found" } } });
  });
});
