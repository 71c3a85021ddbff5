import { base64url, fromBase64url } from "../domain/base64url";
import type { Context } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import { AppError } from "../errors";
import { insertSession, isSessionActive, revokeSession } from "../storage/admin-sessions";
import type { AppEnv } from "./context";

/**
 * The dashboard's operator session. A browser cannot send the admin token as a header when it
 * navigates, so the login form trades the token once for a cookie that holds an HMAC-signed expiry
 * and session id, never the token. The signing key is derived from ADMIN_TOKEN: rotating the token
 * ends every session. The id names a row in D1 `admin_sessions`, read on every cookie-authenticated
 * request (no isolate cache, so a logout holds everywhere at once): logging out revokes it.
 * The cookie is HttpOnly (no script reads it), Secure, SameSite=Strict (no other site's page sends it)
 * and scoped to /admin; it is accepted on /admin/* only. Cookie-authenticated calls that change state
 * must carry the X-Requested-With header, which a cross-site form cannot send and a cross-site script
 * cannot send without a CORS preflight that this service never grants.
 */
export const SESSION_COOKIE = "rm_admin_session";
export const SESSION_TTL_MS = 12 * 60 * 60 * 1000;
export const CSRF_HEADER = "x-requested-with";

const encoder = new TextEncoder();
const FORMAT = /^v1\.(\d{13})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})$/;
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/** Keys derived per secret, once per isolate. */
const keys = new Map<string, Promise<CryptoKey>>();

function sessionKey(secret: string): Promise<CryptoKey> {
  let key = keys.get(secret);
  if (!key) {
    key = crypto.subtle
      .importKey("raw", encoder.encode(secret), "HKDF", false, ["deriveKey"])
      .then((material) => crypto.subtle.deriveKey(
        { name: "HKDF", hash: "SHA-256", salt: encoder.encode("resource-manager"), info: encoder.encode("dashboard-session-v1") },
        material, { name: "HMAC", hash: "SHA-256", length: 256 }, false, ["sign", "verify"],
      ));
    keys.set(secret, key);
  }
  return key;
}

/**
 * A session value valid until `now` + SESSION_TTL_MS: "v1.<expiry ms>.<session id>.<HMAC of the rest>",
 * the id 16 random bytes. Null without an admin token. Signing alone starts nothing: see startSession.
 */
export async function signSession(env: Env, now: number, id = base64url(crypto.getRandomValues(new Uint8Array(16)))): Promise<string | null> {
  if (!env.ADMIN_TOKEN) return null;
  const body = `v1.${now + SESSION_TTL_MS}.${id}`;
  const mac = await crypto.subtle.sign("HMAC", await sessionKey(env.ADMIN_TOKEN), encoder.encode(body));
  return `${body}.${base64url(mac)}`;
}

/**
 * The session id of a value that is well formed, signed with the current key (compared in constant
 * time) and not expired; null otherwise. Whether the session was revoked is D1's to say.
 */
export async function verifySession(env: Env, value: string, now: number): Promise<string | null> {
  const match = FORMAT.exec(value);
  if (!match || !env.ADMIN_TOKEN) return null;
  const expires = Number(match[1]);
  if (expires <= now || expires > now + SESSION_TTL_MS) return null;
  const body = value.slice(0, value.lastIndexOf("."));
  const signed = await crypto.subtle.verify("HMAC", await sessionKey(env.ADMIN_TOKEN), fromBase64url(match[3]!), encoder.encode(body));
  return signed ? match[2]! : null;
}

const COOKIE_OPTIONS = { path: "/admin", httpOnly: true, secure: true, sameSite: "Strict" } as const;

/** Record a new session in D1 (pruning expired ones) and set its cookie; false without an admin token. */
export async function startSession(c: Context<AppEnv>, now: number): Promise<boolean> {
  const id = base64url(crypto.getRandomValues(new Uint8Array(16)));
  const value = await signSession(c.env, now, id);
  if (!value) return false;
  await insertSession(c.env.DB, id, now, now + SESSION_TTL_MS);
  setCookie(c, SESSION_COOKIE, value, { ...COOKIE_OPTIONS, maxAge: SESSION_TTL_MS / 1000 });
  return true;
}

/** Revoke the session the request's cookie names, if it is a valid one, and clear the cookie. */
export async function endSession(c: Context<AppEnv>, now: number): Promise<void> {
  const value = getCookie(c, SESSION_COOKIE);
  const id = value === undefined ? null : await verifySession(c.env, value, now);
  if (id) await revokeSession(c.env.DB, id, now);
  deleteCookie(c, SESSION_COOKIE, COOKIE_OPTIONS);
}

/** Whether the request carries a session cookie at all (valid or not). */
export function hasSessionCookie(c: Context<AppEnv>): boolean {
  return getCookie(c, SESSION_COOKIE) !== undefined;
}

/**
 * The operator's session, for a request without an Authorization header: false when there is no
 * cookie or the path is not under /admin/; 401 when the cookie is not valid (expired, tampered,
 * signed before a token rotation, logged out, unknown to D1); 403 when a state-changing call lacks
 * the CSRF header.
 */
export async function adminSession(c: Context<AppEnv>): Promise<boolean> {
  const value = getCookie(c, SESSION_COOKIE);
  if (value === undefined || !c.req.path.startsWith("/admin/")) return false;
  const now = Date.now();
  // The signature first: a forged or stale cookie costs no D1 read.
  const id = await verifySession(c.env, value, now);
  if (!id || !(await isSessionActive(c.env.DB, id, now))) {
    throw new AppError("unauthorized", "the dashboard session expired, was logged out or is not valid: log in again at /admin/dashboard");
  }
  if (!SAFE_METHODS.has(c.req.method) && !c.req.header(CSRF_HEADER)) {
    throw new AppError("forbidden", `a session-authenticated ${c.req.method} must carry the X-Requested-With header`);
  }
  return true;
}
