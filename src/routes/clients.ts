import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { SCOPE_DESCRIPTIONS, SCOPES } from "../domain/scopes";
import { TIERS } from "../domain/types";
import { authenticate } from "../http/auth";
import type { AppEnv } from "../http/context";
import { errorResponses } from "../http/errors";
import { clientDetail, clientKeys, createClient, deleteClient, issueKey, revokeKey, updateClient } from "../services/clients";
import { decodeClientCursor, listClients } from "../storage/clients";
import { ClientId, Nano, TraceId } from "./schemas";

/** A new client's id: a stricter slug than ClientId (which also names older clients), so every new id is URL- and log-friendly. */
const NewClientId = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{1,62}$/, "2 to 63 lowercase letters, digits and dashes, not starting with a dash")
  .openapi({ example: "acme" });

const Name = z.string().trim().min(1).max(200).openapi({ example: "Acme Corp" });
const Email = z.email("an e-mail address").max(254).openapi({ description: "Contact e-mail", example: "ops@acme.example" });
const Tier = z.enum(TIERS);
const Status = z.enum(["active", "suspended"]).openapi({ description: "suspended: new work is refused (403 client_suspended), queued work waits, reads still work" });
const Budget = z
  .number().int().min(0).max(Number.MAX_SAFE_INTEGER)
  .openapi({ description: "Monthly budget in nano-dollars; null: the tier's", example: 500_000_000_000 });

const ClientView = z
  .object({
    id: z.string().openapi({ example: "acme" }),
    name: z.string(),
    email: z.string(),
    tier: Tier,
    monthly_budget_nano: Nano.nullable().openapi({ description: "The client's own monthly budget; null: its tier's (an operator's budget set with PUT .../budget overrides both)" }),
    status: Status,
    created_at: z.number().int(),
    updated_at: z.number().int(),
  })
  .openapi("Client");

const CreateClient = z
  .object({ id: NewClientId, name: Name, email: Email, tier: Tier, monthly_budget_nano: Budget.nullable().optional(), status: Status.optional().openapi({ description: "Default active" }) })
  .strict()
  .openapi("CreateClient");

const CHANGEABLE = ["name", "email", "tier", "monthly_budget_nano", "status"] as const;

const UpdateClient = z
  .object({ name: Name.optional(), email: Email.optional(), tier: Tier.optional(), monthly_budget_nano: Budget.nullable().optional(), status: Status.optional() })
  .strict()
  .superRefine((v, ctx) => {
    if (CHANGEABLE.every((k) => v[k] === undefined)) ctx.addIssue({ code: "custom", path: [], message: `give at least one of ${CHANGEABLE.join(", ")}` });
  })
  .openapi("UpdateClient", { description: "Only the fields given change" });

const OneClient = z.object({ client: ClientView, trace_id: TraceId }).openapi("ClientResponse");
const ClientWithCounts = z
  .object({
    client: ClientView,
    counts: z.object({
      active_keys: z.number().int().openapi({ description: "API keys not revoked" }),
      queued: z.number().int().openapi({ description: "Requests waiting in the scheduler" }),
      running: z.number().int().openapi({ description: "Requests being dispatched or run" }),
    }),
    trace_id: TraceId,
  })
  .openapi("ClientDetail");
const ClientList = z.object({ clients: z.array(ClientView), next_cursor: z.string().nullable(), trace_id: TraceId }).openapi("ClientList");
const ClientDeleted = z
  .object({
    client_id: z.string(),
    deleted: z.literal(true),
    queued: z.number().int().openapi({ description: "Queued requests it had" }),
    running: z.number().int().openapi({ description: "Running requests it had" }),
    cancelled: z.number().int().openapi({ description: "Requests cancelled by force=true" }),
    trace_id: TraceId,
  })
  .openapi("ClientDeleted");

