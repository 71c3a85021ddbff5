import type { MiddlewareHandler } from "hono";
import { createLogger } from "../log";
import type { AppEnv } from "./context";

const TRACE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Accept the caller's X-Trace-Id (when well formed) or make one; return it as a header; give the
 * request a logger that stamps it on every line; log one line per request when it ends.
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
  const principal = c.get("principal");
  logger.info("request", {
    method: c.req.method,
    path: c.req.path,
    status: c.res.status,
    duration_ms: Date.now() - started,
    principal: principal?.kind,
    client_id: principal?.kind === "client" ? principal.clientId : undefined,
  });
};
