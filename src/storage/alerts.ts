import { decodeCursorText, encodeCursorText } from "../domain/base64url";
import { newId } from "../domain/ids";
import type { AlertInput, AlertKind, AlertSeverity, AlertState } from "../domain/alerts";

/** An alert as stored and as the API shows it; `details` parsed. */
export interface Alert {
  id: string;
  kind: AlertKind;
  subject: string;
  severity: AlertSeverity;
  state: AlertState;
  message: string;
  details: Record<string, unknown>;
  dedupe_key: string;
  count: number;
  raised_at: number;
  updated_at: number;
  acked_at: number | null;
  resolved_at: number | null;
}

type AlertRow = Omit<Alert, "details"> & { details: string };

function toAlert(row: AlertRow): Alert {
  return { ...row, details: JSON.parse(row.details) as Record<string, unknown> };
}

export function newAlertId(): string {
  return newId("alert");
}

/**
 * Raise: insert, or, while an unresolved alert holds the dedupe key, count the repeat on it (the partial
 * unique index decides which, inside D1). A once-per-key alert whose key was ever resolved is not raised
 * again. Answers the alert row, or no row when suppressed.
 */
export function raiseStatement(db: D1Database, input: AlertInput, now: number): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO alerts (id, kind, subject, severity, state, message, details, dedupe_key, count, raised_at, updated_at)
       SELECT ?1, ?2, ?3, ?4, 'open', ?5, ?6, ?7, 1, ?8, ?8
       WHERE ?9 = 0 OR NOT EXISTS (SELECT 1 FROM alerts WHERE dedupe_key = ?7 AND state = 'resolved')
       ON CONFLICT (dedupe_key) WHERE state != 'resolved' DO UPDATE SET
         count = alerts.count + 1, message = excluded.message, details = excluded.details, updated_at = excluded.updated_at
       RETURNING *`,
    )
    .bind(newAlertId(), input.kind, input.subject, input.severity, input.message, JSON.stringify(input.details), input.dedupeKey, now, input.oncePerKey ? 1 : 0);
}

/** The outcome of one raise: the alert, and whether this raise created it (a first raise, not a repeat). */
export interface Raised {
  alert: Alert;
  created: boolean;
}

/** Read the outcome of a `raiseStatement` run, alone or in a batch. */
export function raisedFrom(result: D1Result): Raised | null {
  const row = result.results[0] as AlertRow | undefined;
  if (!row) return null;
  return { alert: toAlert(row), created: row.count === 1 };
}

export async function raiseAlert(db: D1Database, input: AlertInput, now: number): Promise<Raised | null> {
  return raisedFrom(await raiseStatement(db, input, now).all());
}

/** Resolve the unresolved alerts of `kind` for `subject`, except the one under `keepDedupeKey`. Answers their ids. */
export function resolveStatement(db: D1Database, kind: AlertKind, subject: string, now: number, keepDedupeKey: string | null = null): D1PreparedStatement {
  return db
    .prepare(
      `UPDATE alerts SET state = 'resolved', resolved_at = ?4, updated_at = ?4
       WHERE kind = ?1 AND subject = ?2 AND state != 'resolved' AND (?3 IS NULL OR dedupe_key != ?3)
       RETURNING id`,
    )
    .bind(kind, subject, keepDedupeKey, now);
}

/** Kinds whose subject is a client id. */
const CLIENT_KINDS: AlertKind[] = ["budget_80", "budget_95", "budget_exhausted"];

/** Resolve a client's open and acknowledged alerts, if the client still exists (run before its row is deleted). */
export function resolveClientAlertsStatement(db: D1Database, clientId: string, now: number): D1PreparedStatement {
  return db
    .prepare(
      `UPDATE alerts SET state = 'resolved', resolved_at = ?2, updated_at = ?2
       WHERE kind IN (SELECT value FROM json_each(?3)) AND subject = ?1 AND state != 'resolved'
         AND EXISTS (SELECT 1 FROM clients WHERE id = ?1)`,
    )
    .bind(clientId, now, JSON.stringify(CLIENT_KINDS));
}

export async function resolveAlerts(db: D1Database, kind: AlertKind, subject: string, now: number, keepDedupeKey: string | null = null): Promise<string[]> {
  const { results } = await resolveStatement(db, kind, subject, now, keepDedupeKey).all<{ id: string }>();
  return results.map((r) => r.id);
}

export async function getAlert(db: D1Database, id: string): Promise<Alert | null> {
  const row = await db.prepare("SELECT * FROM alerts WHERE id = ?1").bind(id).first<AlertRow>();
  return row ? toAlert(row) : null;
}

/** Acknowledge an open alert. Null when there is no open alert with this id (unknown, acknowledged or resolved). */
export async function ackAlert(db: D1Database, id: string, now: number): Promise<Alert | null> {
  const row = await db
    .prepare("UPDATE alerts SET state = 'acknowledged', acked_at = ?2, updated_at = ?2 WHERE id = ?1 AND state = 'open' RETURNING *")
    .bind(id, now)
    .first<AlertRow>();
  return row ? toAlert(row) : null;
}

/** A position in the listing order (raised_at, id), newest first. */
interface Position {
  raisedAt: number;
  id: string;
}

const CURSOR = /^(\d{1,16}):(alt_[a-f0-9]{32})$/;

/** Opaque to callers: base64url of "raised_at:id" of the last alert of a page. */
export function encodeCursor(p: Position): string {
  return encodeCursorText(`${p.raisedAt}:${p.id}`);
}

export function decodeCursor(cursor: string): Position | null {
  const match = CURSOR.exec(decodeCursorText(cursor) ?? "");
  return match ? { raisedAt: Number(match[1]), id: match[2]! } : null;
}

export interface AlertFilter {
  state?: AlertState;
  kind?: AlertKind;
  severity?: AlertSeverity;
  limit: number;
  /** From a previous page's `nextCursor`; the listing continues after it. */
  cursor?: string;
}

/** Newest first; keyset pagination over (raised_at, id), so rows raised meanwhile neither repeat nor shift pages. */
export async function listAlerts(db: D1Database, filter: AlertFilter): Promise<{ alerts: Alert[]; nextCursor: string | null }> {
  const after = filter.cursor ? decodeCursor(filter.cursor) : null;
  const { results } = await db
    .prepare(
      `SELECT * FROM alerts
       WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR severity = ?3)
         AND (?4 IS NULL OR raised_at < ?4 OR (raised_at = ?4 AND id < ?5))
       ORDER BY raised_at DESC, id DESC
       LIMIT ?6`,
    )
    .bind(filter.state ?? null, filter.kind ?? null, filter.severity ?? null, after?.raisedAt ?? null, after?.id ?? null, filter.limit + 1)
    .all<AlertRow>();
  const page = results.slice(0, filter.limit).map(toAlert);
  const last = page.at(-1);
  return { alerts: page, nextCursor: results.length > filter.limit && last ? encodeCursor({ raisedAt: last.raised_at, id: last.id }) : null };
}
