import type { MiddlewareHandler } from "hono";
import { AppError } from "../errors";
import { keyOwner } from "../services/config";
import type { AppEnv, Principal } from "./context";
import { adminSession } from "./session";

const encoder = new TextEncoder();

export async function sha256Hex(text: string): Promise<string> {
  return hex(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
}

/** Digests of the configured secrets, made once per isolate (the secrets do not change while it lives). */
const secretDigests = new Map<string, Promise<ArrayBuffer>>();

function digestOfSecret(secret: string): Promise<ArrayBuffer> {
  let digest = secretDigests.get(secret);
  if (!digest) {
    digest = crypto.subtle.digest("SHA-256", encoder.encode(secret));
    secretDigests.set(secret, digest);
  }
  return digest;
}

/** Compare a presented token's digest with a secret's in constant time (equal-length digests, no early exit). */
async function sameSecret(given: ArrayBuffer, expected: string | undefined): Promise<boolean> {
  if (!expected) return false;
  return crypto.subtle.timingSafeEqual(given, await digestOfSecret(expected));
}

function hex(digest: ArrayBuffer): string {
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function bearer(header: string | undefined): string | null {
  const match = header?.match(/^Bearer\s+(\S+)\s*$/i);
  return match ? match[1]! : null;
}

/** Whether `token` is the admin token (compared in constant time): the dashboard's login form. */
export async function isAdminToken(env: Env, token: string): Promise<boolean> {
  return sameSecret(await crypto.subtle.digest("SHA-256", encoder.encode(token)), env.ADMIN_TOKEN);
}

/** Identify the credential: admin, internal or metrics token, or an active API key. Null when none is valid. */
async function identify(env: Env, token: string): Promise<Principal | null> {
  const digest = await crypto.subtle.digest("SHA-256", encoder.encode(token));
  const [isAdmin, isInternal, isMetrics] = await Promise.all([
    sameSecret(digest, env.ADMIN_TOKEN), sameSecret(digest, env.INTERNAL_TOKEN), sameSecret(digest, env.METRICS_TOKEN),
  ]);
  if (isAdmin) return { kind: "admin" };
  if (isInternal) return { kind: "internal" };
  if (isMetrics) return { kind: "metrics" };
  const owner = await keyOwner(env, hex(digest));
  if (!owner) return null;
  if (owner.clientStatus === "suspended") throw new AppError("forbidden", `client ${owner.clientId} is suspended`);
  return { kind: "client", clientId: owner.clientId, tier: owner.tier, scopes: owner.scopes, keyId: owner.keyId };
}

/**
 * Require a valid credential of one of `kinds`: 401 when there is none or it is not valid, 403 when it
 * is valid but of another kind, or its client is suspended. Admin routes also take the dashboard's
 * session cookie in place of the header (see ./session.ts).
 */
export function authenticate(...kinds: Principal["kind"][]): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const token = bearer(c.req.header("authorization"));
    if (!c.req.header("authorization") && kinds.includes("admin") && (await adminSession(c))) {
      c.set("principal", { kind: "admin" });
      await next();
      return;
    }
    if (!token) throw new AppError("unauthorized", "missing credential: send Authorization: Bearer <token>");
    const principal = await identify(c.env, token);
    if (!principal) throw new AppError("unauthorized", "credential not valid");
    c.set("principal", principal);
    if (!kinds.includes(principal.kind)) throw new AppError("forbidden", `a ${principal.kind} credential may not call ${c.req.path}`);
    await next();
  };
}

/** Require an API-key scope; operators (admin) pass every scope check. */
export function requireScope(scope: string): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const p = c.get("principal");
    if (p.kind === "client" && !p.scopes.includes(scope)) {
      throw new AppError("forbidden", `this API key lacks the ${scope} scope`, { required_scope: scope });
    }
    await next();
  };
}
