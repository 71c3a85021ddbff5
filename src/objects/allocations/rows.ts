import { decodeListCursor, depthUsage, encodeListCursor, HOLDING_STATES, LIVE_STATES, type AllocationConfig, type Compute } from "../../domain/allocations";
import type { ErrorBody } from "../../errors";
import type { Allocation, AllocationFilter, UsageView } from "./types";

export type Row = Allocation & { priority_rank: number; updated_at: number; [key: string]: SqlStorageValue };

/** SQL conditions: allocations that hold capacity (pending, active, releasing), and live ones (pending, active). */
export const holding = `state IN (${HOLDING_STATES.map((s) => `'${s}'`).join(", ")})`;
export const live = `state IN (${LIVE_STATES.map((s) => `'${s}'`).join(", ")})`;

/** The allocations table, created idempotently, and the settings row. */
export function createTables(sql: SqlStorage): void {
  sql.exec(`
    CREATE TABLE IF NOT EXISTS allocations (
      id TEXT PRIMARY KEY,
      client_id TEXT NOT NULL,
      job_id TEXT NOT NULL,
      parent_id TEXT,
      depth INTEGER NOT NULL,
      workers INTEGER NOT NULL,
      cpu_millicores INTEGER NOT NULL,
      memory_mb INTEGER NOT NULL,
      priority TEXT NOT NULL,
      priority_rank INTEGER NOT NULL,
      ttl_ms INTEGER NOT NULL,
      state TEXT NOT NULL,
      created_at INTEGER NOT NULL,
      activated_at INTEGER,
      expires_at INTEGER NOT NULL,
      released_at INTEGER,
      reason TEXT,
      updated_at INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS allocations_state ON allocations (state, depth);
    CREATE INDEX IF NOT EXISTS allocations_expiry ON allocations (state, expires_at);
    CREATE INDEX IF NOT EXISTS allocations_parent ON allocations (parent_id);
    CREATE INDEX IF NOT EXISTS allocations_order ON allocations (priority_rank, created_at, id);
    CREATE INDEX IF NOT EXISTS allocations_client ON allocations (client_id, priority_rank, created_at, id);
    CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
  `);
}

/** Reads of the allocations table: one row, pages, sums of what is held, subtrees and expiries. */
export class AllocationRows {
  constructor(private readonly sql: SqlStorage) {}

  row(id: string): Row | undefined {
    return this.sql.exec<Row>("SELECT * FROM allocations WHERE id = ?", id).toArray()[0];
  }

  /** Allocations by priority (critical first), then age, then id; keyset pagination over that order. */
  list(filter: AllocationFilter): { allocations: Allocation[]; nextCursor: string | null } {
    const after = filter.cursor ? decodeListCursor(filter.cursor) : null;
    const rows = this.sql.exec<Row>(
      `SELECT * FROM allocations
       WHERE (?1 IS NULL OR client_id = ?1) AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR job_id = ?3) AND (?4 IS NULL OR depth = ?4)
         AND (?5 IS NULL OR (priority_rank, created_at, id) > (?5, ?6, ?7))
       ORDER BY priority_rank, created_at, id
       LIMIT ?8`,
      filter.clientId ?? null, filter.state ?? null, filter.jobId ?? null, filter.depth ?? null,
      after?.rank ?? null, after?.createdAt ?? null, after?.id ?? null, filter.limit + 1,
    ).toArray();
    const page = rows.slice(0, filter.limit);
    const last = page.at(-1);
    return {
      allocations: page.map(view),
      nextCursor: rows.length > filter.limit && last ? encodeListCursor({ rank: last.priority_rank, createdAt: last.created_at, id: last.id }) : null,
    };
  }

  /** Per depth: limit, workers held and what is left; and the totals held. */
  usage(config: AllocationConfig): UsageView {
    const byDepth = this.sql.exec<{ depth: number; workers: number; n: number }>(
      `SELECT depth, SUM(workers) AS workers, COUNT(*) AS n FROM allocations WHERE ${holding} GROUP BY depth`,
    ).toArray();
    const used = this.inUse();
    return {
      depths: depthUsage(config.depths, new Map(byDepth.map((r) => [r.depth, { workers: r.workers, allocations: r.n }]))),
      deeper_max_workers: config.depths.deeper,
      totals: {
        allocations: byDepth.reduce((n, r) => n + r.n, 0),
        workers: used.workers, cpu_millicores: used.cpuMillicores, memory_mb: used.memoryMb,
      },
    };
  }

  /** Workers, CPU and memory held by pending, active and releasing allocations. */
  inUse(): Compute {
    const r = this.sql.exec<{ workers: number; cpu: number; mem: number }>(
      `SELECT COALESCE(SUM(workers), 0) AS workers, COALESCE(SUM(workers * cpu_millicores), 0) AS cpu,
              COALESCE(SUM(workers * memory_mb), 0) AS mem
       FROM allocations WHERE ${holding}`,
    ).one();
    return { workers: r.workers, cpuMillicores: r.cpu, memoryMb: r.mem };
  }

  /** Workers held at one depth. */
  depthInUse(depth: number): number {
    return this.sql.exec<{ n: number }>(`SELECT COALESCE(SUM(workers), 0) AS n FROM allocations WHERE ${holding} AND depth = ?`, depth).one().n;
  }

  /** The earliest expiry among live allocations, of one depth or one client when given. */
  earliestExpiry(of: { depth?: number; client_id?: string }): number | null {
    return this.sql.exec<{ t: number | null }>(
      `SELECT MIN(expires_at) AS t FROM allocations WHERE ${live} AND (?1 IS NULL OR depth = ?1) AND (?2 IS NULL OR client_id = ?2)`,
      of.depth ?? null, of.client_id ?? null,
    ).one().t;
  }

  /** Live allocations under these (children, grandchildren, ...), parents before children. */
  liveDescendants(rootIds: string[]): string[] {
    if (!rootIds.length) return [];
    return this.sql.exec<{ id: string }>(
      `WITH RECURSIVE sub (id, depth) AS (
         SELECT a.id, a.depth FROM allocations a WHERE a.parent_id IN (SELECT value FROM json_each(?1))
         UNION ALL
         SELECT a.id, a.depth FROM allocations a JOIN sub ON a.parent_id = sub.id
       )
       SELECT sub.id FROM sub JOIN allocations a ON a.id = sub.id WHERE a.${live} ORDER BY sub.depth`,
      JSON.stringify(rootIds),
    ).toArray().map((r) => r.id);
  }
}

export function view(row: Row): Allocation {
  return {
    id: row.id, client_id: row.client_id, job_id: row.job_id, parent_id: row.parent_id, depth: row.depth, workers: row.workers,
    cpu_millicores: row.cpu_millicores, memory_mb: row.memory_mb, priority: row.priority, ttl_ms: row.ttl_ms, state: row.state,
    created_at: row.created_at, activated_at: row.activated_at, expires_at: row.expires_at, released_at: row.released_at, reason: row.reason,
  };
}

export function notFound(id: string, field?: string): { ok: false; error: ErrorBody } {
  return { ok: false, error: { code: "allocation_not_found", message: `no allocation ${id}`, details: field ? { [field]: id } : { allocation_id: id } } };
}
