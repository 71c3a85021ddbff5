import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { TIERS } from "../domain/types";
import { authenticate } from "../http/auth";
import type { AppEnv } from "../http/context";
import { errorResponses } from "../http/errors";
import { tierLimits } from "../storage/config";
import {
  changeTemplate, changeTier, createTemplate, removeTemplate, templateDefinition, templateDefinitions, type TemplateDefinition,
} from "../services/templates";
import type { TierRow } from "../storage/tiers";
import { Nano, PoolAmount, TraceId } from "./schemas";

// Reference data an operator manages: tiers (their points, concurrency, budget and weight) and templates
// (the work downstream workers do). Migrations create the defaults; these routes change them.

const TierName = z.enum(TIERS);
const TemplateId = z.string().regex(/^[a-z0-9][a-z0-9-]{0,63}$/, "lowercase letters, digits and dashes, at most 64").openapi({ example: "summarize" });

const TierView = z
  .object({
    id: TierName,
    priority_points: z.number().int().openapi({ description: "Points (0-40) every request of the tier starts with in the priority score" }),
    max_concurrent: z.number().int().openapi({ description: "Jobs a client of the tier may run at once, unless its quota says otherwise" }),
    monthly_budget_nano: Nano.nullable().openapi({ description: "The tier's monthly budget; null: none (each client's own applies)" }),
    weight: z.number().int().openapi({ description: "Fair-share weight in dispatch, unless the client's quota sets its own" }),
  })
  .openapi("Tier");

const UpdateTier = z
  .object({
    priority_points: z.number().int().min(0).max(40).optional(),
    max_concurrent: z.number().int().min(1).max(1_000_000).optional(),
    monthly_budget_nano: Nano.min(0).max(Number.MAX_SAFE_INTEGER).nullable().optional(),
    weight: z.number().int().min(1).max(1000).optional(),
  })
  .strict()
  .refine((v) => Object.keys(v).length > 0, { message: "give at least one field to change" })
  .openapi("UpdateTier", { description: "Only the fields given change" });

const Options = z
  .object({
    cache_ttl_ms: z.number().int().min(1000).max(30 * 24 * 3_600_000).openapi({ description: "How long a cached result of a cacheable template is served", example: 3_600_000 }),
    batch_size: z.number().int().min(1).max(1000).openapi({ description: "Most requests combined into one batch call", example: 10 }),
    compress_threshold_bytes: z.number().int().min(0).max(100 * 1024 * 1024).openapi({ description: "Params and results above this size are stored gzip-compressed", example: 4096 }),
  })
  .strict()
  .openapi("TemplateOptions");

const Fields = {
  name: z.string().min(1).max(100).openapi({ example: "Summarize a document" }),
  binding: z.string().regex(/^[A-Z][A-Z0-9_]{0,63}$/, "an upper-case binding name").openapi({ description: "The service binding of the worker that does the work; this worker must have it", example: "CONTENT_WORKER" }),
  requirements: z.array(PoolAmount).min(1).max(20).openapi({ description: "Units of each pool one request holds while it runs" }),
  alternative_id: TemplateId.nullable().openapi({ description: "A cheaper template the optimizer may run instead (downgrade); null: none" }),
  cacheable: z.boolean(),
  batchable: z.boolean(),
  timeout_ms: z.number().int().min(100).max(15 * 60_000).openapi({ description: "How long one attempt may run", example: 30_000 }),
  max_attempts: z.number().int().min(1).max(10).openapi({ description: "Attempts before a request fails (a worker error or timeout retries with backoff)", example: 3 }),
  options: Options,
};

const TemplateView = z.object({ id: TemplateId, ...Fields }).openapi("Template");
const CreateTemplate = z
  .object({
    id: TemplateId,
    ...Fields,
    alternative_id: Fields.alternative_id.default(null),
    cacheable: Fields.cacheable.default(false),
    batchable: Fields.batchable.default(false),
    timeout_ms: Fields.timeout_ms.default(30_000),
    max_attempts: Fields.max_attempts.default(3),
    options: Options.partial().default({}),
  })
  .strict()
  .openapi("CreateTemplate");
const UpdateTemplate = z
  .object({
    name: Fields.name.optional(),
    binding: Fields.binding.optional(),
    requirements: Fields.requirements.optional(),
    alternative_id: Fields.alternative_id.optional(),
    cacheable: Fields.cacheable.optional(),
    batchable: Fields.batchable.optional(),
    timeout_ms: Fields.timeout_ms.optional(),
    max_attempts: Fields.max_attempts.optional(),
    options: Options.partial().optional(),
  })
  .strict()
  .refine((v) => Object.keys(v).length > 0, { message: "give at least one field to change" })
  .openapi("UpdateTemplate", { description: "Only the fields given change; the template is checked as a whole" });

const TierList = z.object({ tiers: z.array(TierView), trace_id: TraceId }).openapi("TierList");
const TierResult = z.object({ tier: TierView, trace_id: TraceId }).openapi("TierResult");
const TemplateList = z.object({ templates: z.array(TemplateView), trace_id: TraceId }).openapi("TemplateList");
const TemplateResult = z.object({ template: TemplateView, trace_id: TraceId }).openapi("TemplateResult");
const TemplateDeleted = z.object({ template: z.string(), deleted: z.literal(true), trace_id: TraceId }).openapi("TemplateDeleted");

const TierParams = z.object({ tier: TierName.openapi({ param: { name: "tier", in: "path" } }) });
const TemplateParams = z.object({ templateId: TemplateId.openapi({ param: { name: "templateId", in: "path" } }) });

