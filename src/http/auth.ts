import type { MiddlewareHandler } from "hono";
import { AppError } from "../errors";
import { keyOwner } from "../services/config";
import type { AppEnv, Principal } from "./context";

const encoder = new TextEncoder();

export async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", encoder.encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Compare two secrets in constant time: equal-length digests, compared without early exit. */
async function sameSecret(given: string, expected: string | undefined): Promise<boolean> {
  if (!expected) return false;
  const [a, b] = await Promise.all([
    crypto.subtle.digest("SHA-256", encoder.encode(given)),
    crypto.subtle.digest("SHA-256", encoder.encode(expected)),
  ]);
  return crypto.subtle.timingSafeEqual(a, b);
}

function bearer(header: string | undefined): string | null {
  const match = header?.match(/^Bearer\s+(\S+)\s*$/i);
  return match ? match[1]! : null;
}

/** Identify the credential: admin token, internal token, or an active API key. Null when none is valid. */
async function identify(env: Env, token: string): Promise<Principal | null> {
  const [isAdmin, isInternal] = await Promise.all([sameSecret(token, env.ADMIN_TOKEN), sameSecret(token, env.INTERNAL_TOKEN)]);
  if (isAdmin) return { kind: "admin" };
  if (isInternal) return { kind: "internal" };
  const owner = await keyOwner(env, await sha256Hex(token));
  if (!owner) return null;
  if (owner.clientStatus === "suspended") throw new AppError("forbidden", `client ${owner.clientId} is suspended`);
  return { kind: "client", clientId: owner.clientId, tier: owner.tier, scopes: owner.scopes, keyId: owner.keyId };
}

/**
 * Require a valid credential of one of `kinds`: 401 when there is none or it is not valid, 403 when it
 * is valid but of another kind, or its client is suspended.
 */
export function authenticate(...kinds: Principal["kind"][]): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const token = bearer(c.req.header("authorization"));
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
