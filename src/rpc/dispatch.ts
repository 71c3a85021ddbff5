import { AppError, ERRORS } from "../errors";
import { INTERNAL_ERROR } from "../http/errors";
import { traceIdFor } from "../http/trace";
import { log } from "../log";
import { envActingAs, type Identity } from "../http/identity";
import { recordCall } from "../services/call-metrics";
import type { Json, RpcFailure, RpcResult } from "./types";

/** The app's fetch (src/app.ts): in-process calls are answered by the REST routes themselves. */
export type AppFetch = (request: Request, env: Env, ctx: ExecutionContext) => Response | Promise<Response>;

/** A REST operation to run in-process: its method, concrete path, and query fields or JSON body. */
export interface RouteCall {
  method: string;
  path: string;
  query?: Record<string, unknown>;
  body?: unknown;
}

/** Never reached over the network: the origin of in-process requests. */
const ORIGIN = "https://in-process.invalid";

/**
 * Run a REST operation in-process as `identity` and answer as RPC does: the route's body with
 * `ok: true`, or its error envelope with `ok: false` (and Retry-After as `retry_after_s`). The route
 * validates, authorizes (scopes, suspension) and answers exactly as it does over HTTP.
 */
export async function callRoute<T>(
  app: AppFetch, env: Env, ctx: ExecutionContext, identity: Identity, call: RouteCall, traceId: string,
): Promise<RpcResult<T>> {
  const url = new URL(call.path, ORIGIN);
  for (const [k, v] of Object.entries(call.query ?? {})) {
    if (v === undefined || v === null) continue;
    for (const item of Array.isArray(v) ? v : [v]) url.searchParams.append(k, typeof item === "string" ? item : JSON.stringify(item));
  }
  const headers: Record<string, string> = { "x-trace-id": traceId };
  let body: string | undefined;
  if (call.body !== undefined) {
    headers["content-type"] = "application/json";
    body = jsonOf(call.body);
  }
  const response = await app(new Request(url, { method: call.method, headers, body }), envActingAs(env, identity), ctx);
  const answer = (await response.json()) as Record<string, unknown>;
  if (response.status < 400) return { ok: true, ...answer } as RpcResult<T>;
  const failure = { ok: false, ...answer } as unknown as RpcFailure;
  const retryAfter = Number(response.headers.get("retry-after"));
  if (Number.isSafeInteger(retryAfter) && retryAfter > 0) failure.retry_after_s = retryAfter;
  return failure;
}

/** An error before the route was reached (bad input, unknown client), as the route would answer it. */
export function failureOf(err: unknown, traceId: string, where: { via: string; method: string }): RpcFailure {
  if (!(err instanceof AppError)) {
    log.error("unhandled_error", { ...where, trace_id: traceId, error: err instanceof Error ? err.message : String(err), stack: err instanceof Error ? err.stack : undefined });
  }
  const e = err instanceof AppError ? err : INTERNAL_ERROR();
  return { ok: false, error: { code: e.code, message: e.message, ...(e.details ? { details: e.details as Record<string, Json> } : {}) }, trace_id: traceId };
}

/** The caller's trace id when well formed (the same rule as X-Trace-Id), else a new one. */
export function traceIdOf(given: unknown): string {
  return traceIdFor(typeof given === "string" ? given : undefined);
}

/**
 * One log line and one count per call: method (or tool), client, outcome (ok or the error code),
 * duration and trace id. Failures the caller caused are info; the service's own (5xx) are errors.
 */
export function callEnded(via: "rpc" | "mcp", method: string, clientId: string | null, result: RpcResult<unknown>, started: number, traceId: string): void {
  const durationMs = Date.now() - started;
  const outcome = result.ok ? "ok" : result.error.code;
  recordCall(via, method, outcome, durationMs);
  const fields = { via, method, client_id: clientId, outcome, duration_ms: durationMs, trace_id: traceId };
  if (!result.ok && (ERRORS[result.error.code]?.status ?? 500) >= 500) log.error(via, fields);
  else log.info(via, fields);
}

function jsonOf(value: unknown): string {
  try {
    const text = JSON.stringify(value);
    if (text !== undefined) return text;
  } catch {
    // A cycle or a BigInt: not JSON, so not REST's input either.
  }
  throw new AppError("validation_failed", "the input is not JSON", { fields: [{ path: "", message: "not representable as JSON" }] });
}
