import { refill, type BucketState } from "../../domain/bucket";
import { newId } from "../../domain/ids";
import { costOf } from "../../domain/money";
import type { Caller, PoolConfig } from "../../domain/types";
import type { UsageEvent } from "../../storage/usage";
import { fail } from "./results";
import { createTables, migrate } from "./schema";
import type { Result, SpendOptions } from "./types";

/** What the store needs of the object that hosts it. */
export interface StoreHost {
  /** Be woken no later than `at` (the outbox's delivery). */
  ensureAlarm(at: number): void;
  /** How long new usage events wait before delivery (./outbox.ts). */
  flushDelay(): number;
}

/**
 * A pool's state in memory and its writes: the configuration, the token bucket, the outbox's seqs and
 * epoch, the denial count and the idempotency records. Every collaborator reads and changes the pool
 * through this one copy, so a decision sees what the previous one left, with no read in between.
 */
export class PoolStore {
  config: PoolConfig | null = null;
  bucket: BucketState = { level: 0, updatedAt: 0 };
  /** This storage's outbox epoch (see the meta table). */
  readonly epoch: string;
  /** The last outbox seq written (seqs only grow, also across deliveries). */
  lastSeq = 0;
  /** Spending refused for lack of units (rate_limited), counted in memory and written once per call. */
  denials = 0;
  /** The denial count last written to storage. */
  private savedDenials = 0;

  constructor(readonly sql: SqlStorage, private readonly host: StoreHost) {
    createTables(sql);
    sql.exec("INSERT INTO meta (name, value) VALUES ('epoch', ?) ON CONFLICT (name) DO NOTHING", crypto.randomUUID());
    this.epoch = sql.exec<{ value: string }>("SELECT value FROM meta WHERE name = 'epoch'").one().value;
  }

  /** Upgrade old tables, then read the configuration, the bucket (as the newest write left it) and the counters. */
  load(): void {
    migrate(this.sql);
    this.denials = this.sql.exec<{ value: number }>("SELECT value FROM counters WHERE name = 'denials'").toArray()[0]?.value ?? 0;
    this.savedDenials = this.denials;
    const row = this.sql.exec<{ level: number; updated_at: number; config: string; outbox_seq: number }>(
      "SELECT level, updated_at, config, outbox_seq FROM bucket WHERE id = 1",
    ).toArray()[0];
    this.lastSeq = Math.max(row?.outbox_seq ?? 0, this.sql.exec<{ n: number | null }>("SELECT MAX(seq) AS n FROM usage_outbox").one().n ?? 0);
    if (row) {
      this.config = JSON.parse(row.config) as PoolConfig;
      this.bucket = { level: row.level, updatedAt: row.updated_at };
      // A consume after the bucket row's last write left the newer level on its outbox row.
      const snapshot = this.sql.exec<{ level: number; updated_at: number }>(
        "SELECT level, updated_at FROM usage_outbox WHERE seq > ? AND level IS NOT NULL ORDER BY seq DESC LIMIT 1",
        row.outbox_seq,
      ).toArray()[0];
      if (snapshot) this.bucket = { level: snapshot.level, updatedAt: snapshot.updated_at };
    }
  }

  /** This outbox's name as clients' objects count its deliveries: the pool and the storage's epoch. */
  source(poolId: string): string {
    return `${poolId}:${this.epoch}`;
  }

  /** Adopt the caller's configuration when it is newer than ours; the bucket starts full. */
  adopt(config: PoolConfig): PoolConfig {
    const current = this.config;
    if (current && current.version >= config.version) return current;
    const now = Date.now();
    if (current) {
      this.refillTo(now, current);
      // Capacity added is available at once (a resize up serves waiting work now); a cut clamps the level.
      const added = Math.max(0, config.capacity - current.capacity);
      this.bucket = { level: Math.min(this.bucket.level + added, config.capacity), updatedAt: now };
    } else {
      this.bucket = { level: config.capacity, updatedAt: now };
    }
    this.config = config;
    this.saveConfig(config);
    return config;
  }

  /** The configuration a call names: adopted when given whole, else ours when it is at least that version. */
  current(config: PoolConfig | number): PoolConfig | null {
    return typeof config !== "number" ? this.adopt(config) : this.config && this.config.version >= config ? this.config : null;
  }

  saveConfig(config: PoolConfig): void {
    this.sql.exec(
      `INSERT INTO bucket (id, level, updated_at, config, outbox_seq) VALUES (1, ?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET level = excluded.level, updated_at = excluded.updated_at, config = excluded.config,
         outbox_seq = excluded.outbox_seq`,
      this.bucket.level, this.bucket.updatedAt, JSON.stringify(config), this.lastSeq,
    );
  }

