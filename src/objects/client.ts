import { DurableObject } from "cloudflare:workers";

export interface SlotRequest {
  requestId: string;
  /** The slot frees itself at this time if its holder never comes back (the dispatch lease). */
  expiresAt: number;
}

/**
 * One client's limit owner. Holds the client's concurrency slots: one per running request, never more
 * than the client's maximum. Slots carry the dispatch lease as their expiry, so a crashed dispatcher
 * cannot leak them. Decisions are synchronous (SQLite only).
 */
export class ClientObject extends DurableObject<Env> {
  private sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`CREATE TABLE IF NOT EXISTS slots (request_id TEXT PRIMARY KEY, acquired_at INTEGER NOT NULL, expires_at INTEGER NOT NULL)`);
  }

  /**
   * Grant slots in the order asked until `max` are held. A request that already holds a slot keeps
   * it (a retried call is harmless). Returns the ids granted.
   */
  acquireSlots(max: number, items: SlotRequest[]): string[] {
    const now = Date.now();
    this.sql.exec("DELETE FROM slots WHERE expires_at <= ?", now);
    let held = this.inUseAt();
    const granted: string[] = [];
    for (const item of items) {
      const existing = this.sql.exec("SELECT 1 FROM slots WHERE request_id = ?", item.requestId).toArray().length > 0;
      if (existing) {
        this.sql.exec("UPDATE slots SET expires_at = ? WHERE request_id = ?", item.expiresAt, item.requestId);
        granted.push(item.requestId);
      } else if (held < max) {
        this.sql.exec("INSERT INTO slots (request_id, acquired_at, expires_at) VALUES (?, ?, ?)", item.requestId, now, item.expiresAt);
        held += 1;
        granted.push(item.requestId);
      }
    }
    return granted;
  }

  /** Free the slots of these requests; unknown ids are ignored. Returns how many were freed. */
  releaseSlots(requestIds: string[]): number {
    let freed = 0;
    for (const id of requestIds) freed += this.sql.exec("DELETE FROM slots WHERE request_id = ?", id).rowsWritten;
    return freed;
  }

  /** Slots in use now (expired ones not counted). */
  inUse(): number {
    this.sql.exec("DELETE FROM slots WHERE expires_at <= ?", Date.now());
    return this.inUseAt();
  }

  private inUseAt(): number {
    return this.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM slots").one().n;
  }
}
