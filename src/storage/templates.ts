import type { PoolAmount } from "../domain/types";

/** A kind of work a downstream worker does (see DESIGN.md, "template"). */
export interface Template {
  id: string;
  name: string;
  binding: string;
  requirements: PoolAmount[];
  alternativeId: string | null;
  cacheable: boolean;
  batchable: boolean;
  timeoutMs: number;
  /** Attempts before a request of this template fails (a caller may ask for fewer or more per request). */
  maxAttempts: number;
}

/** A template's optimizer options (template_options); null fields: no row, the defaults apply. */
export interface TemplateOptionsRecord {
  cache_ttl_ms: number | null;
  batch_size: number | null;
  compress_threshold_bytes: number | null;
}

interface TemplateRow {
  id: string;
  name: string;
  binding: string;
  requirements: string;
  alternative_id: string | null;
  cacheable: number;
  batchable: number;
  timeout_ms: number;
  max_attempts: number;
}

const COLUMNS = "id, name, binding, requirements, alternative_id, cacheable, batchable, timeout_ms, max_attempts";

function templateOf(r: TemplateRow): Template {
  return {
    id: r.id,
    name: r.name,
    binding: r.binding,
    requirements: JSON.parse(r.requirements) as PoolAmount[],
    alternativeId: r.alternative_id,
    cacheable: r.cacheable === 1,
    batchable: r.batchable === 1,
    timeoutMs: r.timeout_ms,
    maxAttempts: r.max_attempts,
  };
}

export async function listTemplates(db: D1Database): Promise<Template[]> {
  const { results } = await db.prepare(`SELECT ${COLUMNS} FROM templates ORDER BY id`).all<TemplateRow>();
  return results.map(templateOf);
}

export async function findTemplate(db: D1Database, id: string): Promise<Template | null> {
  const row = await db.prepare(`SELECT ${COLUMNS} FROM templates WHERE id = ?1`).bind(id).first<TemplateRow>();
  return row ? templateOf(row) : null;
}

export async function findTemplateOptions(db: D1Database, id: string): Promise<TemplateOptionsRecord> {
  const row = await db
    .prepare("SELECT cache_ttl_ms, batch_size, compress_threshold_bytes FROM template_options WHERE template_id = ?1")
    .bind(id)
    .first<TemplateOptionsRecord>();
  return row ?? { cache_ttl_ms: null, batch_size: null, compress_threshold_bytes: null };
}

/** Templates that name `id` as their cheaper alternative. */
export async function templatesFallingBackTo(db: D1Database, id: string): Promise<string[]> {
  const { results } = await db.prepare("SELECT id FROM templates WHERE alternative_id = ?1 ORDER BY id").bind(id).all<{ id: string }>();
  return results.map((r) => r.id);
}

function writeStatement(db: D1Database, t: Template, now: number, insert: boolean): D1PreparedStatement {
  const values = [t.id, t.name, t.binding, JSON.stringify(t.requirements), t.alternativeId, t.cacheable ? 1 : 0, t.batchable ? 1 : 0, t.timeoutMs, t.maxAttempts, now];
  const sql = insert
    ? `INSERT INTO templates (${COLUMNS}, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (id) DO NOTHING`
    : `UPDATE templates SET name = ?2, binding = ?3, requirements = ?4, alternative_id = ?5, cacheable = ?6, batchable = ?7,
         timeout_ms = ?8, max_attempts = ?9, updated_at = ?10 WHERE id = ?1`;
  return db.prepare(sql).bind(...values);
}

function optionsStatement(db: D1Database, id: string, o: TemplateOptionsRecord, now: number): D1PreparedStatement | null {
  if (o.cache_ttl_ms === null || o.batch_size === null || o.compress_threshold_bytes === null) return null;
  return db
    .prepare(
      `INSERT INTO template_options (template_id, cache_ttl_ms, batch_size, compress_threshold_bytes, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
       ON CONFLICT (template_id) DO UPDATE SET cache_ttl_ms = excluded.cache_ttl_ms, batch_size = excluded.batch_size,
         compress_threshold_bytes = excluded.compress_threshold_bytes, updated_at = excluded.updated_at`,
    )
    .bind(id, o.cache_ttl_ms, o.batch_size, o.compress_threshold_bytes, now);
}

/**
 * Insert a template with its options in one batch; false when the id is taken. The options are written
 * only when the template row was (changes() of the insert before it, in the batch's one transaction).
 */
export async function insertTemplate(db: D1Database, t: Template, options: TemplateOptionsRecord, now: number): Promise<boolean> {
  const statements = [writeStatement(db, t, now, true)];
  if (options.cache_ttl_ms !== null && options.batch_size !== null && options.compress_threshold_bytes !== null) {
    statements.push(db
      .prepare(
        `INSERT INTO template_options (template_id, cache_ttl_ms, batch_size, compress_threshold_bytes, updated_at)
         SELECT ?1, ?2, ?3, ?4, ?5 WHERE changes() = 1`,
      )
      .bind(t.id, options.cache_ttl_ms, options.batch_size, options.compress_threshold_bytes, now));
  }
  const [inserted] = await db.batch(statements);
  return inserted!.meta.changes === 1;
}

/** Replace a template and its options in one batch; false when it does not exist. */
export async function updateTemplate(db: D1Database, t: Template, options: TemplateOptionsRecord, now: number): Promise<boolean> {
  const opts = optionsStatement(db, t.id, options, now);
  const [updated] = await db.batch([writeStatement(db, t, now, false), ...(opts ? [opts] : [])]);
  return updated!.meta.changes === 1;
}

/** Delete a template and its options; false when it did not exist. */
export async function deleteTemplate(db: D1Database, id: string): Promise<boolean> {
  const [deleted] = await db.batch([
    db.prepare("DELETE FROM templates WHERE id = ?1").bind(id),
    db.prepare("DELETE FROM template_options WHERE template_id = ?1").bind(id),
  ]);
  return deleted!.meta.changes === 1;
}
