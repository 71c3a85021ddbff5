import { dayKey } from "../../domain/calendar";
import { blockSize } from "../../domain/leases";
import { fitsQuota, type JobClaim, type QuotaDecision, type QuotaUse, type ResolvedQuota } from "../../domain/quota";
import type { SlotAsk } from "./types";

/** A block of slots lent to a scheduler shard is the job row of this id (the holder after it). */
const BLOCK_PREFIX = "slots:";

/** What the jobs need of the object that hosts them. */
export interface JobsHost {
  /** Keep the object alive until `promise` settles (wakes sent after answering). */
  waitUntil(promise: Promise<unknown>): void;
  /** Units spent per pool on a UTC day (./ledger.ts keeps them; not to be changed by the caller). */
  unitsOn(day: string): Readonly<Record<string, number>>;
}

/**
 * A client's held jobs (running requests and active allocations) against its quota: concurrent jobs,
 * CPU, memory and units per pool per UTC day. Jobs carry an expiry (a dispatch lease, an allocation's
 * TTL), so a crashed holder cannot leak them. Admission is synchronous (SQLite and memory only).
 */
export class Jobs {
  /** The jobs table in memory (loaded on first use), with its sums: admission reads them per call. */
  private held: HeldJobs | null = null;
  /** Scheduler shards refused a slot since slots last freed, by name (in memory; see wakeRefused). */
  private readonly refusedShards = new Set<string>();

  constructor(
    private readonly env: Env,
    private readonly sql: SqlStorage,
    private readonly host: JobsHost,
  ) {}

  /** Forget the copy in memory (the storage was wiped). */
  reset(): void {
    this.held = null;
  }

  /**
   * Admit jobs in the order asked while they fit `effective` (the quota, raised by an active burst).
   * A job already held keeps its place with the new expiry (a retried call is harmless). `shard`: the
   * scheduler shard asking, woken when slots free after a refusal. Expired jobs purged by the caller.
   */
  acquire(effective: ResolvedQuota, items: JobClaim[], now: number, shard?: string): QuotaDecision[] {
    const use = this.use(now);
    const held = this.heldOf(items.map((i) => i.jobId));
    // Decided in memory in order, written in two statements: expiries of jobs held before, new jobs.
    const extended = new Map<string, number>();
    const added = new Map<string, JobClaim>();
    const decisions = items.map((item): QuotaDecision => {
      const fresh = added.get(item.jobId);
      if (fresh) {
        added.set(item.jobId, { ...fresh, expiresAt: item.expiresAt });
        return { ok: true };
      }
      if (held.has(item.jobId)) {
        extended.set(item.jobId, item.expiresAt);
        return { ok: true };
      }
      const decision = fitsQuota(effective, use, item);
      if (!decision.ok) return decision;
      added.set(item.jobId, item);
      use.jobs += 1;
      use.cpuMillicores += item.cpuMillicores ?? 0;
      use.memoryMb += item.memoryMb ?? 0;
      for (const [pool, units] of Object.entries(item.pools ?? {})) use.poolToday[pool] = (use.poolToday[pool] ?? 0) + units;
      return { ok: true };
    });
    this.extendJobs(extended);
    this.insertJobs(now, [...added.values()]);
    if (shard && decisions.some((d) => !d.ok)) this.refusedShards.add(shard);
    return decisions;
  }

  /** Job slots held, by kind ("request", "allocation", "lease": blocks lent to scheduler shards). */
  countByKind(): Map<string, number> {
    const out = new Map<string, number>();
    for (const job of this.jobs().byId.values()) out.set(job.kind, (out.get(job.kind) ?? 0) + (job.slots ?? 1));
    return out;
  }

  /** Job slots held (expired ones purged by the caller). */
  count(): number {
    return this.jobs().slots;
  }

  /**
   * Lend a scheduler shard a block of slots, or resize the one it holds (decision 007; the shard's side
   * is ../scheduler/slot-leases.ts): one job row of kind "lease" for the whole block, which the shard
   * admits its requests against in memory. The size is set, not added to (an exchange made again
   * changes nothing more): what `ask.want` asks within plenty (blockSize), never below the slots the
   * shard has in use. Not to a client with daily caps per pool: a block holds no units. Returns the size.
   */
  lend(effective: ResolvedQuota, ask: SlotAsk, now: number): number {
    const held = this.jobs();
    const jobId = `${BLOCK_PREFIX}${ask.holder}`;
    const old = held.byId.get(jobId)?.slots ?? 0;
    const free = effective.maxConcurrent - (held.slots - old);
    const size = blockSize(free, ask.want, ask.inUse, Object.keys(effective.poolDaily).length === 0);
    if (size === 0) {
      if (old > 0) this.release([jobId]);
      return 0;
    }
    this.sql.exec(
      `INSERT INTO jobs (job_id, kind, acquired_at, expires_at, slots) VALUES (?, 'lease', ?, ?, ?)
       ON CONFLICT (job_id) DO UPDATE SET expires_at = excluded.expires_at, slots = excluded.slots`,
      jobId, now, ask.until, size,
    );
    held.add({ jobId, kind: "lease", expiresAt: ask.until, slots: size });
    if (size < old) this.wakeRefused();
    return size;
  }

  /** Free these jobs' holds; returns how many were held. */
  release(jobIds: string[]): number {
    const held = this.jobs();
    const known = jobIds.filter((id) => held.byId.has(id));
    if (known.length === 0) return 0;
    this.sql.exec("DELETE FROM jobs WHERE job_id IN (SELECT value FROM json_each(?))", JSON.stringify(known));
    for (const id of known) held.remove(id);
    this.wakeRefused();
    return known.length;
  }