const guard = { tags: ["admin"], security: [{ bearer: [] }], middleware: [authenticate("admin")] };
const ok = <T extends z.ZodType>(description: string, schema: T) => ({ description, content: { "application/json": { schema } } });
const json = <T extends z.ZodType>(schema: T) => ({ required: true, content: { "application/json": { schema } } });

function tierView(t: TierRow) {
  return { id: t.id, priority_points: t.priority_points, max_concurrent: t.max_concurrent, monthly_budget_nano: t.monthly_budget_nano, weight: t.weight };
}

function templateView(t: TemplateDefinition) {
  return {
    id: t.id, name: t.name, binding: t.binding, requirements: t.requirements, alternative_id: t.alternativeId, cacheable: t.cacheable,
    batchable: t.batchable, timeout_ms: t.timeoutMs, max_attempts: t.maxAttempts, options: t.options,
  };
}

/** The API's snake_case fields as the service's record (only those given). */
function templateFields(b: z.infer<typeof UpdateTemplate>) {
  const out: Partial<Omit<TemplateDefinition, "id" | "options">> = {};
  if (b.name !== undefined) out.name = b.name;
  if (b.binding !== undefined) out.binding = b.binding;
  if (b.requirements !== undefined) out.requirements = b.requirements;
  if (b.alternative_id !== undefined) out.alternativeId = b.alternative_id;
  if (b.cacheable !== undefined) out.cacheable = b.cacheable;
  if (b.batchable !== undefined) out.batchable = b.batchable;
  if (b.timeout_ms !== undefined) out.timeoutMs = b.timeout_ms;
  if (b.max_attempts !== undefined) out.maxAttempts = b.max_attempts;
  return out;
}

const templateErrors = ["bad_request", "validation_failed", "unauthorized", "forbidden", "pool_not_found", "template_not_found"] as const;

export const templateRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get", path: "/admin/tiers", ...guard, summary: "Every tier: priority points, concurrency, budget, fair-share weight",
      responses: { 200: ok("The tiers, highest priority first.", TierList), ...errorResponses("unauthorized", "forbidden") },
    }),
    async (c) => c.json({ tiers: [...(await tierLimits(c.env)).values()].sort((a, b) => b.priority_points - a.priority_points).map(tierView), trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "patch", path: "/admin/tiers/{tier}", ...guard, summary: "Change a tier; queued and new work is ranked with it within the configuration TTL",
      request: { params: TierParams, body: json(UpdateTier) },
      responses: { 200: ok("The tier as changed.", TierResult), ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden", "not_found") },
    }),
    async (c) => {
      const { tier } = c.req.valid("param");
      const row = await changeTier(c.env, tier, c.req.valid("json"));
      return c.json({ tier: tierView(row), trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/templates", ...guard, summary: "Every template with its optimizer options",
      responses: { 200: ok("The templates, by id.", TemplateList), ...errorResponses("unauthorized", "forbidden") },
    }),
    async (c) => c.json({ templates: (await templateDefinitions(c.env)).map(templateView), trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "post", path: "/admin/templates", ...guard, summary: "Create a template; its binding, pools and alternative must exist",
      request: { body: json(CreateTemplate) },
      responses: { 201: ok("The template.", TemplateResult), ...errorResponses(...templateErrors, "template_exists") },
    }),
    async (c) => {
      const b = c.req.valid("json");
      const created = await createTemplate(c.env, {
        id: b.id, name: b.name, binding: b.binding, requirements: b.requirements, alternativeId: b.alternative_id, cacheable: b.cacheable,
        batchable: b.batchable, timeoutMs: b.timeout_ms, maxAttempts: b.max_attempts,
        options: { cache_ttl_ms: 3_600_000, batch_size: 10, compress_threshold_bytes: 4096, ...b.options },
      });
      return c.json({ template: templateView(created), trace_id: c.var.traceId }, 201);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/templates/{templateId}", ...guard, summary: "A template with its optimizer options",
      request: { params: TemplateParams },
      responses: { 200: ok("The template.", TemplateResult), ...errorResponses("validation_failed", "unauthorized", "forbidden", "template_not_found") },
    }),
    async (c) => c.json({ template: templateView(await templateDefinition(c.env, c.req.valid("param").templateId)), trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "patch", path: "/admin/templates/{templateId}", ...guard, summary: "Change a template; new requests use it within the configuration TTL",
      request: { params: TemplateParams, body: json(UpdateTemplate) },
      responses: { 200: ok("The template as changed.", TemplateResult), ...errorResponses(...templateErrors) },
    }),
    async (c) => {
      const b = c.req.valid("json");
      const changed = await changeTemplate(c.env, c.req.valid("param").templateId, { ...templateFields(b), options: b.options });
      return c.json({ template: templateView(changed), trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "delete", path: "/admin/templates/{templateId}", ...guard, summary: "Delete a template; refused while another names it as its alternative",
      description: "Requests of the template still queued fail when the scheduler reaches them.",
      request: { params: TemplateParams },
      responses: { 200: ok("Deleted.", TemplateDeleted), ...errorResponses("validation_failed", "unauthorized", "forbidden", "template_not_found", "template_in_use") },
    }),
    async (c) => {
      const { templateId } = c.req.valid("param");
      await removeTemplate(c.env, templateId);
      return c.json({ template: templateId, deleted: true as const, trace_id: c.var.traceId }, 200);
    },
  );
