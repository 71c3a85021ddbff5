import { base64url } from "../domain/base64url";
import { newId } from "../domain/ids";
import type { Scope } from "../domain/scopes";
import { AppError } from "../errors";
import { sha256Hex } from "../domain/digest";
import {
  countActiveKeys, deleteClientRows, findRetiredAt, getClient, insertApiKey, insertClient, listApiKeys, revokeApiKey, updateClientRow,
  type ApiKeyView, type ClientChanges, type ClientRow,
} from "../storage/clients";
import { clearConfigCache } from "../storage/config";
import { activeFor, cancelClient } from "./scheduler";
import { clientStub } from "../objects/client/stub";

/** What an operator gives to create a client. */
export type NewClient = Pick<ClientRow, "id" | "name" | "email" | "tier"> & Partial<Pick<ClientRow, "monthly_budget_nano" | "status">>;

/** A client with what an operator wants to know before changing it: live keys and work in the scheduler. */
export interface ClientDetail {
  client: ClientRow;
  counts: { active_keys: number; queued: number; running: number };
}

/** An issued key: the secret appears here and nowhere else, ever. */
export type IssuedKey = ApiKeyView & { key: string };

/** Secrets are "rmk_" + 43 url-safe characters (32 random bytes); the prefix identifies a key in lists. */
const KEY_PREFIX = "rmk_";
const SECRET_BYTES = 32;
const SHOWN_PREFIX_CHARS = 12;

function notFound(clientId: string): AppError {
  return new AppError("client_not_found", `no client ${clientId}`, { client_id: clientId });
}


export async function createClient(env: Env, input: NewClient, now: number): Promise<ClientRow> {
  const created = await insertClient(env.DB, {
    id: input.id, name: input.name, email: input.email, tier: input.tier,
    monthly_budget_nano: input.monthly_budget_nano ?? null, status: input.status ?? "active",
    created_at: now, updated_at: now,
  });
  if (!created) {
    const retiredAt = await findRetiredAt(env.DB, input.id);
    if (retiredAt !== null) {
      throw new AppError("client_id_retired", `${input.id} belonged to a deleted client; a client id is never used again`, { client_id: input.id, retired_at: retiredAt });
    }
    throw new AppError("client_exists", `a client ${input.id} already exists`, { client_id: input.id });
  }
  clearConfigCache();
  return created;
}

export async function clientDetail(env: Env, clientId: string): Promise<ClientDetail> {
  const [client, activeKeys, active] = await Promise.all([
    getClient(env.DB, clientId), countActiveKeys(env.DB, clientId), activeFor(env, clientId),
  ]);
  if (!client) throw notFound(clientId);
  return { client, counts: { active_keys: activeKeys, queued: active.queued, running: active.running } };
}

/** Apply an operator's changes; they take effect at once in this isolate, elsewhere within the config TTL. */
export async function updateClient(env: Env, clientId: string, changes: ClientChanges, now: number): Promise<ClientRow> {
  const updated = await updateClientRow(env.DB, clientId, changes, now);
  if (!updated) throw notFound(clientId);
  clearConfigCache();
  return updated;
}

/** What a delete cancelled: the client's work in the scheduler before, and how many requests were cancelled. */
export interface Deleted {
  queued: number;
  running: number;
  cancelled: number;
}

/**
 * Delete a client: refused (409 `client_busy`) while it has queued or running work, unless forced,
 * which cancels that work first. Then its rows (keys, operator budget, quota) go in one batch that
 * also retires its id (never usable again: its history stays and must stay its own) and resolves its
 * open and acknowledged alerts; its Durable Object forgets everything.
 */
export async function deleteClient(env: Env, clientId: string, force: boolean): Promise<Deleted> {
  if (!(await getClient(env.DB, clientId))) throw notFound(clientId);
  const allocations = env.ALLOCATIONS.get(env.ALLOCATIONS.idFromName("allocations"));
  const [{ queued, running }, allocated] = await Promise.all([activeFor(env, clientId), allocations.liveFor(clientId)]);
  let cancelled = 0;
  if (queued + running + allocated > 0) {
    if (!force) {
      throw new AppError("client_busy", `client ${clientId} has ${queued} queued and ${running} running requests and ${allocated} live allocations; delete with force=true to cancel them`, {
        client_id: clientId, queued, running, allocations: allocated,
      });
    }
    cancelled = await cancelClient(env, clientId);
    await allocations.cancelClient(clientId);
  }
  await deleteClientRows(env.DB, clientId, Date.now());
  clearConfigCache();
  await clientStub(env, clientId).forget();
  return { queued, running, cancelled };
}

/** Issue a key with these scopes. Only its SHA-256 is stored; the secret is answered once. */
export async function issueKey(env: Env, clientId: string, scopes: Scope[], name: string | null, now: number): Promise<IssuedKey> {
  const key = KEY_PREFIX + base64url(crypto.getRandomValues(new Uint8Array(SECRET_BYTES)));
  const stored = await insertApiKey(env.DB, {
    id: newId("key"),
    clientId,
    keyHash: await sha256Hex(key),
    prefix: key.slice(0, SHOWN_PREFIX_CHARS),
    scopes,
    name,
    createdAt: now,
  });
  if (!stored) throw notFound(clientId);
  return { ...stored, key };
}

export async function clientKeys(env: Env, clientId: string): Promise<ApiKeyView[]> {
  const [client, keys] = await Promise.all([getClient(env.DB, clientId), listApiKeys(env.DB, clientId)]);
  if (!client) throw notFound(clientId);
  return keys;
}

/** Revoke a key (again: the same answer). It stops working at once in this isolate, elsewhere within the config TTL. */
export async function revokeKey(env: Env, clientId: string, keyId: string, now: number): Promise<ApiKeyView> {
  const revoked = await revokeApiKey(env.DB, clientId, keyId, now);
  if (!revoked) {
    if (!(await getClient(env.DB, clientId))) throw notFound(clientId);
    throw new AppError("key_not_found", `client ${clientId} has no key ${keyId}`, { client_id: clientId, key_id: keyId });
  }
  clearConfigCache();
  return revoked;
}
