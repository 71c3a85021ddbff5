import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { MiddlewareHandler } from "hono";
import { AppError } from "../errors";
import { authenticate, isAdminToken } from "../http/auth";
import type { AppEnv } from "../http/context";
import { errorResponses } from "../http/errors";
import { dashboardHeaders, dashboardNonce } from "../http/page-headers";
import { endSession, hasSessionCookie, startSession } from "../http/session";
import { sourceAddress } from "../domain/source-address";
import { dashboardState } from "../services/dashboard";
import { admitLoginAttempt, LOGIN_MAX_FAILURES, LOGIN_WINDOW_MS, loginSucceeded } from "../services/login-limit";
import { dashboardPage, dashboardPanels, loginPage } from "../views/dashboard";

const LoginForm = z.object({ token: z.string().min(1).max(1024) }).openapi("DashboardLogin");

const HtmlPage = (description: string) => ({ description, content: { "text/html": { schema: z.string() } } });

/** A refused login: the form again for a browser, the error envelope for any other client. */
const LoginRefused = {
  description: "Not the admin token: the login form again, with the reason (text/html), or the error envelope.",
  content: { ...errorResponses("unauthorized")[401]!.content, "text/html": { schema: z.string() } },
};

/** Too many failed logins from this address: the form again with the wait, or the envelope; Retry-After either way. */
const LoginLimited = {
  ...errorResponses("rate_limited")[429]!,
  description: `\`rate_limited\`: more than ${LOGIN_MAX_FAILURES} failed logins from this address in ${LOGIN_WINDOW_MS / 60_000} minutes; every attempt, the right token included, is refused until Retry-After. The login form again (text/html), or the error envelope with details.retry_after_ms.`,
  content: { ...errorResponses("rate_limited")[429]!.content, "text/html": { schema: z.string() } },
};

/**
 * The dashboard takes the admin token as a header (curl, scripts) or the session cookie (a browser);
 * with neither, it answers the login form instead of an error, since a person is at the other end.
 */
const adminOrLogin: MiddlewareHandler<AppEnv> = async (c, next) => {
  if (!c.req.header("authorization") && !hasSessionCookie(c)) return c.html(loginPage(dashboardNonce(c), null), 200);
  return authenticate("admin")(c, next);
};

export const dashboardRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      // Public in the document's sense: a caller without a credential gets the login form, not a 401.
      method: "get", path: "/admin/dashboard", tags: ["admin"], security: [], middleware: [dashboardHeaders, adminOrLogin],
      summary: "The operator's dashboard (HTML): pools, queues, budgets, open alerts, failures, scaling events",
      description: "Without a credential: the login form. With the admin token (Authorization: Bearer), or the session cookie the form starts: the page, which refreshes its panels every 5 s and acts through the admin API.",
      responses: { 200: HtmlPage("The dashboard, or the login form."), ...errorResponses("unauthorized", "forbidden") },
    }),
    async (c) => c.html(dashboardPage(await dashboardState(c.env, Date.now()), dashboardNonce(c)), 200),
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/dashboard/panels", tags: ["admin"], security: [{ bearer: [] }], middleware: [dashboardHeaders, authenticate("admin")],
      summary: "The dashboard's panels as an HTML fragment (what the page fetches to refresh itself)",
      responses: { 200: HtmlPage("The panels."), ...errorResponses("unauthorized", "forbidden") },
    }),
    async (c) => c.html(dashboardPanels(await dashboardState(c.env, Date.now())), 200),
  )
  .openapi(
    createRoute({
      method: "post", path: "/admin/dashboard/session", tags: ["admin"], security: [], middleware: [dashboardHeaders],
      summary: "Log in to the dashboard: trade the admin token for a 12-hour session cookie",
      description: `The cookie (HttpOnly, Secure, SameSite=Strict, Path=/admin) holds an HMAC-signed expiry and session id, never the token. It authenticates /admin/* calls until it expires or is logged out; those that change state must also send X-Requested-With. At most ${LOGIN_MAX_FAILURES} failed logins per source address (CF-Connecting-IP) in ${LOGIN_WINDOW_MS / 60_000} minutes; then 429 until the window ends.`,
      request: { body: { required: true, content: { "application/x-www-form-urlencoded": { schema: LoginForm } } } },
      responses: {
        303: { description: "Logged in: redirected to the dashboard, with the cookie set." },
        401: LoginRefused,
        429: LoginLimited,
        ...errorResponses("bad_request", "validation_failed", "forbidden"),
      },
    }),
    async (c) => {
      // A login posted from another site's page would sign this browser in to a session it did not ask for.
      const origin = c.req.header("origin");
      if (origin && origin !== new URL(c.req.url).origin) throw new AppError("forbidden", "log in from the dashboard's own page", { origin, expected: new URL(c.req.url).origin });
      const { token } = c.req.valid("form");
      const browser = c.req.header("accept")?.includes("text/html") ?? false;
      const source = sourceAddress(c.req.header("cf-connecting-ip"));
      // Counted before the token is checked, so that concurrent guesses cannot exceed the limit.
      const locked = await admitLoginAttempt(c.env, source, Date.now());
      if (locked) {
        const retryAfterSec = Math.ceil(locked.retryAfterMs / 1000);
        c.var.logger.warn("dashboard_login_limited", { source, retry_after_ms: locked.retryAfterMs });
        const message = `too many failed logins from this address: try again in ${retryAfterSec} s`;
        const details = { retry_after_ms: locked.retryAfterMs, max_failures: LOGIN_MAX_FAILURES, window_ms: LOGIN_WINDOW_MS };
        if (!browser) throw new AppError("rate_limited", message, details, retryAfterSec);
        c.header("Retry-After", String(retryAfterSec));
        return c.html(loginPage(dashboardNonce(c), `Too many failed logins from this address: try again in ${Math.ceil(retryAfterSec / 60)} min.`), 429);
      }
      if (!(await isAdminToken(c.env, token)) || !(await startSession(c, Date.now()))) {
        c.var.logger.warn("dashboard_login_failed", { source });
        if (!browser) throw new AppError("unauthorized", "not the admin token");
        return c.html(loginPage(dashboardNonce(c), "That is not the admin token."), 401);
      }
      await loginSucceeded(c.env, source);
      c.var.logger.info("dashboard_login", { source });
      return c.redirect("/admin/dashboard", 303);
    },
  )
  .openapi(
    createRoute({
      method: "post", path: "/admin/dashboard/logout", tags: ["admin"], security: [{ bearer: [] }], middleware: [authenticate("admin")],
      summary: "End the dashboard session: revoke it on the server and clear its cookie",
      description: "The session the cookie names is revoked in D1: the cookie is refused (401) from then on, wherever it is sent from. Other sessions stay.",
      responses: { 204: { description: "The session is revoked and the cookie cleared." }, ...errorResponses("unauthorized", "forbidden") },
    }),
    async (c) => {
      await endSession(c, Date.now());
      return c.body(null, 204);
    },
  );
