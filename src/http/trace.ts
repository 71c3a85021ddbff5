import type { MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import { createLogger, type Logger } from "../log";
import type { AppEnv, Principal } from "./context";
import { recordLatency } from "./latency";

const TRACE_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** A request slower than this is always logged, whatever REQUEST_LOG says. */
const SLOW_MS = 1000;

/**
 * Accept the caller's X-Trace-Id (when well formed) or make one; return it as a header; give the
 * request a logger that stamps it on every line; log one line per request when it ends. REQUEST_LOG
 * "errors" keeps only failed (status >= 400) and slow requests: for very hot deployments where the
 * platform's own invocation log already records every request. Default "all".
 */
export const traceRequests: MiddlewareHandler<AppEnv> = async (c, next) => {
  const traceId = traceIdFor(c.req.header("x-trace-id"));
  const logger = createLogger({ trace_id: traceId });
  c.set("traceId", traceId);
  c.set("logger", logger);
  const started = Date.now();
  await next();
  c.res.headers.set("X-Trace-Id", traceId);
  const duration = Date.now() - started;
  // The last matched route is the endpoint's pattern ("/api/execution/:requestId"), a bounded label.
  const route = routePath(c, -1);
  // Routes about one request name it in their path.
  const requestId = (c.req.param() as Record<string, string | undefined>).requestId;
  requestEnded(c.env, logger, { method: c.req.method, path: c.req.path, route, status: c.res.status, durationMs: duration, principal: c.get("principal"), requestId });
};

/** The caller's X-Trace-Id when well formed, else a new one. */
export function traceIdFor(given: string | undefined): string {
  return given && TRACE_ID.test(given) ? given : crypto.randomUUID();
}

/**
 * A request is answered: count its latency under its route pattern and log its line (unless REQUEST_LOG
 * is "errors" and it neither failed nor was slow). The app's middleware and the hot path both end here.
 */
export function requestEnded(
  env: Env,
  logger: Logger,
  r: { method: string; path: string; route: string; status: number; durationMs: number; principal?: Principal; requestId?: string },
): void {
  recordLatency(r.method, r.route, r.status, r.durationMs);
  if (env.REQUEST_LOG === "errors" && r.status < 400 && r.durationMs < SLOW_MS) return;
  logger.info("request", {
    method: r.method,
    path: r.path,
    route: r.route,
    status: r.status,
    duration_ms: r.durationMs,
    principal: r.principal?.kind,
    client_id: r.principal?.kind === "client" ? r.principal.clientId : undefined,
    request_id: r.requestId,
  });
}
