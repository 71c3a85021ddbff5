import type { Context, MiddlewareHandler } from "hono";
import { NONCE, secureHeaders } from "hono/secure-headers";

/**
 * The security headers of the service's HTML pages, in one place (hono/secure-headers): a content
 * security policy that loads nothing from another origin and runs no script the page did not name,
 * no framing, no MIME sniffing, plus hono's other defaults (HSTS, COOP, CORP, ...).
 */
const SELF_ONLY = {
  defaultSrc: ["'none'"],
  connectSrc: ["'self'"],
  baseUri: ["'none'"],
  frameAncestors: ["'none'"],
};

const dashboard = secureHeaders({
  // The page's one inline style and script carry a fresh nonce per response (dashboardNonce).
  contentSecurityPolicy: { ...SELF_ONLY, scriptSrc: [NONCE], styleSrc: [NONCE], imgSrc: ["data:"], formAction: ["'self'"] },
  xFrameOptions: "DENY",
  // Not "no-referrer": Chromium would send `Origin: null` with the login form, which the login refuses.
  referrerPolicy: "same-origin",
});

/** The dashboard and its login form: the headers above, and never cached (the page shows live state). */
export const dashboardHeaders: MiddlewareHandler = async (c, next) => {
  await dashboard(c, next);
  c.res.headers.set("Cache-Control", "no-store");
};

/** The nonce dashboardHeaders put in this response's policy. */
export function dashboardNonce(c: Context): string {
  const nonce = c.get("secureHeadersNonce");
  if (!nonce) throw new Error("a dashboard page without dashboardHeaders");
  return nonce;
}

/**
 * /docs: Swagger UI's bundle, its stylesheet and the page's init script are files of this origin
 * (src/routes/docs-files.ts), so no nonce is needed. Swagger UI sets its run-time styles through the DOM's
 * style properties, which style-src does not restrict: no 'unsafe-inline' (test/browser checks it).
 */
export const docsHeaders = secureHeaders({
  contentSecurityPolicy: {
    ...SELF_ONLY, scriptSrc: ["'self'"], styleSrc: ["'self'"], imgSrc: ["'self'", "data:"], formAction: ["'none'"],
  },
  xFrameOptions: "DENY",
});
