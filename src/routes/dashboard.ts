import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context, MiddlewareHandler } from "hono";
import { AppError } from "../errors";
import { authenticate, isAdminToken } from "../http/auth";
import type { AppEnv } from "../http/context";
import { errorResponses } from "../http/errors";
import { endSession, hasSessionCookie, startSession } from "../http/session";
import { dashboardState } from "../services/dashboard";
import { contentSecurityPolicy, dashboardPage, dashboardPanels, loginPage } from "../views/dashboard";

const LoginForm = z.object({ token: z.string().min(1).max(1024) }).openapi("DashboardLogin");

const HtmlPage = (description: string) => ({ description, content: { "text/html": { schema: z.string() } } });

/** A refused login: the form again for a browser, the error envelope for any other client. */
const LoginRefused = {
  description: "Not the admin token: the login form again, with the reason (text/html), or the error envelope.",
  content: { ...errorResponses("unauthorized")[401]!.content, "text/html": { schema: z.string() } },
};

/**
 * Headers of every dashboard page: a per-response script nonce, no framing, no caching, and the
 * referrer only to this origin ("no-referrer" would make Chromium send `Origin: null` with the login
 * form, which the login refuses as it would any other origin).
 */
function pageHeaders(c: Context<AppEnv>): string {
  const nonce = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
  c.header("Content-Security-Policy", contentSecurityPolicy(nonce));
  c.header("X-Content-Type-Options", "nosniff");
  c.header("X-Frame-Options", "DENY");
  c.header("Referrer-Policy", "same-origin");
  c.header("Cache-Control", "no-store");
  return nonce;
}

/**
 * The dashboard takes the admin token as a header (curl, scripts) or the session cookie (a browser);
 * with neither, it answers the login form instead of an error, since a person is at the other end.
 */
const adminOrLogin: MiddlewareHandler<AppEnv> = async (c, next) => {
  if (!c.req.header("authorization") && !hasSessionCookie(c)) return c.html(loginPage(pageHeaders(c), null), 200);
  return authenticate("admin")(c, next);
};

export const dashboardRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      // Public in the document's sense: a caller without a credential gets the login form, not a 401.
      method: "get", path: "/admin/dashboard", tags: ["admin"], security: [], middleware: [adminOrLogin],
      summary: "The operator's dashboard (HTML): pools, queues, budgets, open alerts, failures, scaling events",
      description: "Without a credential: the login form. With the admin token (Authorization: Bearer), or the session cookie the form starts: the page, which refreshes its panels every 5 s and acts through the admin API.",
      responses: { 200: HtmlPage("The dashboard, or the login form."), ...errorResponses("unauthorized", "forbidden") },
    }),
    async (c) => c.html(dashboardPage(await dashboardState(c.env, Date.now()), pageHeaders(c)), 200),
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/dashboard/panels", tags: ["admin"], security: [{ bearer: [] }], middleware: [authenticate("admin")],
      summary: "The dashboard's panels as an HTML fragment (what the page fetches to refresh itself)",
      responses: { 200: HtmlPage("The panels."), ...errorResponses("unauthorized", "forbidden") },
    }),
    async (c) => {
      pageHeaders(c);
      return c.html(dashboardPanels(await dashboardState(c.env, Date.now())), 200);
    },
  )
  .openapi(
    createRoute({
      method: "post", path: "/admin/dashboard/session", tags: ["admin"], security: [],
      summary: "Log in to the dashboard: trade the admin token for a 12-hour session cookie",
      description: "The cookie (HttpOnly, Secure, SameSite=Strict, Path=/admin) holds an HMAC-signed expiry, never the token. It authenticates /admin/* calls; those that change state must also send X-Requested-With.",
      request: { body: { required: true, content: { "application/x-www-form-urlencoded": { schema: LoginForm } } } },
      responses: {
        303: { description: "Logged in: redirected to the dashboard, with the cookie set." },
        401: LoginRefused,
        ...errorResponses("bad_request", "validation_failed", "forbidden"),
      },
    }),
    async (c) => {
      // A login posted from another site's page would sign this browser in to a session it did not ask for.
      const origin = c.req.header("origin");
      if (origin && origin !== new URL(c.req.url).origin) throw new AppError("forbidden", "log in from the dashboard's own page", { origin, expected: new URL(c.req.url).origin });
      const { token } = c.req.valid("form");
      if (!(await isAdminToken(c.env, token)) || !(await startSession(c, Date.now()))) {
        c.var.logger.warn("dashboard_login_failed", {});
        if (!c.req.header("accept")?.includes("text/html")) throw new AppError("unauthorized", "not the admin token");
        return c.html(loginPage(pageHeaders(c), "That is not the admin token."), 401);
      }
      c.var.logger.info("dashboard_login", {});
      return c.redirect("/admin/dashboard", 303);
    },
  )
  .openapi(
    createRoute({
      method: "post", path: "/admin/dashboard/logout", tags: ["admin"], security: [{ bearer: [] }], middleware: [authenticate("admin")],
      summary: "End the dashboard session: clear its cookie",
      responses: { 204: { description: "The cookie is cleared." }, ...errorResponses("unauthorized", "forbidden") },
    }),
    (c) => {
      endSession(c);
      return c.body(null, 204);
    },
  );
