import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { call, expectError, KEYS, sleep } from "./helpers";

describe("smoke", () => {
  it("executes content-generate end to end through the service binding", async () => {
    const r = await call("POST", "/api/execute", { token: KEYS.acme, json: { template: "content-generate", params: { prompt: "hi", tokens_used: 1500 } } });
    console.warn(JSON.stringify(r.body));
    expect(r.status).toBe(200);
  });
  it("kam reaches the RPC entrypoint", async () => {
    const res = await env.KAM.fetch("https://kam/", { method: "POST", body: JSON.stringify({ method: "estimate", args: [{ template: "content-generate" }] }) });
    const body = await res.json();
    console.warn(JSON.stringify(body));
  });
});
