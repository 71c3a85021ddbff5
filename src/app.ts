import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "./http/context";
import { notFound, onError, validationError } from "./http/errors";
import { traceRequests } from "./http/trace";
import { adminRoutes } from "./routes/admin";
import { alertRoutes } from "./routes/alerts";
import { costRoutes } from "./routes/cost";
import { healthRoutes } from "./routes/health";
import { internalRoutes } from "./routes/internal";
import { queueRoutes } from "./routes/queue";
import { resourceRoutes } from "./routes/resources";
import { usageRoutes } from "./routes/usage";

/** Compose the HTTP app: middleware, route groups, the OpenAPI document, error handling. */
export function createApp() {
  const app = new OpenAPIHono<AppEnv>({
    defaultHook: (result, c) => {
      if (!result.success) throw validationError(result.error, result.target);
    },
  });
  app.use("*", traceRequests);
  app.route("/", healthRoutes);
  app.route("/", resourceRoutes);
  app.route("/", usageRoutes);
  app.route("/", costRoutes);
  app.route("/", internalRoutes);
  app.route("/", queueRoutes);
  app.route("/", adminRoutes);
  app.route("/", alertRoutes);
  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", {
    type: "http",
    scheme: "bearer",
    description: "An API key (rmk_...) on /api, the internal token on /internal, the admin token on /admin",
  });
  app.doc31("/openapi.json", {
    openapi: "3.1.0",
    info: { title: "Resource Manager", version: "0.1.0", description: "Rate limits, quotas, capacity and money for the AI platform. Money is integer nano-dollars; times are epoch ms UTC." },
  });
  app.notFound(notFound);
  app.onError(onError);
  return app;
}
