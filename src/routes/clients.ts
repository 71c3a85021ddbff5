import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../http/context";

export const clientRoutes = new OpenAPIHono<AppEnv>();
