import type { MiddlewareHandler } from "hono";
import { hex, sha256Hex } from "../domain/digest";
import type { Scope } from "../domain/scopes";
import { AppError } from "../errors";
import { keyOwner } from "../storage/config";
import { identityOf } from "./identity";
import type { AppEnv, Principal } from "./context";
import { adminSession } from "./session";

const encoder = new TextEncoder();

// Re-exported: callers that check a credential read the digest from here (it lives in the domain).
export { sha256Hex };

/** Digests of the configured secrets, made once per isolate (the secrets do not change while it lives). */
const secretDigests = new Map<string, ArrayBuffer>();
/**
 * Digests of recently presented credentials, so that a caller's every request does not hash its token
 * again (the hot path: a worker calling /internal/consume with the same token). Bounded: when full its
 * oldest entry goes, one at a time. A hit only tells a caller that the token it holds was presented before.
 */
const presentedDigests = new Map<string, ArrayBuffer>();
const PRESENTED_DIGESTS_MAX = 1024;

async function digestOf(text: string, cache: Map<string, ArrayBuffer>): Promise<ArrayBuffer> {
  const digest = await crypto.subtle.digest("SHA-256", encoder.encode(text));
  if (cache.size >= PRESENTED_DIGESTS_MAX) cache.delete(cache.keys().next().value!);
  cache.set(text, digest);
  return digest;
}

/** The digests of these secrets (made on first use). */
async function digestSecrets(secrets: Array<string | undefined>): Promise<void> {
  for (const secret of secrets) if (secret && !secretDigests.has(secret)) await digestOf(secret, secretDigests);
}

/** Compare a presented token's digest with a secret's in constant time (equal-length digests, no early exit). */
function sameSecret(given: ArrayBuffer, expected: string | undefined): boolean {
  const digest = expected ? secretDigests.get(expected) : undefined;
  return digest !== undefined && crypto.subtle.timingSafeEqual(given, digest);
}

export function bearer(header: string | undefined): string | null {
  const match = header?.match(/^Bearer\s+(\S+)\s*$/i);
  return match ? match[1]! : null;
}

/** Whether `token` is the admin token (compared in constant time): the dashboard's login form. */
export async function isAdminToken(env: Env, token: string): Promise<boolean> {
  await digestSecrets([env.ADMIN_TOKEN]);
  return sameSecret(await crypto.subtle.digest("SHA-256", encoder.encode(token)), env.ADMIN_TOKEN);
}

/** The answers for the configured secrets: one frozen object each, shared by every request. */
const SECRET_IDENTITIES = {
  admin: Object.freeze({ principal: Object.freeze({ kind: "admin" as const }), suspended: false }),
  internal: Object.freeze({ principal: Object.freeze({ kind: "internal" as const }), suspended: false }),
  metrics: Object.freeze({ principal: Object.freeze({ kind: "metrics" as const }), suspended: false }),
};
/**
 * Tokens already proved equal to a configured secret, with the secrets they were proved against: the
 * hot path's caller presents the same token on every request, and the digest lookup, three constant-time
 * comparisons and their awaits were about 2% of the isolate's profile under load. Only a token that is a
 * secret gets an entry (presentedDigests above already keys on presented tokens the same way); a changed
 * secret misses and is compared again.
 * API keys are not kept here: they can be revoked (their owner is cached with a TTL in the config).
 */
const secretHolders = new Map<string, { admin?: string; internal?: string; metrics?: string; identity: { principal: Principal; suspended: boolean } }>();
const SECRET_HOLDERS_MAX = 16;

/** The identity of a token already proved equal to one of env's secrets (no await), else null. */
export function knownSecret(env: Env, token: string): { principal: Principal; suspended: boolean } | null {
  const known = secretHolders.get(token);
  return known && known.admin === env.ADMIN_TOKEN && known.internal === env.INTERNAL_TOKEN && known.metrics === env.METRICS_TOKEN ? known.identity : null;
}

/** A suspended client's key may still read (these methods); anything else is new work and refused. */
const READ_METHODS = new Set(["GET", "HEAD"]);

/**
 * Identify the credential: admin, internal or metrics token, or an active API key (with whether its
 * client is suspended). Null when none is valid.
 */
export async function identify(env: Env, token: string): Promise<{ principal: Principal; suspended: boolean } | null> {
  const known = knownSecret(env, token);
  if (known) return known;
  const digest = presentedDigests.get(token) ?? (await digestOf(token, presentedDigests));
  // Every secret is compared, whichever matches, so the time taken does not tell which one did.
  await digestSecrets([env.ADMIN_TOKEN, env.INTERNAL_TOKEN, env.METRICS_TOKEN]);
  const isAdmin = sameSecret(digest, env.ADMIN_TOKEN);
  const isInternal = sameSecret(digest, env.INTERNAL_TOKEN);
  const isMetrics = sameSecret(digest, env.METRICS_TOKEN);
  const kind = isAdmin ? "admin" : isInternal ? "internal" : isMetrics ? "metrics" : null;
  if (kind) {
    const identity = SECRET_IDENTITIES[kind];
    if (secretHolders.size >= SECRET_HOLDERS_MAX) secretHolders.clear();
    secretHolders.set(token, { admin: env.ADMIN_TOKEN, internal: env.INTERNAL_TOKEN, metrics: env.METRICS_TOKEN, identity });
    return identity;
  }
  const owner = await keyOwner(env, hex(digest));
  if (!owner) return null;
  return {
    principal: { kind: "client", clientId: owner.clientId, tier: owner.tier, scopes: owner.scopes, keyId: owner.keyId },
    suspended: owner.clientStatus === "suspended",
  };
}

/**
 * Require a valid credential of one of `kinds`: 401 when there is none or it is not valid, 403 when it
 * is valid but of another kind. A suspended client's key may read (GET) but not start anything: 403
 * `client_suspended` for every other method. Admin routes also take the dashboard's session cookie in
 * place of the header (see ./session.ts).
 */
export function authenticate(...kinds: Principal["kind"][]): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    // An in-process call (RPC over a service binding, an MCP tool) was identified by its caller.
    const inProcess = identityOf(c.env);
    const token = bearer(c.req.header("authorization"));
    if (!inProcess && !c.req.header("authorization") && kinds.includes("admin") && (await adminSession(c))) {
      c.set("principal", { kind: "admin" });
      await next();
      return;
    }
    if (!inProcess && !token) throw new AppError("unauthorized", "missing credential: send Authorization: Bearer <token>");
    const identified = inProcess ?? (await identify(c.env, token!));
    if (!identified) throw new AppError("unauthorized", "credential not valid");
    const { principal, suspended } = identified;
    c.set("principal", principal);
    if (!kinds.includes(principal.kind)) throw new AppError("forbidden", `a ${principal.kind} credential may not call ${c.req.path}`);
    if (suspended && principal.kind === "client" && !READ_METHODS.has(c.req.method)) {
      throw new AppError("client_suspended", `client ${principal.clientId} is suspended: it may read, but not start new work`, { client_id: principal.clientId });
    }
    await next();
  };
}

/** Require an API-key scope; operators (admin) pass every scope check. */
export function requireScope(scope: Scope): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const p = c.get("principal");
    if (p.kind === "client" && !p.scopes.includes(scope)) {
      throw new AppError("forbidden", `this API key lacks the ${scope} scope`, { required_scope: scope });
    }
    await next();
  };
}
