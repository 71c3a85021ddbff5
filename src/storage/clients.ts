import { decodeCursorText, encodeCursorText } from "../domain/base64url";
import type { BudgetSettings } from "../domain/budget";
import { dayKey } from "../domain/calendar";
import type { Tier } from "../domain/types";
import { resolveClientAlertsStatement } from "./alerts";

/** The client behind an API key, as authentication needs it. */
export interface KeyOwner {
  keyId: string;
  clientId: string;
  tier: Tier;
  clientStatus: "active" | "suspended";
  scopes: string[];
}

export async function findKeyOwner(db: D1Database, keyHash: string): Promise<KeyOwner | null> {
  const row = await db
    .prepare(
      `SELECT k.id AS key_id, k.scopes, c.id AS client_id, c.tier, c.status
       FROM api_keys k JOIN clients c ON c.id = k.client_id
       WHERE k.key_hash = ?1 AND k.revoked_at IS NULL`,
    )
    .bind(keyHash)
    .first<{ key_id: string; scopes: string; client_id: string; tier: Tier; status: KeyOwner["clientStatus"] }>();
  if (!row) return null;
  return { keyId: row.key_id, clientId: row.client_id, tier: row.tier, clientStatus: row.status, scopes: JSON.parse(row.scopes) as string[] };
}

export async function findClientTier(db: D1Database, clientId: string): Promise<{ tier: Tier; status: string } | null> {
  return db.prepare("SELECT tier, status FROM clients WHERE id = ?1").bind(clientId).first<{ tier: Tier; status: string }>();
}

/**
 * Counts for /status. usage_events is today's (UTC) events from the rollups: one indexed day, however
 * long the ledger is (counting the ledger itself grew with every event).
 */
export async function countRows(db: D1Database, now = Date.now()): Promise<Record<string, number>> {
  const row = await db
    .prepare(
      `SELECT (SELECT COUNT(*) FROM clients) AS clients, (SELECT COUNT(*) FROM pools) AS pools,
              (SELECT COUNT(*) FROM templates) AS templates,
              (SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL) AS api_keys,
              (SELECT COALESCE(SUM(events), 0) FROM usage_daily WHERE day = ?1) AS usage_events`,
    )
    .bind(dayKey(now))
    .first<Record<string, number>>();
  return row ?? {};
}

/** What decides a client's budget (see resolveBudget); null for an unknown client. */
/** The ids of every client (`active`: only active ones, whose budgets the alert check reads). */
export async function clientIds(db: D1Database, opts: { active?: boolean } = {}): Promise<string[]> {
  const { results } = await db.prepare(opts.active ? "SELECT id FROM clients WHERE status = 'active'" : "SELECT id FROM clients").all<{ id: string }>();
  return results.map((r) => r.id);
}

export async function findBudgetSettings(db: D1Database, clientId: string): Promise<BudgetSettings | null> {
  const row = await db
    .prepare(
      `SELECT c.monthly_budget_nano AS client_budget, t.monthly_budget_nano AS tier_budget,
              b.client_id IS NOT NULL AS has_override, b.monthly_budget_nano AS override_budget
       FROM clients c JOIN tiers t ON t.id = c.tier LEFT JOIN client_budgets b ON b.client_id = c.id
       WHERE c.id = ?1`,
    )
    .bind(clientId)
    .first<{ client_budget: number | null; tier_budget: number | null; has_override: number; override_budget: number | null }>();
  if (!row) return null;
  return {
    override: row.has_override ? { monthlyBudgetNano: row.override_budget } : null,
    clientBudgetNano: row.client_budget,
    tierBudgetNano: row.tier_budget,
  };
}

/** Set (a number), lift (null) or remove (undefined: back to the client's or tier's) an operator's budget. */
export async function setClientBudget(db: D1Database, clientId: string, monthlyBudgetNano: number | null | undefined, now = Date.now()): Promise<void> {
  if (monthlyBudgetNano === undefined) {
    await db.prepare("DELETE FROM client_budgets WHERE client_id = ?1").bind(clientId).run();
    return;
  }
  await db
    .prepare(
      `INSERT INTO client_budgets (client_id, monthly_budget_nano, updated_at) VALUES (?1, ?2, ?3)
       ON CONFLICT (client_id) DO UPDATE SET monthly_budget_nano = excluded.monthly_budget_nano, updated_at = excluded.updated_at`,
    )
    .bind(clientId, monthlyBudgetNano, now)
    .run();
}