const ListQuery = z
  .object({
    tier: Tier.optional(),
    status: Status.optional(),
    limit: z.coerce.number().int().min(1).max(200).default(50),
    cursor: z.string().max(200).refine((c) => decodeClientCursor(c) !== null, "a next_cursor from a previous page").optional(),
  })
  // A misspelt filter would otherwise silently list everything.
  .strict();

const DeleteQuery = z
  .object({ force: z.enum(["true", "false"]).optional().openapi({ description: "true: cancel the client's queued and running requests first" }) })
  .strict();

const scopeList = SCOPES.map((s) => `\`${s}\`: ${SCOPE_DESCRIPTIONS[s]}`).join("; ");

const IssueKey = z
  .object({
    scopes: z.array(z.enum(SCOPES)).min(1)
      .refine((s) => new Set(s).size === s.length, "each scope once")
      .openapi({ description: `What the key may do. ${scopeList}`, example: ["resources:read", "execute", "usage:read"] }),
    name: z.string().trim().min(1).max(100).optional().openapi({ description: "A label for operators", example: "ci" }),
  })
  .strict()
  .openapi("IssueApiKey");

const KeyFields = {
  id: z.string().openapi({ example: "key_3f9c..." }),
  client_id: z.string(),
  name: z.string().nullable(),
  prefix: z.string().openapi({ description: "The key's first 12 characters, to recognise it", example: "rmk_Xq3v9LbT" }),
  scopes: z.array(z.string()),
  created_at: z.number().int(),
  revoked_at: z.number().int().nullable(),
};
const ApiKeyView = z.object(KeyFields).openapi("ApiKey");
const IssuedKey = z
  .object({ key: z.string().openapi({ description: "The secret: shown here once, never again (only its SHA-256 is stored)", example: "rmk_Xq3v9LbT..." }), ...KeyFields, trace_id: TraceId })
  .openapi("IssuedApiKey");
const RevokedKey = z.object({ ...KeyFields, trace_id: TraceId }).openapi("RevokedApiKey");
const KeyList = z.object({ client_id: z.string(), keys: z.array(ApiKeyView), trace_id: TraceId }).openapi("ApiKeyList");

const ClientParams = z.object({ clientId: ClientId.openapi({ param: { name: "clientId", in: "path" } }) });
const KeyParams = ClientParams.extend({
  keyId: z.string().regex(/^key_[a-z0-9_]{1,64}$/, "a key id (key_...)").openapi({ param: { name: "keyId", in: "path" } }),
});

const guard = { tags: ["admin"], security: [{ bearer: [] }], middleware: [authenticate("admin")] };
const ok = <T extends z.ZodType>(description: string, schema: T) => ({ description, content: { "application/json": { schema } } });
const json = <T extends z.ZodType>(schema: T) => ({ required: true, content: { "application/json": { schema } } });

