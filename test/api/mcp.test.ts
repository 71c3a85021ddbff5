import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { ADMIN, call, KEYS } from "../support/helpers";

/** A raw POST to /mcp (outside the OpenAPI contract check: MCP is JSON-RPC, not a REST operation). */
async function post(token: string | null, method = "POST"): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = { "content-type": "application/json", accept: "application/json, text/event-stream" };
  if (token) headers.authorization = `Bearer ${token}`;
  const body = method === "POST" ? JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }) : undefined;
  const res = await exports.default.fetch(new Request("https://rm.test/mcp", { method, headers, body }));
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** The SDK's own client over Streamable HTTP, its requests served by the worker under test. */
async function connect(token: string | null, traceId?: string): Promise<Client> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (traceId) headers["x-trace-id"] = traceId;
  const transport = new StreamableHTTPClientTransport(new URL("https://rm.test/mcp"), {
    requestInit: { headers },
    fetch: (url, init) => exports.default.fetch(new Request(url, init)),
  });
  const client = new Client({ name: "rm-test", version: "1.0.0" });
  await client.connect(transport);
  return client;
}

/** A tool's answer: its structured body, and whether it is a tool error. */
async function tool(client: Client, name: string, args: Record<string, unknown> = {}): Promise<{ isError: boolean; body: any }> {
  const r = await client.callTool({ name, arguments: args });
  const text = (r.content as Array<{ type: string; text: string }>)[0]!.text;
  expect(JSON.parse(text)).toEqual(r.structuredContent);
  return { isError: r.isError === true, body: r.structuredContent };
}

const uid = (p: string) => `${p}-${crypto.randomUUID().slice(0, 8)}`;