  /** Drop holds whose time is up (nothing to do before the earliest expiry). */
  purgeExpired(now: number): void {
    const held = this.jobs();
    if (now < held.earliest || now < held.recomputeEarliest()) return;
    this.sql.exec("DELETE FROM jobs WHERE expires_at <= ?", now);
    for (const [id, job] of held.byId) if (job.expiresAt <= now) held.remove(id);
    held.recomputeEarliest();
  }

  /** Held jobs, CPU and memory, and per pool: units spent today plus units held by running jobs. */
  use(now: number): QuotaUse {
    const held = this.jobs();
    const poolToday: Record<string, number> = { ...this.host.unitsOn(dayKey(now)) };
    for (const [pool, units] of held.poolUnits) poolToday[pool] = (poolToday[pool] ?? 0) + units;
    return { jobs: held.slots, cpuMillicores: held.cpu, memoryMb: held.memory, poolToday };
  }

  /** Which of these jobs are held now: one query for a batch. */
  private heldOf(jobIds: string[]): Set<string> {
    const jobs = this.jobs().byId;
    return new Set(jobIds.filter((id) => jobs.has(id)));
  }

  /**
   * The held jobs, read from SQLite once per object life and then kept in step by the methods of this
   * class (the only writers of the table). Before, every admission summed the table in SQL and parsed
   * each job's pools: a chunk of admissions against a client holding hundreds of jobs cost O(held) each.
   */
  private jobs(): HeldJobs {
    if (this.held) return this.held;
    const held = new HeldJobs();
    for (const r of this.sql.exec<{ job_id: string; kind: string; expires_at: number; cpu_millicores: number; memory_mb: number; pools: string; slots: number }>(
      "SELECT job_id, kind, expires_at, cpu_millicores, memory_mb, pools, slots FROM jobs",
    )) {
      const kind = r.kind === "allocation" || r.kind === "lease" ? r.kind : "request";
      held.add({ jobId: r.job_id, kind, expiresAt: r.expires_at, cpuMillicores: r.cpu_millicores, memoryMb: r.memory_mb, pools: JSON.parse(r.pools) as Record<string, number>, slots: r.slots });
    }
    this.held = held;
    return held;
  }

  /** New expiries of held jobs, by job id. */
  private extendJobs(expiries: Map<string, number>): void {
    if (expiries.size === 0) return;
    this.sql.exec("UPDATE jobs SET expires_at = j.value FROM json_each(?) AS j WHERE jobs.job_id = j.key", JSON.stringify(Object.fromEntries(expiries)));
    const held = this.jobs();
    for (const [id, expiresAt] of expiries) held.extend(id, expiresAt);
  }

  private insertJobs(now: number, jobs: JobClaim[]): void {
    if (jobs.length === 0) return;
    this.sql.exec(
      `INSERT INTO jobs (job_id, kind, acquired_at, expires_at, cpu_millicores, memory_mb, pools)
       SELECT value ->> 0, value ->> 1, ?, value ->> 2, value ->> 3, value ->> 4, value ->> 5 FROM json_each(?)`,
      now, JSON.stringify(jobs.map((j) => [j.jobId, j.kind, j.expiresAt, j.cpuMillicores ?? 0, j.memoryMb ?? 0, JSON.stringify(j.pools ?? {})])),
    );
    const held = this.jobs();
    for (const j of jobs) held.add(j);
  }

  /**
   * Slots freed: wake the scheduler shards refused a slot since the last wake (issue 20: after a change of
   * SCHEDULER_SHARDS a client's work sits in two shards, and the one that frees a slot may not be the
   * one waiting). A shard's own settlements wake it anyway; this is for the other.
   */
  private wakeRefused(): void {
    for (const shard of this.refusedShards) this.host.waitUntil(this.env.SCHEDULER.get(this.env.SCHEDULER.idFromName(shard)).wake().catch(() => undefined));
    this.refusedShards.clear();
  }
}

/** The jobs a client holds, by id, with running sums of slots, CPU, memory and units per pool. */
class HeldJobs {
  readonly byId = new Map<string, JobClaim>();
  slots = 0;
  cpu = 0;
  memory = 0;
  readonly poolUnits = new Map<string, number>();
  /** A lower bound of the earliest expiry (removals only move the true one later). */
  earliest = Infinity;

  add(job: JobClaim): void {
    this.remove(job.jobId);
    this.byId.set(job.jobId, job);
    this.slots += job.slots ?? 1;
    this.cpu += job.cpuMillicores ?? 0;
    this.memory += job.memoryMb ?? 0;
    for (const [pool, units] of Object.entries(job.pools ?? {})) this.poolUnits.set(pool, (this.poolUnits.get(pool) ?? 0) + units);
    this.earliest = Math.min(this.earliest, job.expiresAt);
  }

  extend(jobId: string, expiresAt: number): void {
    const job = this.byId.get(jobId);
    if (!job) return;
    this.byId.set(jobId, { ...job, expiresAt });
    this.earliest = Math.min(this.earliest, expiresAt);
  }

  remove(jobId: string): void {
    const job = this.byId.get(jobId);
    if (!job) return;
    this.byId.delete(jobId);
    this.slots -= job.slots ?? 1;
    this.cpu -= job.cpuMillicores ?? 0;
    this.memory -= job.memoryMb ?? 0;
    for (const [pool, units] of Object.entries(job.pools ?? {})) {
      const left = (this.poolUnits.get(pool) ?? 0) - units;
      if (left === 0) this.poolUnits.delete(pool);
      else this.poolUnits.set(pool, left);
    }
  }

  recomputeEarliest(): number {
    let min = Infinity;
    for (const job of this.byId.values()) if (job.expiresAt < min) min = job.expiresAt;
    this.earliest = min;
    return min;
  }
}
