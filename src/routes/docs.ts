import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../http/context";
import { errorExamples } from "../http/errors";
import { docsHeaders } from "../http/page-headers";

/** The document's own fields; paths and schemas come from the routes' createRoute declarations. */
const DOCUMENT = {
  openapi: "3.1.0",
  info: {
    title: "Resource Manager",
    version: "0.1.0",
    description:
      "Rate limits, quotas, capacity and money for the AI platform. Money is integer nano-dollars; times are epoch ms UTC. " +
      "Every error is one envelope, `{ error: { code, message, details? }, trace_id }`; the examples of each error response name the codes it may carry. " +
      "Paths: `/api/...` is what clients call with an API key (acting for their own client, with the route's scope; the admin token may act for any client); " +
      "`/admin/...` is operators' management and configuration (admin token); `/internal/...` is platform workers' spending (internal token).",
  },
  servers: [{ url: "/", description: "The worker serving this document" }],
  tags: [
    { name: "health", description: "Liveness, readiness and the state of every pool" },
    { name: "resources", description: "What a client may take now, and what it would cost (API key scope resources:read)" },
    { name: "queue", description: "Executing templates now or through the five queues (API key scope execute)" },
    { name: "usage", description: "The usage ledger, budgets and costs (API key scope usage:read or resources:read)" },
    { name: "internal", description: "Spending for the platform's workers that cannot use RPC (internal token)" },
    { name: "admin", description: "Operators: scheduler, alerts, clients' budgets (admin token)" },
    { name: "clients", description: "Clients (tenants), their API keys, quotas and burst sessions. Reads under /api/clients/{id}/... (API key of that client, scopes quota:read or burst; or the admin token); management under /admin/... (admin token)" },
    { name: "allocations", description: "Hierarchical compute allocations: quotas per depth, TTLs, subtree release (API key scope allocations)" },
    { name: "pools", description: "Pool management, lifecycle and auto-scaling (admin token)" },
    { name: "sla", description: "Service levels per tier and queue: targets (admin token), a request's verdict (scope execute), attainment over a window (scope usage:read)" },
    { name: "optimizer", description: "The cost optimizer: model downgrade, batching, result caching, compression, off-peak scheduling; analysis, savings stats and recommendations (API key scopes resources:read, usage:read), per-client switches (admin token)" },
    { name: "mcp", description: "Model Context Protocol for agents (Streamable HTTP, JSON-RPC): allocation tools, execute, queue status, usage (API key; scopes as the REST operations; the admin token for cleanup)" },
    { name: "docs", description: "This document and its interactive reference" },
  ],
};

type Document = ReturnType<OpenAPIHono["getOpenAPI31Document"]>;

const METHODS = ["get", "put", "post", "delete", "patch", "head", "options"] as const;

/** `post /api/queue/enqueue` → `postApiQueueEnqueue`; `{requestId}` → `ByRequestId`. */
function operationIdOf(method: string, path: string): string {
  const words = path.split("/").filter(Boolean).flatMap((seg) => {
    const param = /^\{(.+)\}$/.exec(seg);
    return (param ? ["by", ...param[1]!.split(/[^A-Za-z0-9]+/)] : seg.split(/[^A-Za-z0-9]+/)).filter(Boolean);
  });
  const tail = words.length ? words.map((w) => w[0]!.toUpperCase() + w.slice(1)).join("") : "Root";
  return method + tail;
}

/** Give every operation a stable operationId (the linter asks for one; clients generate names from it). */
function withOperationIds(doc: Document): Document {
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (op && !op.operationId) op.operationId = operationIdOf(method, path);
    }
  }
  return doc;
}

/**
 * Error responses that several operations declare alike (same status, same codes) are kept once in
 * components.responses, named by status and codes, and referenced: most operations share 401/403 and
 * the 400s. Success responses are left where they are.
 */
