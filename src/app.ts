import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "./http/context";
import { notFound, onError, validationError } from "./http/errors";
import { declareInputLimits, limitInput } from "./http/limits";
import { traceRequests } from "./http/trace";
import { adminRoutes } from "./routes/admin";
import { alertRoutes } from "./routes/alerts";
import { allocationRoutes } from "./routes/allocations";
import { clientRoutes } from "./routes/clients";
import { costRoutes } from "./routes/cost";
import { dashboardRoutes } from "./routes/dashboard";
import { dashboardDataRoutes } from "./routes/dashboard-data";
import { docsRoutes } from "./routes/docs";
import { docsFileRoutes } from "./routes/docs-files";
import { healthRoutes } from "./routes/health";
import { internalRoutes } from "./routes/internal";
import { mcpRoutes } from "./mcp/server";
import { metricsRoutes } from "./routes/metrics";
import { optimizeRoutes } from "./routes/optimize";
import { poolRoutes } from "./routes/pools";
import { queueRoutes } from "./routes/queue";
import { quotaRoutes } from "./routes/quotas";
import { reportRoutes } from "./routes/reports";
import { resourceRoutes } from "./routes/resources";
import { retentionRoutes } from "./routes/retention";
import { slaRoutes } from "./routes/sla";
import { templateRoutes } from "./routes/templates";
import { usageRoutes } from "./routes/usage";

/** Compose the HTTP app: middleware, route groups, the OpenAPI document, error handling. */
export function createApp() {
  const app = new OpenAPIHono<AppEnv>({
    defaultHook: (result, c) => {
      if (!result.success) throw validationError(result.error, result.target);
    },
  });
  app.use("*", traceRequests);
  // Body size and JSON depth, before any route (or object) sees the body.
  app.use("*", limitInput);
  app.route("/", healthRoutes);
  app.route("/", resourceRoutes);
  app.route("/", usageRoutes);
  app.route("/", costRoutes);
  app.route("/", internalRoutes);
  app.route("/", queueRoutes);
  app.route("/", adminRoutes);
  app.route("/", alertRoutes);
  app.route("/", clientRoutes);
  app.route("/", quotaRoutes);
  app.route("/", allocationRoutes);
  app.route("/", poolRoutes);
  app.route("/", templateRoutes);
  app.route("/", slaRoutes);
  app.route("/", optimizeRoutes);
  app.route("/", reportRoutes);
  app.route("/", retentionRoutes);
  app.route("/", dashboardRoutes);
  app.route("/", dashboardDataRoutes);
  app.route("/", metricsRoutes);
  app.route("/", docsRoutes(app));
  app.route("/", docsFileRoutes());
  app.route("/", mcpRoutes(app));
  declareInputLimits(app);
  app.notFound(notFound);
  app.onError(onError);
  return app;
}