// ---- Client and API key management (admin API, issue 6) -----------------------------------------

/** A client as stored and as the admin API shows it. */
export interface ClientRow {
  id: string;
  name: string;
  email: string;
  tier: Tier;
  /** NULL: the tier's budget. */
  monthly_budget_nano: number | null;
  status: KeyOwner["clientStatus"];
  created_at: number;
  updated_at: number;
}

// Named, not *: a column added to clients later must not appear in the API by accident.
const CLIENT_COLUMNS = "id, name, email, tier, monthly_budget_nano, status, created_at, updated_at";

/** Insert a client; null when one with this id exists or the id is retired (nothing changed). */
export async function insertClient(db: D1Database, client: ClientRow): Promise<ClientRow | null> {
  return db
    .prepare(
      `INSERT INTO clients (id, name, email, tier, monthly_budget_nano, status, created_at, updated_at)
       SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE NOT EXISTS (SELECT 1 FROM retired_client_ids WHERE client_id = ?1)
       ON CONFLICT (id) DO NOTHING RETURNING ${CLIENT_COLUMNS}`,
    )
    .bind(client.id, client.name, client.email, client.tier, client.monthly_budget_nano, client.status, client.created_at, client.updated_at)
    .first<ClientRow>();
}

/** When a deleted client's id was retired; null for an id never retired. */
export async function findRetiredAt(db: D1Database, id: string): Promise<number | null> {
  const row = await db.prepare("SELECT retired_at FROM retired_client_ids WHERE client_id = ?1").bind(id).first<{ retired_at: number }>();
  return row?.retired_at ?? null;
}

export async function getClient(db: D1Database, id: string): Promise<ClientRow | null> {
  return db.prepare(`SELECT ${CLIENT_COLUMNS} FROM clients WHERE id = ?1`).bind(id).first<ClientRow>();
}

/** The fields an operator may change; absent ones stay as they are. */
export type ClientChanges = Partial<Pick<ClientRow, "name" | "email" | "tier" | "monthly_budget_nano" | "status">>;

const CHANGEABLE = ["name", "email", "tier", "monthly_budget_nano", "status"] as const;

/** Apply the given changes and bump updated_at; null for an unknown client. */
export async function updateClientRow(db: D1Database, id: string, changes: ClientChanges, now: number): Promise<ClientRow | null> {
  const fields = CHANGEABLE.filter((f) => changes[f] !== undefined);
  // Column names come from the fixed list above, never from input; values are bound.
  const sets = fields.map((f, i) => `${f} = ?${i + 3}`);
  return db
    .prepare(`UPDATE clients SET ${["updated_at = ?2", ...sets].join(", ")} WHERE id = ?1 RETURNING ${CLIENT_COLUMNS}`)
    .bind(id, now, ...fields.map((f) => changes[f]))
    .first<ClientRow>();
}

/**
 * Delete a client with its keys, operator budget, quota and optimizer switches in one batch (D1 does
 * not enforce the schema's ON DELETE CASCADE unless foreign keys are on), retire its id for good and
 * resolve its alerts. Usage history stays: it is a record, and no later tenant can take the id to read
 * it. False for an unknown client (then nothing changes).
 */
export async function deleteClientRows(db: D1Database, id: string, now: number): Promise<boolean> {
  const results = await db.batch([
    db.prepare("INSERT INTO retired_client_ids (client_id, retired_at) SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM clients WHERE id = ?1) ON CONFLICT (client_id) DO NOTHING")
      .bind(id, now),
    resolveClientAlertsStatement(db, id, now),
    db.prepare("DELETE FROM client_optimizer WHERE client_id = ?1").bind(id),
    db.prepare("DELETE FROM api_keys WHERE client_id = ?1").bind(id),
    db.prepare("DELETE FROM client_budgets WHERE client_id = ?1").bind(id),
    db.prepare("DELETE FROM client_quotas WHERE client_id = ?1").bind(id),
    db.prepare("DELETE FROM clients WHERE id = ?1").bind(id),
  ]);
  return (results.at(-1)?.meta.changes ?? 0) > 0;
}