function withSharedErrorResponses(doc: Document): Document {
  const seen = new Map<string, { name: string; response: unknown; uses: Array<Record<string, unknown>> }>();
  for (const item of Object.values(doc.paths ?? {})) {
    for (const method of METHODS) {
      const responses = item[method]?.responses as Record<string, unknown> | undefined;
      if (!responses) continue;
      for (const [status, response] of Object.entries(responses)) {
        const examples = (response as { content?: Record<string, { examples?: object }> }).content?.["application/json"]?.examples;
        if (Number(status) < 400 || !examples) continue;
        const key = `${status} ${JSON.stringify(response)}`;
        const name = `Error${status}_${Object.keys(examples).join("_")}`;
        const entry = seen.get(key) ?? { name, response, uses: [] };
        entry.uses.push(responses);
        seen.set(key, entry);
      }
    }
  }
  const shared: Record<string, unknown> = {};
  for (const [key, { name, response, uses }] of seen) {
    if (uses.length < 2 || name in shared) continue;
    shared[name] = response;
    const status = key.slice(0, key.indexOf(" "));
    for (const responses of uses) responses[status] = { $ref: `#/components/responses/${name}` };
  }
  // Only the examples some response names (no operation declares a 500, say).
  const used = new Set([...seen.values()].flatMap(({ response }) => Object.keys((response as { content: Record<string, { examples: object }> }).content["application/json"]!.examples)));
  const examples = Object.fromEntries(Object.entries(doc.components?.examples ?? {}).filter(([code]) => used.has(code)));
  doc.components = { ...doc.components, examples, responses: { ...doc.components?.responses, ...(shared as object) } };
  return doc;
}

const OpenApiDocument = z
  .looseObject({ openapi: z.string(), info: z.looseObject({ title: z.string(), version: z.string() }), paths: z.record(z.string(), z.unknown()) })
  .openapi("OpenApiDocument", { description: "This OpenAPI 3.1 document" });

/**
 * The document at /openapi.json and its interactive reference at /docs. `app` is the composed app: its
 * registry holds every route, so the document is built from it (once per isolate, on first request).
 */
export function docsRoutes(app: OpenAPIHono<AppEnv>) {
  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", {
    type: "http",
    scheme: "bearer",
    description: "An API key (rmk_...) on /api, the internal token on /internal, the admin token on /admin, the metrics or admin token on /metrics",
  });
  for (const { code, example } of errorExamples()) app.openAPIRegistry.registerComponent("examples", code, example);
  let document: Document | undefined;
  return new OpenAPIHono<AppEnv>()
    .openapi(
      createRoute({
        method: "get", path: "/openapi.json", tags: ["docs"], security: [], summary: "This OpenAPI 3.1 document",
        responses: { 200: { description: "The document.", content: { "application/json": { schema: OpenApiDocument } } } },
      }),
      (c) => {
        document ??= withSharedErrorResponses(withOperationIds(app.getOpenAPI31Document(DOCUMENT)));
        return c.json(document as z.infer<typeof OpenApiDocument>, 200);
      },
    )
    .openapi(
      createRoute({
        method: "get", path: "/docs", tags: ["docs"], security: [], middleware: [docsHeaders], summary: "Interactive API reference (HTML; reads /openapi.json)",
        responses: { 200: { description: "Swagger UI over /openapi.json: operations by tag, schemas, and \"Try it out\" for each operation. Its scripts and styles are files of this origin.", content: { "text/html": { schema: z.string() } } } },
      }),
      (c) => c.html(PAGE, 200),
    );
}

/**
 * The reference page: Swagger UI (swagger-ui-dist, a pinned devDependency) from this origin
 * (src/routes/docs-files.ts: the bundle copied by scripts/docs-assets.mjs, and init.js, which points it
 * at /openapi.json). No inline script, nothing from another origin.
 */
const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Resource Manager: API reference</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/docs/swagger-ui/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
`;
