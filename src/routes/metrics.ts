import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { authenticate } from "../http/auth";
import type { AppEnv } from "../http/context";
import { errorResponses } from "../http/errors";
import { exposition, PROMETHEUS_CONTENT_TYPE } from "../domain/prometheus";
import { collectMetrics } from "../services/metrics";

export const metricsRoutes = new OpenAPIHono<AppEnv>().openapi(
  createRoute({
    method: "get", path: "/metrics", tags: ["health"],
    summary: "Prometheus text format: pools, queues, dispatch counters, request latency, spend, open alerts",
    description: "For a Prometheus scraper with the metrics token (METRICS_TOKEN), or an operator with the admin token. Metric families are listed in docs/operations.md.",
    middleware: [authenticate("admin", "metrics")],
    security: [{ bearer: [] }],
    responses: {
      200: { description: "Text exposition format 0.0.4.", content: { "text/plain": { schema: z.string() } } },
      ...errorResponses("unauthorized", "forbidden"),
    },
  }),
  async (c) => {
    const body = exposition(await collectMetrics(c.env, Date.now()));
    return c.text(body, 200, { "content-type": PROMETHEUS_CONTENT_TYPE, "cache-control": "no-store" });
  },
);
