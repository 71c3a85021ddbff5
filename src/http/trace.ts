import type { MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import { createLogger } from "../log";
import type { AppEnv } from "./context";
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
  const given = c.req.header("x-trace-id");
  const traceId = given && TRACE_ID.test(given) ? given : crypto.randomUUID();
  const logger = createLogger({ trace_id: traceId });
  c.set("traceId", traceId);
  c.set("logger", logger);
  const started = Date.now();
  await next();
  c.res.headers.set("X-Trace-Id", traceId);
  const duration = Date.now() - started;
  // The last matched route is the endpoint's pattern ("/api/execution/:requestId"), a bounded label.
  const route = routePath(c, -1);
  recordLatency(c.req.method, route, c.res.status, duration);
  if (c.env.REQUEST_LOG === "errors" && c.res.status < 400 && duration < SLOW_MS) return;
  const principal = c.get("principal");
  logger.info("request", {
    method: c.req.method,
    path: c.req.path,
    route,
    status: c.res.status,
    duration_ms: duration,
    principal: principal?.kind,
    client_id: principal?.kind === "client" ? principal.clientId : undefined,
    // Routes about one request name it in their path.
    request_id: (c.req.param() as Record<string, string | undefined>).requestId,
  });
};