export const clientRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "post", path: "/admin/clients", ...guard, summary: "Create a client (tenant)",
      request: { body: json(CreateClient) },
      responses: {
        201: ok("Created.", OneClient),
        ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden", "client_exists", "client_id_retired"),
      },
    }),
    async (c) => {
      const client = await createClient(c.env, c.req.valid("json"), Date.now());
      c.var.logger.info("admin_client", { action: "create", client_id: client.id, tier: client.tier, status: client.status });
      return c.json({ client, trace_id: c.var.traceId }, 201);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/clients", ...guard, summary: "Clients by id, filtered by tier and status; paginated by cursor",
      request: { query: ListQuery },
      responses: { 200: ok("One page; next_cursor is null on the last.", ClientList), ...errorResponses("validation_failed", "unauthorized", "forbidden") },
    }),
    async (c) => {
      const page = await listClients(c.env.DB, c.req.valid("query"));
      return c.json({ clients: page.clients, next_cursor: page.nextCursor, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/clients/{clientId}", ...guard, summary: "A client, with its active keys and its queued and running requests",
      request: { params: ClientParams },
      responses: { 200: ok("The client.", ClientWithCounts), ...errorResponses("validation_failed", "unauthorized", "forbidden", "client_not_found") },
    }),
    async (c) => c.json({ ...(await clientDetail(c.env, c.req.valid("param").clientId)), trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "patch", path: "/admin/clients/{clientId}", ...guard,
      summary: "Change a client's name, e-mail, tier, budget or status (suspend / reactivate)",
      description: "Applies at once in this isolate; other isolates see it within CONFIG_TTL_MS.",
      request: { params: ClientParams, body: json(UpdateClient) },
      responses: {
        200: ok("The client as it now is.", OneClient),
        ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden", "client_not_found"),
      },
    }),
    async (c) => {
      const { clientId } = c.req.valid("param");
      const changes = c.req.valid("json");
      const client = await updateClient(c.env, clientId, changes, Date.now());
      c.var.logger.info("admin_client", { action: "update", client_id: clientId, fields: Object.keys(changes), status: client.status });
      return c.json({ client, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "delete", path: "/admin/clients/{clientId}", ...guard,
      summary: "Delete a client with its keys, budget and quota; refused while it has work unless force=true cancels it",
      description: "Usage history stays, and the id is retired: creating a client with it again is 409 client_id_retired. " +
        "The client's open and acknowledged alerts are resolved. Its keys stop working at once in this isolate, elsewhere within CONFIG_TTL_MS.",
      request: { params: ClientParams, query: DeleteQuery },
      responses: {
        200: ok("Deleted, with what was cancelled.", ClientDeleted),
        ...errorResponses("validation_failed", "unauthorized", "forbidden", "client_not_found", "client_busy"),
      },
    }),
    async (c) => {
      const { clientId } = c.req.valid("param");
      const deleted = await deleteClient(c.env, clientId, c.req.valid("query").force === "true");
      c.var.logger.info("admin_client", { action: "delete", client_id: clientId, ...deleted });
      return c.json({ client_id: clientId, deleted: true as const, ...deleted, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "post", path: "/admin/clients/{clientId}/keys", ...guard, summary: "Issue an API key with scopes; the secret is in this answer only",
      request: { params: ClientParams, body: json(IssueKey) },
      responses: {
        201: ok("Issued.", IssuedKey),
        ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden", "client_not_found"),
      },
    }),
    async (c) => {
      const { clientId } = c.req.valid("param");
      const body = c.req.valid("json");
      const issued = await issueKey(c.env, clientId, body.scopes, body.name ?? null, Date.now());
      c.var.logger.info("admin_api_key", { action: "issue", client_id: clientId, key_id: issued.id, prefix: issued.prefix, scopes: issued.scopes });
      return c.json({ ...issued, trace_id: c.var.traceId }, 201);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/clients/{clientId}/keys", ...guard, summary: "A client's keys, revoked ones included: prefix and scopes, never the secret",
      request: { params: ClientParams },
      responses: { 200: ok("Keys, oldest first.", KeyList), ...errorResponses("validation_failed", "unauthorized", "forbidden", "client_not_found") },
    }),
    async (c) => {
      const { clientId } = c.req.valid("param");
      return c.json({ client_id: clientId, keys: await clientKeys(c.env, clientId), trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "delete", path: "/admin/clients/{clientId}/keys/{keyId}", ...guard,
      summary: "Revoke a key (again: the same answer, with the first revoked_at)",
      description: "The key stops working at once in this isolate; other isolates refuse it within CONFIG_TTL_MS.",
      request: { params: KeyParams },
      responses: { 200: ok("Revoked.", RevokedKey), ...errorResponses("validation_failed", "unauthorized", "forbidden", "client_not_found", "key_not_found") },
    }),
    async (c) => {
      const { clientId, keyId } = c.req.valid("param");
      const key = await revokeKey(c.env, clientId, keyId, Date.now());
      c.var.logger.info("admin_api_key", { action: "revoke", client_id: clientId, key_id: key.id, prefix: key.prefix });
      return c.json({ ...key, trace_id: c.var.traceId }, 200);
    },
  );
