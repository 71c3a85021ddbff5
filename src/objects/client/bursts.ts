import { burstRefusal, type BurstAsk, type BurstPolicy, type BurstSession } from "../../domain/burst";
import { newId } from "../../domain/ids";
import { log } from "../../log";
import { upsertBurstSessions } from "../../storage/quotas";
import { AlarmClock } from "../alarm";
import type { BurstResult } from "./types";

/** What the burst sessions need of the object that hosts them. */
export interface BurstHost {
  clientId(): string;
  /** A burst began: wake the scheduler shard that owns this client. */
  wakeScheduler(): void;
}

/**
 * A client's burst sessions: a raise of its quota for a while, under its tier's policy, active at once
 * or pending an operator's approval. Kept in the object's storage and delivered to D1 (burst_sessions);
 * the alarm ends the active session on time and retries deliveries that failed.
 */
export class Bursts {
  private readonly clock: AlarmClock;

  constructor(
    private readonly env: Env,
    private readonly ctx: DurableObjectState,
    private readonly host: BurstHost,
  ) {
    this.clock = new AlarmClock(ctx.storage, "client");
  }

  /**
   * Ask for a burst under the tier's policy: active at once, or pending an operator's approval when
   * the policy says so. Ends by alarm at its expiry.
   */
  async request(policy: BurstPolicy, ask: BurstAsk): Promise<BurstResult> {
    const now = Date.now();
    const percent = ask.percent ?? policy.max_percent;
    const duration = ask.duration_ms ?? policy.max_duration_ms;
    const refusal = burstRefusal(policy, this.sessions(), { percent, duration_ms: duration }, now);
    if (refusal) return { ok: false, error: refusal };
    const session: BurstSession = {
      id: newId("burst"), client_id: this.host.clientId(), state: "pending", percent, duration_ms: duration,
      reason: ask.reason ?? null, requested_at: now, decided_at: null, started_at: null, ends_at: null, ended_at: null, updated_at: now,
    };
    if (!policy.requires_approval) Object.assign(session, { state: "active", decided_at: now, started_at: now, ends_at: now + duration });
    await this.save(session);
    if (session.state === "active") this.host.wakeScheduler();
    log.info("burst_requested", { client_id: session.client_id, burst_id: session.id, state: session.state, percent, duration_ms: duration });
    return { ok: true, value: session };
  }

  /** An operator approves (the session starts now, for its duration) or denies a pending session. */
  async decide(id: string, approve: boolean): Promise<BurstResult> {
    const now = Date.now();
    const session = this.sessions().find((s) => s.id === id);
    if (!session) return { ok: false, error: { code: "burst_not_found", message: `no burst ${id}`, details: { burst_id: id } } };
    if (session.state !== "pending") return { ok: false, error: { code: "burst_state", message: `burst ${id} is ${session.state}`, details: { burst_id: id, state: session.state } } };
    Object.assign(session, approve
      ? { state: "active", decided_at: now, started_at: now, ends_at: now + session.duration_ms, updated_at: now }
      : { state: "denied", decided_at: now, updated_at: now });
    await this.save(session);
    if (approve) this.host.wakeScheduler();
    log.info("burst_decided", { client_id: session.client_id, burst_id: id, state: session.state });
    return { ok: true, value: session };
  }

  /** End the active session now, or withdraw a pending one. */
  async end(): Promise<BurstResult> {
    const now = Date.now();
    this.expire(now);
    const session = this.sessions().find((s) => s.state === "active" || s.state === "pending");
    if (!session) return { ok: false, error: { code: "burst_not_found", message: "no active or pending burst", details: { client_id: this.host.clientId() } } };
    Object.assign(session, { state: "ended", ended_at: now, updated_at: now });
    await this.save(session);
    log.info("burst_ended", { client_id: session.client_id, burst_id: session.id });
    return { ok: true, value: session };
  }

  /** The alarm's part: end the active session on time, deliver records to D1, wake again when needed. */
  async onAlarm(): Promise<void> {
    this.expire(Date.now());
    await this.sync();
    this.armAlarm();
  }

  /** Every session, newest first. */
  sessions(): BurstSession[] {
    return this.sql().exec<{ session: string }>("SELECT session FROM bursts ORDER BY requested_at DESC, id DESC").toArray().map((r) => JSON.parse(r.session) as BurstSession);
  }

  /** Mark active sessions whose time is up as expired (the alarm does this on time; reads do it too). */
  expire(now: number): void {
    for (const s of this.sessions()) {
      if (s.state !== "active" || s.ends_at === null || s.ends_at > now) continue;
      Object.assign(s, { state: "expired", ended_at: s.ends_at, updated_at: now });
      this.sql().exec("UPDATE bursts SET session = ?, synced = 0 WHERE id = ?", JSON.stringify(s), s.id);
      log.info("burst_expired", { client_id: s.client_id, burst_id: s.id });
    }
  }

  private sql(): SqlStorage {
    return this.ctx.storage.sql;
  }

  private async save(session: BurstSession): Promise<void> {
    this.sql().exec(
      "INSERT INTO bursts (id, requested_at, session, synced) VALUES (?, ?, ?, 0) ON CONFLICT (id) DO UPDATE SET session = excluded.session, synced = 0",
      session.id, session.requested_at, JSON.stringify(session),
    );
    await this.sync();
    this.armAlarm();
  }

  /** Deliver changed session records to D1 (burst_sessions); on failure the alarm retries. */
  private async sync(): Promise<void> {
    const rows = this.sql().exec<{ id: string; session: string }>("SELECT id, session FROM bursts WHERE synced = 0").toArray();
    if (rows.length === 0) return;
    try {
      await upsertBurstSessions(this.env.DB, rows.map((r) => JSON.parse(r.session) as BurstSession));
      this.sql().exec("UPDATE bursts SET synced = 1 WHERE id IN (SELECT value FROM json_each(?)) AND session IN (SELECT value FROM json_each(?))",
        JSON.stringify(rows.map((r) => r.id)), JSON.stringify(rows.map((r) => r.session)));
    } catch (err) {
      log.warn("burst_sync_failed", { client_id: this.host.clientId(), error: String(err) });
    }
  }

  /** Wake at the active session's end, or in 5 s while records wait for delivery to D1. */
  private armAlarm(): void {
    const now = Date.now();
    const ends = this.sessions().filter((s) => s.state === "active" && s.ends_at !== null).map((s) => s.ends_at!);
    const unsynced = this.sql().exec("SELECT 1 FROM bursts WHERE synced = 0 LIMIT 1").toArray().length > 0;
    const at = Math.min(...ends, unsynced ? now + 5000 : Infinity);
    if (at !== Infinity) this.clock.set(Math.max(at, now));
  }
}
