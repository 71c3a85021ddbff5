import { z } from "@hono/zod-openapi";

// Shared request/response pieces. Units are whole numbers; money is integer nano-dollars.

/** The patterns of pool and client ids (also used by the hot path's plain-body check, src/routes/consume-fast-path.ts). */
export const POOL_ID = /^[a-z0-9][a-z0-9-]{0,63}$/;
export const CLIENT_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
/** The most units one call may name. */
export const MAX_UNITS = 1_000_000_000_000;
/** The longest idempotency key or request reference. */
export const MAX_REF_LENGTH = 128;

export const PoolId = z
  .string()
  .regex(POOL_ID, "lowercase letters, digits and dashes, at most 64")
  .openapi({ example: "openai-gpt4" });

export const ClientId = z
  .string()
  .regex(CLIENT_ID, "letters, digits, _ and -, at most 64")
  .openapi({ example: "acme" });

export const Units = z
  .number()
  .int()
  .positive()
  .max(MAX_UNITS)
  .openapi({ description: "Whole units of the pool (tokens, e-mails, ...)", example: 500 });

export const IdempotencyKey = z.string().min(1).max(MAX_REF_LENGTH).openapi({ example: "job-42-step-1" });
export const RequestRef = z.string().min(1).max(MAX_REF_LENGTH).openapi({ example: "req_01" });

export const PoolAmount = z.object({ pool: PoolId, amount: Units }).strict().openapi("PoolAmount");

export const TraceId = z.string().openapi({ example: "6f1c1a0e-..." });

export const Nano = z.number().int().openapi({ description: "Integer nano-dollars (1e-9 USD)" });

/** A client's monthly budget as its object keeps it (GET /api/usage/{id}/current, /admin/clients/{id}/budget). */
export const BudgetFields = {
  client_id: z.string(),
  month: z.string().openapi({ description: "The UTC calendar month, 'YYYY-MM'", example: "2026-11" }),
  budget_nano: Nano.nullable().openapi({ description: "The monthly budget; null: no limit (set by an operator)" }),
  budget_source: z.enum(["client", "tier", "unlimited", "unset"]).openapi({
    description: "client: the client's own or an operator's; tier: its tier's; unlimited: no limit, explicitly; unset: none configured, so nothing may be spent",
  }),
  spent_nano: Nano.openapi({ description: "Spent this month" }),
  in_flight_nano: Nano.openapi({ description: "Estimates of admitted requests not yet settled" }),
  remaining_nano: Nano.nullable().openapi({ description: "budget - spent - in flight, never below 0; null without a limit" }),
  resets_at: z.number().int().openapi({ description: "Epoch ms: the first millisecond of next month (UTC), when spend starts again at 0" }),
};
