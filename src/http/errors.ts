import { z } from "@hono/zod-openapi";
import type { Context, ErrorHandler, NotFoundHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { AppError, ERRORS, type ErrorCode } from "../errors";
import type { AppEnv } from "./context";

export const ErrorEnvelope = z
  .object({
    error: z.object({
      code: z.enum(Object.keys(ERRORS) as [ErrorCode, ...ErrorCode[]]),
      message: z.string(),
      details: z.record(z.string(), z.unknown()).optional(),
    }),
    trace_id: z.string(),
  })
  .openapi("Error");

/** The header every 429 carries (AppError.retryAfterSec). */
const RETRY_AFTER = {
  "Retry-After": { description: "Seconds until a retry can succeed (enough units, or a limit's window ended)", required: true, schema: { type: "integer" as const, minimum: 1 } },
};

/** The header a 503 may carry: a dependency that failed mid-call is worth another try soon (AppError.retryAfterSec). */
const RETRY_AFTER_503 = {
  "Retry-After": { description: "Seconds to wait before trying again, when a retry is likely to succeed", required: false, schema: { type: "integer" as const, minimum: 1 } },
};

/** Where the document keeps each error code's example (one per code, registered by errorExamples). */
const exampleRef = (code: ErrorCode) => ({ $ref: `#/components/examples/${code}` });

/**
 * OpenAPI responses for the given error codes, generated from the one table: per status, the Error
 * schema with one example per code, each a reference to the code's shared example (errorExamples), so
 * the document holds each example once. The examples' names are the codes that status may carry for
 * this operation; the tests' response check (test/support/contract.ts) holds every error answer to them.
 */
export function errorResponses(...codes: ErrorCode[]) {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of codes) {
    const { status } = ERRORS[code];
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  return Object.fromEntries(
    [...byStatus].map(([status, group]) => [
      status,
      {
        description: errorDescription(group),
        ...(status === 429 ? { headers: RETRY_AFTER } : status === 503 ? { headers: RETRY_AFTER_503 } : {}),
        content: {
          "application/json": {
            schema: ErrorEnvelope,
            examples: Object.fromEntries(group.map((code) => [code, exampleRef(code)])),
          },
        },
      },
    ]),
  );
}

/** A response's description: the codes it may carry (each code's meaning is in its shared example). */
export function errorDescription(codes: readonly string[]): string {
  return `Error codes: ${codes.map((code) => `\`${code}\``).join(", ")}.`;
}

/** Every error code's example, for the document's components (docs.ts registers them). */
export function errorExamples() {
  return Object.entries(ERRORS).map(([code, { status, description }]) => ({
    code,
    example: { summary: `${status} ${code}`, description, value: { error: { code, message: description }, trace_id: "6f1c1a0e-..." } },
  }));
}

/** An AppError's envelope and its Retry-After seconds (the app's and the hot path's one source). */
export function errorEnvelope(err: AppError, traceId: string) {
  const body = {
    error: { code: err.code, message: err.message, ...(err.details ? { details: err.details } : {}) },
    trace_id: traceId,
  };
  // Every 429 says when to retry: the error's own hint, else its details' retry_after_ms, else 1 s.
  const hintMs = typeof err.details?.retry_after_ms === "number" ? err.details.retry_after_ms : null;
  const retryAfter = err.retryAfterSec ?? (err.status === 429 ? Math.max(1, Math.ceil((hintMs ?? 1000) / 1000)) : undefined);
  return { body, retryAfter };
}

/** What an error that is not an AppError answers (after it is logged): 500 with nothing of its detail. */
export const INTERNAL_ERROR = () => new AppError("internal", "internal error; quote the trace id when reporting it");

export function errorJson(c: Context<AppEnv>, err: AppError): Response {
  const { body, retryAfter } = errorEnvelope(err, c.get("traceId") ?? "");
  if (retryAfter !== undefined) c.header("Retry-After", String(retryAfter));
  return c.json(body, err.status as ContentfulStatusCode);
}

/** Every thrown error becomes the envelope; unexpected ones are logged with the trace id and hidden. */
export const onError: ErrorHandler<AppEnv> = (err, c) => {
  if (err instanceof AppError) return errorJson(c, err);
  if (err instanceof HTTPException && err.status < 500) {
    // Hono's body parsers: malformed JSON, wrong content type.
    const code: ErrorCode = err.status === 401 ? "unauthorized" : err.status === 404 ? "not_found" : "bad_request";
    const emptyBody = c.req.header("content-length") === "0" || (c.req.method !== "GET" && !c.req.raw.body);
    const message = err.message.startsWith("Malformed JSON") && emptyBody
      ? "a JSON request body is required"
      : err.message === "Unsupported Media Type" ? "send the body as application/json" : err.message || "bad request";
    return errorJson(c, new AppError(code, message));
  }
  c.get("logger")?.error("unhandled_error", { error: err instanceof Error ? err.message : String(err), stack: err instanceof Error ? err.stack : undefined });
  return errorJson(c, INTERNAL_ERROR());
};

export const notFound: NotFoundHandler<AppEnv> = (c) =>
  errorJson(c, new AppError("not_found", `no route for ${c.req.method} ${c.req.path}`));

/** zod failures become one 400 naming each failing field. */
export function validationError(error: z.ZodError, target: string): AppError {
  const where = target === "json" ? "request body" : target === "param" ? "path" : target;
  return new AppError("validation_failed", `invalid ${where}`, {
    fields: error.issues.map((i) => ({ path: [target === "json" ? "" : target, ...i.path].filter((p) => p !== "").join("."), message: i.message })),
  });
}
