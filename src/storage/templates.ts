import type { PoolAmount } from "../domain/types";

export interface Template {
  id: string;
  name: string;
  binding: string;
  requirements: PoolAmount[];
  alternativeId: string | null;
  cacheable: boolean;
  batchable: boolean;
  timeoutMs: number;
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
}

export async function listTemplates(db: D1Database): Promise<Template[]> {
  const { results } = await db
    .prepare("SELECT id, name, binding, requirements, alternative_id, cacheable, batchable, timeout_ms FROM templates ORDER BY id")
    .all<TemplateRow>();
  return results.map((r) => ({
    id: r.id,
    name: r.name,
    binding: r.binding,
    requirements: JSON.parse(r.requirements) as PoolAmount[],
    alternativeId: r.alternative_id,
    cacheable: r.cacheable === 1,
    batchable: r.batchable === 1,
    timeoutMs: r.timeout_ms,
  }));
}
