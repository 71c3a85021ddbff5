import type { MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import { createLogger, type Logger } from "../log";
import { identityOf } from "./identity";
import type { AppEnv, Principal } from "./context";
import { recordLatency } from "../services/latency";
import { settings } from "../settings";

const TRACE_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** A request slower than this is always logged, whatever REQUEST_LOG says. */
const SLOW_MS = 1000;

/**
 * Accept the caller's X-Trace-Id (when well formed) or make one; return it as a header; give the
 * request a logger that stamps it on every line; log one line per request when it ends, as
 * REQUEST_LOG says (see requestEnded).
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
  // An in-process call (RPC, an MCP tool: src/rpc/dispatch.ts) writes its own line and metric.
  if (identityOf(c.env)) return;
  requestEnded(c.env, logger, { method: c.req.method, path: c.req.path, route, status: c.res.status, durationMs: duration, principal: c.get("principal"), requestId });
};

/** The caller's X-Trace-Id when well formed, else a new one. */
export function traceIdFor(given: string | undefined): string {
  return given && TRACE_ID.test(given) ? given : crypto.randomUUID();
}

/**
 * A request is answered: count its latency under its route pattern and log its line, as REQUEST_LOG says.
 * "all": every request. "errors" (the default): every failure — a 5xx, or a 4xx other than 429 — and
 * every request slower than 1 s, plus one in REQUEST_LOG_SAMPLE of the others (default 100; 0: none),
 * marked with `sampled_one_in`. A 429 is a limiter's ordinary answer under load, so it is sampled too:
 * refusals per pool are counted in /metrics (rm_pool_consumes_total), where nothing is sampled. Under
 * `wrangler dev` a line per consume halved the hot path's throughput (docs/benchmarks.md). The app's
 * middleware and the hot path both end here.
 */
export function requestEnded(
  env: Env,
  logger: Logger,
  r: { method: string; path: string; route: string; status: number; durationMs: number; principal?: Principal; requestId?: string },
): void {
  recordLatency(r.method, r.route, r.status, r.durationMs);
  let sampledOneIn: number | undefined;
  if (settings(env).REQUEST_LOG !== "all" && r.durationMs < SLOW_MS && (r.status < 400 || r.status === 429)) {
    sampledOneIn = sampleEvery(env);
    // Counted per isolate: deterministic (no randomness on the hot path, none in tests) and even.
    if (sampledOneIn === 0 || ++unlogged % sampledOneIn !== 0) return;
  }
  logger.info("request", {
    method: r.method,
    path: r.path,
    route: r.route,
    status: r.status,
    duration_ms: r.durationMs,
    principal: r.principal?.kind,
    client_id: r.principal?.kind === "client" ? r.principal.clientId : undefined,
    request_id: r.requestId,
    sampled_one_in: sampledOneIn,
  });
}

/** Requests not logged since this isolate started (the sample counts them). */
let unlogged = 0;
/** One in how many of the requests that need no line is logged anyway: REQUEST_LOG_SAMPLE (0: none). */
function sampleEvery(env: Env): number {
  return settings(env).REQUEST_LOG_SAMPLE;
}