const CLIENT_CURSOR = /^c:([A-Za-z0-9][A-Za-z0-9_-]{0,63})$/;

/** Opaque to callers: base64url of "c:<id>" of the last client of a page. */
export function encodeClientCursor(id: string): string {
  return encodeCursorText(`c:${id}`);
}

export function decodeClientCursor(cursor: string): string | null {
  return CLIENT_CURSOR.exec(decodeCursorText(cursor) ?? "")?.[1] ?? null;
}

export interface ClientFilter {
  tier?: Tier;
  status?: ClientRow["status"];
  limit: number;
  /** From a previous page's `nextCursor`; the listing continues after it. */
  cursor?: string;
}

/** Ordered by id; keyset pagination, so clients added meanwhile neither repeat nor shift pages. */
export async function listClients(db: D1Database, filter: ClientFilter): Promise<{ clients: ClientRow[]; nextCursor: string | null }> {
  const after = filter.cursor ? decodeClientCursor(filter.cursor) : null;
  const { results } = await db
    .prepare(
      `SELECT ${CLIENT_COLUMNS} FROM clients
       WHERE (?1 IS NULL OR tier = ?1) AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR id > ?3)
       ORDER BY id LIMIT ?4`,
    )
    .bind(filter.tier ?? null, filter.status ?? null, after, filter.limit + 1)
    .all<ClientRow>();
  const page = results.slice(0, filter.limit);
  const last = page.at(-1);
  return { clients: page, nextCursor: results.length > filter.limit && last ? encodeClientCursor(last.id) : null };
}

/** An API key as the admin API lists it: never its hash, never the key. */
export interface ApiKeyView {
  id: string;
  client_id: string;
  name: string | null;
  prefix: string;
  scopes: string[];
  created_at: number;
  revoked_at: number | null;
}

type ApiKeyRow = Omit<ApiKeyView, "scopes"> & { scopes: string };

const KEY_COLUMNS = "id, client_id, name, prefix, scopes, created_at, revoked_at";

function toKeyView(row: ApiKeyRow): ApiKeyView {
  return { ...row, scopes: JSON.parse(row.scopes) as string[] };
}

export interface NewApiKey {
  id: string;
  clientId: string;
  keyHash: string;
  prefix: string;
  scopes: string[];
  name: string | null;
  createdAt: number;
}

/** Store a key (its SHA-256 only) for an existing client; null when the client does not exist. */
export async function insertApiKey(db: D1Database, key: NewApiKey): Promise<ApiKeyView | null> {
  const row = await db
    .prepare(
      `INSERT INTO api_keys (id, client_id, key_hash, prefix, scopes, name, created_at, revoked_at)
       SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL WHERE EXISTS (SELECT 1 FROM clients WHERE id = ?2)
       RETURNING ${KEY_COLUMNS}`,
    )
    .bind(key.id, key.clientId, key.keyHash, key.prefix, JSON.stringify(key.scopes), key.name, key.createdAt)
    .first<ApiKeyRow>();
  return row ? toKeyView(row) : null;
}

/** A client's keys, revoked ones included, oldest first. */
export async function listApiKeys(db: D1Database, clientId: string): Promise<ApiKeyView[]> {
  const { results } = await db
    .prepare(`SELECT ${KEY_COLUMNS} FROM api_keys WHERE client_id = ?1 ORDER BY created_at, id`)
    .bind(clientId)
    .all<ApiKeyRow>();
  return results.map(toKeyView);
}

/** Revoke a client's key; revoking again keeps the first revoked_at. Null for no such key of this client. */
export async function revokeApiKey(db: D1Database, clientId: string, keyId: string, now: number): Promise<ApiKeyView | null> {
  const row = await db
    .prepare(`UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?3) WHERE id = ?1 AND client_id = ?2 RETURNING ${KEY_COLUMNS}`)
    .bind(keyId, clientId, now)
    .first<ApiKeyRow>();
  return row ? toKeyView(row) : null;
}

export async function countActiveKeys(db: D1Database, clientId: string): Promise<number> {
  const row = await db
    .prepare("SELECT COUNT(*) AS n FROM api_keys WHERE client_id = ?1 AND revoked_at IS NULL")
    .bind(clientId)
    .first<{ n: number }>();
  return row?.n ?? 0;
}
