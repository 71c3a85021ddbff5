import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { MAX_RETENTION_DAYS, PRUNE_CHUNK_ROWS, RETENTION_KINDS } from "../domain/retention";
import { authenticate } from "../http/auth";
import type { AppEnv } from "../http/context";
import { errorResponses } from "../http/errors";
import { retentionSettings, setRetention } from "../services/retention";
import { TraceId } from "./schemas";

const Kind = z.enum(RETENTION_KINDS);

const Setting = z
  .object({
    kind: Kind,
    days: z.number().int().openapi({ description: "Records of this kind older than this many days are pruned" }),
    default_days: z.number().int(),
    min_days: z.number().int().openapi({ description: "The least this kind may be set to" }),
    description: z.string().openapi({ description: "Which records, by which time" }),
    updated_at: z.number().int().nullable().openapi({ description: "When it was last set; null: never, the default applies" }),
  })
  .openapi("RetentionSetting");

const Settings = z
  .object({
    settings: z.array(Setting),
    chunk_rows: z.number().int().openapi({ description: "Rows deleted per kind per cron minute at most" }),
    trace_id: TraceId,
  })
  .openapi("RetentionSettings");

const OneSetting = z.object({ setting: Setting, trace_id: TraceId }).openapi("OneRetentionSetting");

const SetDays = z
  .object({ days: z.number().int().min(1).max(MAX_RETENTION_DAYS).openapi({ example: 180 }) })
  .strict()
  .openapi("SetRetention");

const KindParams = z.object({ kind: Kind.openapi({ param: { name: "kind", in: "path" } }) });

const guard = { tags: ["admin"], security: [{ bearer: [] }], middleware: [authenticate("admin")] };
const ok = <T extends z.ZodType>(description: string, schema: T) => ({ description, content: { "application/json": { schema } } });

export const retentionRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get", path: "/admin/retention", ...guard, summary: "How long each kind of record is kept",
      description: "The minute cron deletes records older than their kind's setting, at most chunk_rows per kind per run. Daily usage rollups are kept forever.",
      responses: { 200: ok("Every kind, with its default and minimum.", Settings), ...errorResponses("unauthorized", "forbidden") },
    }),
    async (c) => c.json({ settings: await retentionSettings(c.env), chunk_rows: PRUNE_CHUNK_ROWS, trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "put", path: "/admin/retention/{kind}", ...guard, summary: "Set how many days a kind of record is kept",
      description: "Takes effect at the next cron run. days: 1-3650, and at least the kind's min_days.",
      request: { params: KindParams, body: { required: true, content: { "application/json": { schema: SetDays } } } },
      responses: {
        200: ok("The setting as it now is.", OneSetting),
        ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden"),
      },
    }),
    async (c) => {
      const { kind } = c.req.valid("param");
      const setting = await setRetention(c.env, kind, c.req.valid("json").days, Date.now());
      c.var.logger.info("admin_retention", { kind, days: setting.days });
      return c.json({ setting, trace_id: c.var.traceId }, 200);
    },
  );