  refillTo(now: number, cfg: PoolConfig): void {
    this.bucket = refill(this.bucket, cfg, now);
  }

  whole(): number {
    return Math.floor(this.bucket.level + 1e-9);
  }

  /** Write the bucket row; it then supersedes every level carried by the outbox rows written so far. */
  saveBucket(): void {
    this.sql.exec("UPDATE bucket SET level = ?, updated_at = ?, outbox_seq = ? WHERE id = 1", this.bucket.level, this.bucket.updatedAt, this.lastSeq);
  }

  /** For /metrics: written by the spending call that counted them (once per batch), so the count survives restarts. */
  saveDenials(): void {
    if (this.denials === this.savedDenials) return;
    this.sql.exec(
      "INSERT INTO counters (name, value) VALUES ('denials', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
      this.denials,
    );
    this.savedDenials = this.denials;
  }

  usageEvent(cfg: PoolConfig, caller: Caller, requestId: string | null, kind: UsageEvent["kind"], units: number, at: number): UsageEvent {
    return {
      eventId: newId("event", at),
      poolId: cfg.id,
      clientId: caller.clientId,
      requestId,
      via: caller.via,
      kind,
      units,
      costNano: costOf(units, cfg.costPerUnitNano),
      at,
    };
  }

  /** Usage events waiting for delivery. */
  outboxSize(): number {
    return this.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM usage_outbox").one().n;
  }

  /**
   * Put events in the outbox in one statement (each payload stored as written here) for the alarm to
   * deliver. `withLevel` (a single consume): the row also carries the bucket as it is now, in place of
   * a bucket UPDATE; the caller writes the bucket row otherwise.
   */
  queueUsage(events: UsageEvent[], withLevel = false): void {
    if (events.length === 0) return;
    if (events.length === 1) {
      // The hot path (one consume): a plain insert, without building and walking a JSON array.
      const [event] = events as [UsageEvent];
      this.lastSeq += 1;
      if (withLevel) {
        this.sql.exec(
          "INSERT INTO usage_outbox (seq, payload, level, updated_at) VALUES (?, ?, ?, ?)",
          this.lastSeq, JSON.stringify(event), this.bucket.level, this.bucket.updatedAt,
        );
      } else {
        this.sql.exec("INSERT INTO usage_outbox (seq, payload) VALUES (?, ?)", this.lastSeq, JSON.stringify(event));
      }
    } else {
      // json_each gives an object element's `value` as its JSON text: one encoding of the batch, not
      // each event encoded and then escaped again as a string of the array (~3% of a drain's CPU).
      this.sql.exec(
        "INSERT INTO usage_outbox (seq, payload) SELECT ? + key, value FROM json_each(?) ORDER BY key",
        this.lastSeq + 1, JSON.stringify(events),
      );
      this.lastSeq += events.length;
      if (withLevel) this.saveBucket();
    }
    const at = events.reduce((t, e) => Math.min(t, e.at), Infinity);
    this.host.ensureAlarm(at + this.host.flushDelay());
  }

  /**
   * Replay the stored answer for a repeated idempotency key (same parameters), refuse it for different
   * parameters, or run `fn` and store its answer. Denials are not stored: a retry may succeed later.
   */
  idempotent<T>(caller: Caller, op: string, opts: SpendOptions & { ttlMs?: number }, fn: () => Result<T>): Result<T> {
    if (!opts.idempotencyKey) return fn();
    const key = `${caller.clientId}:${op}:${opts.idempotencyKey}`;
    const fingerprint = JSON.stringify([opts.amount, opts.requestId ?? null, opts.ttlMs ?? null]);
    const prior = this.sql.exec<{ fingerprint: string; response: string }>(
      "SELECT fingerprint, response FROM idempotency WHERE key = ?", key,
    ).toArray()[0];
    if (prior) {
      if (prior.fingerprint !== fingerprint) {
        return fail("idempotency_conflict", "idempotency key reused with different parameters", { idempotency_key: opts.idempotencyKey });
      }
      return JSON.parse(prior.response) as Result<T>;
    }
    const result = fn();
    if (result.ok) {
      this.sql.exec(
        "INSERT INTO idempotency (key, fingerprint, response, created_at) VALUES (?, ?, ?, ?)",
        key, fingerprint, JSON.stringify(result), Date.now(),
      );
    }
    return result;
  }
}
