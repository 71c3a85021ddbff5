import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { WebStandardStreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
import type { jsonSchemaValidator } from "@modelcontextprotocol/sdk/validation/types.js";
import { CallToolRequestSchema, ErrorCode, ListToolsRequestSchema, McpError, type CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import type { Context, MiddlewareHandler, TypedResponse } from "hono";
import { AppError } from "../errors";
import { authenticate, bearer, identify } from "../http/auth";
import type { AppEnv } from "../http/context";
import { errorResponses, validationError } from "../http/errors";
import { callEnded, callRoute, failureOf } from "../rpc/dispatch";
import type { Identity } from "../http/identity";
import type { RpcResult } from "../rpc/types";
import { inputJsonSchema, TOOLS } from "./tools";

const SERVER_INFO = { name: "resource-manager", version: "0.1.0" };

/**
 * The SDK's default JSON Schema validator (Ajv) compiles validators with `new Function`, which
 * Workers forbid. This server never asks a client for input (elicitation), the one use it has.
 */
const noValidator: jsonSchemaValidator = {
  getValidator: () => () => ({ valid: false, data: undefined, errorMessage: "JSON Schema validation is not available on this server" }),
};

/** A JSON-RPC 2.0 message (MCP's wire format); the SDK reads the rest. */
const JsonRpcMessage = z
  .object({ jsonrpc: z.literal("2.0"), method: z.string().optional(), id: z.union([z.string(), z.number()]).optional() })
  .passthrough()
  .openapi("McpMessage", { description: "A JSON-RPC 2.0 request or notification of the Model Context Protocol (initialize, tools/list, tools/call, ...)" });
const JsonRpcAnswer = z.object({ jsonrpc: z.literal("2.0") }).passthrough().openapi("McpAnswer", { description: "The JSON-RPC 2.0 response" });
const notOffered = (summary: string) => ({
  tags: ["mcp"], security: [{ bearer: [] }], middleware: [authenticate("client", "admin")], summary,
  responses: errorResponses("unauthorized", "forbidden", "method_not_allowed"),
});
const notAllowed = (c: Context<AppEnv>): never => {
  c.header("Allow", "POST");
  throw new AppError("method_not_allowed", `${c.req.method} /mcp is not offered: this server keeps no sessions and opens no server-initiated stream; POST JSON-RPC messages`);
};

/** Who calls, per request: found before the body is validated, so that no credential is a 401 first. */
const identities = new WeakMap<Context<AppEnv>, Identity>();

/**
 * A client's API key or the admin token. Unlike authenticate(), a suspended client's key is let in:
 * each tool's route decides, as REST does (reads allowed, new work refused).
 */
const mcpCaller: MiddlewareHandler<AppEnv> = async (c, next) => {
  const token = bearer(c.req.header("authorization"));
  if (!token) throw new AppError("unauthorized", "missing credential: send Authorization: Bearer <API key>");
  const identity = await identify(c.env, token);
  if (!identity) throw new AppError("unauthorized", "credential not valid");
  if (identity.principal.kind !== "client" && identity.principal.kind !== "admin") {
    throw new AppError("forbidden", `a ${identity.principal.kind} credential may not call /mcp`);
  }
  c.set("principal", identity.principal);
  identities.set(c, identity);
  await next();
};

/**
 * MCP over Streamable HTTP at /mcp, stateless: each POST is answered on its own (a new server and
 * transport per request, JSON answers, no sessions), so any isolate can answer any request. Clients
 * authenticate with `Authorization: Bearer <API key>` (the admin token for operator tools); each tool
 * call is then authorized by its REST route (scopes, suspension).
 */
export function mcpRoutes(app: OpenAPIHono<AppEnv>) {
  return new OpenAPIHono<AppEnv>()
    .openapi(
      createRoute({
        method: "post", path: "/mcp", tags: ["mcp"], security: [{ bearer: [] }], middleware: [mcpCaller],
        summary: "Model Context Protocol (Streamable HTTP, stateless): the allocation tools, execute, queue_status, usage",
        description: "Send JSON-RPC with `Accept: application/json, text/event-stream`. Tool refusals are tool results with `isError: true` whose `structuredContent` is REST's error envelope (same codes).",
        request: { body: { required: true, content: { "application/json": { schema: JsonRpcMessage } } } },
        responses: {
          200: { description: "The JSON-RPC response.", content: { "application/json": { schema: JsonRpcAnswer } } },
          202: { description: "A notification or response was accepted (no body)." },
          ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden"),
        },
      }),
      async (c) => {
        const identity = identities.get(c)!;
        const server = mcpServer(app, c.env, c.executionCtx as ExecutionContext, identity, c.var.traceId);
        const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
        await server.connect(transport);
        // The body was read by the route's validator: hand the transport the parsed message.
        return transport.handleRequest(c.req.raw, { parsedBody: c.req.valid("json") }) as unknown as TypedResponse<never, 200>;
      },
    )
    // No server-initiated stream and no sessions: GET and DELETE are not offered (the spec's 405).
    .openapi(createRoute({ method: "get", path: "/mcp", ...notOffered("Not offered: no server-initiated stream (POST only)") }), notAllowed)
    .openapi(createRoute({ method: "delete", path: "/mcp", ...notOffered("Not offered: no sessions (POST only)") }), notAllowed);
}

function mcpServer(app: OpenAPIHono<AppEnv>, env: Env, ctx: ExecutionContext, identity: Identity, traceId: string): Server {
  const server = new Server(SERVER_INFO, { capabilities: { tools: {} }, jsonSchemaValidator: noValidator });
  server.setRequestHandler(ListToolsRequestSchema, () => ({
    tools: TOOLS.map((t) => ({ name: t.name, title: t.title, description: t.description, inputSchema: inputJsonSchema(t) as { type: "object" } })),
  }));
  server.setRequestHandler(CallToolRequestSchema, async (request): Promise<CallToolResult> => {
    const tool = TOOLS.find((t) => t.name === request.params.name);
    // An unknown tool is a protocol error, not a tool's refusal.
    if (!tool) throw new McpError(ErrorCode.InvalidParams, `no tool ${request.params.name}`);
    const started = Date.now();
    const args = request.params.arguments ?? {};
    let result: RpcResult<Record<string, unknown>>;
    try {
      const parsed = tool.input.safeParse(args);
      if (!parsed.success) throw validationError(parsed.error, "arguments");
      result = await callRoute(app.fetch, env, ctx, identity, tool.route(args, identity.principal), traceId);
    } catch (err) {
      result = failureOf(err, traceId, { via: "mcp", method: tool.name });
    }
    callEnded("mcp", tool.name, identity.principal.kind === "client" ? identity.principal.clientId : null, result, started, traceId);
    const { ok, ...body } = result;
    return { content: [{ type: "text", text: JSON.stringify(body) }], structuredContent: body, ...(ok ? {} : { isError: true }) };
  });
  return server;
}