describe("MCP at /mcp", () => {
  it("lists the six allocation tools and execute, queue_status, usage, each with a description and an input schema", async () => {
    const client = await connect(KEYS.acme);
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name)).toEqual([
      "request_resources", "release_resources", "get_capacity", "get_allocation", "list_allocations", "cleanup_expired_allocations",
      "execute", "queue_status", "usage",
    ]);
    for (const t of tools) {
      expect(t.description!.length, t.name).toBeGreaterThan(40);
      expect(t.inputSchema.type).toBe("object");
    }
    const request = tools.find((t) => t.name === "request_resources")!;
    expect(request.inputSchema.required).toEqual(["job_id", "workers"]);
    expect(Object.keys(request.inputSchema.properties!)).toEqual(["client_id", "job_id", "parent_id", "depth", "workers", "cpu_millicores", "memory_mb", "priority", "ttl_ms"]);
    expect(tools.find((t) => t.name === "get_allocation")!.inputSchema).toMatchObject({ required: ["allocation_id"], additionalProperties: false });
    await client.close();
  });

  it("calls each allocation tool: request, get, list, capacity, release; the admin token cleans up", async () => {
    const client = await connect(KEYS.acme);
    const job = uid("mcp-job");
    const made = await tool(client, "request_resources", { job_id: job, workers: 2, ttl_ms: 60_000 });
    expect(made).toMatchObject({ isError: false, body: { allocation: { client_id: "acme", job_id: job, workers: 2, cpu_millicores: 1000, state: "active" }, trace_id: expect.any(String) } });
    const id = made.body.allocation.id;
    const child = await tool(client, "request_resources", { job_id: `${job}-sub`, parent_id: id, workers: 1 });
    expect(child.body.allocation).toMatchObject({ parent_id: id, depth: 1 });

    expect(await tool(client, "get_allocation", { allocation_id: id })).toMatchObject({ isError: false, body: { allocation: { id, state: "active" } } });
    const listed = await tool(client, "list_allocations", { job_id: job });
    expect(listed.body).toMatchObject({ allocations: [{ id }], next_cursor: null });
    const capacity = await tool(client, "get_capacity");
    expect(capacity.body.workers).toMatchObject({ total: expect.any(Number), allocated: expect.any(Number) });
    expect(capacity.body.workers.allocated).toBeGreaterThanOrEqual(3);

    const released = await tool(client, "release_resources", { allocation_id: id });
    expect(released).toMatchObject({ isError: false, body: { allocation: { id, state: "released" }, released: [id, child.body.allocation.id] } });
    expect(await tool(client, "release_resources", { allocation_id: id })).toMatchObject({ isError: true, body: { error: { code: "allocation_state" } } });

    // Cleanup is an operator's: a key is refused with REST's code, the admin token runs it.
    expect(await tool(client, "cleanup_expired_allocations")).toMatchObject({ isError: true, body: { error: { code: "forbidden" } } });
    await client.close();
    const operator = await connect(ADMIN);
    expect(await tool(operator, "cleanup_expired_allocations")).toEqual({ isError: false, body: { expired: expect.any(Number), trace_id: expect.any(String) } });
    await operator.close();
  });

  it("execute, queue_status and usage", async () => {
    const client = await connect(KEYS.globex, "mcp-trace-1");
    const ran = await tool(client, "execute", { template: "notify-email", params: { to: ["a@x"] } });
    expect(ran).toMatchObject({ isError: false, body: { request: { client_id: "globex", template: "notify-email" }, trace_id: "mcp-trace-1" } });
    expect((await tool(client, "queue_status")).body).toMatchObject({ queues: expect.any(Array), scheduler: { running: expect.any(Boolean) } });
    expect((await tool(client, "usage")).body).toMatchObject({ client_id: "globex", month: expect.any(String), spent_nano: expect.any(Number) });
    expect(await tool(client, "usage", { client_id: "acme" })).toMatchObject({ isError: true, body: { error: { code: "forbidden" } } });
    await client.close();
  });

  it("bad arguments are tool errors with REST's validation_failed naming the field; nothing is allocated", async () => {
    const client = await connect(KEYS.initech);
    const before = (await tool(client, "list_allocations")).body.allocations.length;
    expect(await tool(client, "request_resources", { job_id: "j", workers: 0 })).toMatchObject({
      isError: true, body: { error: { code: "validation_failed", message: "invalid arguments", details: { fields: [{ path: "arguments.workers" }] } } },
    });
    expect(await tool(client, "request_resources", { job_id: "j", workers: 1, colour: "red" })).toMatchObject({ isError: true, body: { error: { code: "validation_failed" } } });
    expect(await tool(client, "get_allocation", { allocation_id: "alc_nope" })).toMatchObject({ isError: true, body: { error: { code: "validation_failed", details: { fields: [{ path: "arguments.allocation_id" }] } } } });
    expect(await tool(client, "get_allocation", { allocation_id: `alc_${"0".repeat(32)}` })).toMatchObject({ isError: true, body: { error: { code: "allocation_not_found" } } });
    expect(await tool(client, "list_allocations", { limit: 0 })).toMatchObject({ isError: true, body: { error: { code: "validation_failed" } } });
    expect((await tool(client, "list_allocations")).body.allocations).toHaveLength(before);
    await expect(client.callTool({ name: "no_such_tool", arguments: {} })).rejects.toThrow(/no tool no_such_tool/);
    await client.close();
  });

  it("a key without the allocations scope gets forbidden from every allocation tool; no or a bad credential is 401", async () => {
    const client = await connect(KEYS.hooliReadOnly);
    for (const [name, args] of [["request_resources", { job_id: "j", workers: 1 }], ["get_capacity", {}], ["list_allocations", {}], ["release_resources", { allocation_id: `alc_${"1".repeat(32)}` }]] as const) {
      expect(await tool(client, name, args), name).toMatchObject({ isError: true, body: { error: { code: "forbidden", details: { required_scope: "allocations" } } } });
    }
    expect((await tool(client, "usage")).isError).toBe(false); // usage:read it has
    await client.close();

    await expect(connect(null)).rejects.toThrow();
    expect(await post(null)).toEqual({ status: 401, body: { error: { code: "unauthorized", message: "missing credential: send Authorization: Bearer <API key>" }, trace_id: expect.any(String) } });
    expect(await post("rmk_not_a_key")).toMatchObject({ status: 401, body: { error: { code: "unauthorized" } } });
    expect(await post("test-metrics-token")).toMatchObject({ status: 403, body: { error: { code: "forbidden", message: "a metrics credential may not call /mcp" } } });
    expect(await post(KEYS.acme, "GET")).toEqual({ status: 405, body: { error: { code: "method_not_allowed", message: expect.stringMatching(/^GET \/mcp is not offered/) }, trace_id: expect.any(String) } });
    expect((await post(KEYS.acme, "DELETE")).body.error.code).toBe("method_not_allowed");
    expect((await post(null, "GET")).body.error.code).toBe("unauthorized");
    expect((await post(KEYS.acme)).body.result.tools).toHaveLength(9);
  });

  it("a suspended client's key may read through MCP but start nothing; tool calls are logged and counted", async () => {
    const id = uid("mcp-susp");
    expect((await call("POST", "/admin/clients", { token: ADMIN, json: { id, name: id, email: `ops@${id}.example`, tier: "basic" } })).status).toBe(201);
    const issued = await call("POST", `/admin/clients/${id}/keys`, { token: ADMIN, json: { scopes: ["allocations"] } });
    expect(issued.status).toBe(201);
    expect((await call("PATCH", `/admin/clients/${id}`, { token: ADMIN, json: { status: "suspended" } })).status).toBe(200);
    const client = await connect(issued.body.key);
    expect((await tool(client, "get_capacity")).isError).toBe(false);
    expect(await tool(client, "request_resources", { job_id: "j", workers: 1 })).toMatchObject({ isError: true, body: { error: { code: "client_suspended" } } });
    await client.close();
    const text = (await call("GET", "/metrics", { token: "test-metrics-token" })).body as string;
    expect(text).toContain(`rm_rpc_calls_total{via="mcp",method="request_resources",outcome="client_suspended"}`);
    expect(text).toMatch(/rm_rpc_duration_seconds_count\{via="mcp",method="get_capacity"\} [1-9]/);
  });
});
