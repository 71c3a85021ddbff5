import type { Tier } from "./types";

/**
 * Burst capacity: a client may run above its quota, up to its tier policy's maximum, for a limited
 * time. Pure: the client's object keeps the sessions and calls these with the clock.
 */

export type BurstState = "pending" | "denied" | "active" | "ended" | "expired";

/** One burst session as it is recorded (the client's object owns it; D1 keeps a mirror). */
export interface BurstSession {
  id: string;
  client_id: string;
  state: BurstState;
  /** Limits while active: percent of the quota (150 = half as much again). */
  percent: number;
  duration_ms: number;
  reason: string | null;
  requested_at: number;
  decided_at: number | null;
  started_at: number | null;
  ends_at: number | null;
  ended_at: number | null;
  updated_at: number;
}

/** A tier's burst policy (table burst_policies). */
export interface BurstPolicy {
  tier: Tier;
  allowed: boolean;
  max_percent: number;
  max_duration_ms: number;
  /** At least this long between the end of one session and the start of the next. */
  cooldown_ms: number;
  /** Sessions (pending, active or finished, not denied) a client may start per rolling 24 hours. */
  max_per_day: number;
  requires_approval: boolean;
}

/** What a client asks for; missing fields take the policy's maximum. */
export interface BurstAsk {
  percent?: number;
  duration_ms?: number;
  reason?: string;
}

export const DEFAULT_BURST_PERCENT = 150;
export const DEFAULT_BURST_DURATION_MS = 60 * 60 * 1000;
const DAY_MS = 24 * 60 * 60 * 1000;

export type BurstRefusal = { code: "burst_not_allowed" | "burst_state"; message: string; details: Record<string, unknown> };

/**
 * Why this ask may not start a session now (null: it may). Refused when the tier may not burst, the
 * ask is above the policy, another session is pending or active, the cooldown since the last one has
 * not passed, or the day's allowance is used.
 */
export function burstRefusal(policy: BurstPolicy, sessions: BurstSession[], ask: Required<Pick<BurstAsk, "percent" | "duration_ms">>, now: number): BurstRefusal | null {
  if (!policy.allowed) return { code: "burst_not_allowed", message: `tier ${policy.tier} may not burst`, details: { tier: policy.tier } };
  if (ask.percent > policy.max_percent) {
    return { code: "burst_not_allowed", message: `at most ${policy.max_percent}% for tier ${policy.tier}`, details: { max_percent: policy.max_percent, percent: ask.percent } };
  }
  if (ask.duration_ms > policy.max_duration_ms) {
    return { code: "burst_not_allowed", message: `at most ${policy.max_duration_ms} ms for tier ${policy.tier}`, details: { max_duration_ms: policy.max_duration_ms, duration_ms: ask.duration_ms } };
  }
  const open = sessions.find((s) => (s.state === "pending" || s.state === "active") && !(s.state === "active" && s.ends_at !== null && s.ends_at <= now));
  if (open) return { code: "burst_state", message: `burst ${open.id} is already ${open.state}`, details: { burst_id: open.id, state: open.state } };
  const lastEnd = Math.max(0, ...sessions.filter((s) => s.started_at !== null).map((s) => Math.min(s.ended_at ?? Infinity, s.ends_at ?? Infinity)));
  if (lastEnd > 0 && now < lastEnd + policy.cooldown_ms) {
    return { code: "burst_not_allowed", message: `cooling down until ${lastEnd + policy.cooldown_ms}`, details: { cooldown_until: lastEnd + policy.cooldown_ms } };
  }
  const today = sessions.filter((s) => s.state !== "denied" && s.requested_at > now - DAY_MS).length;
  if (today >= policy.max_per_day) {
    return { code: "burst_not_allowed", message: `${policy.max_per_day} bursts per 24 hours already used`, details: { max_per_day: policy.max_per_day, used: today } };
  }
  return null;
}

/** The percent a session raises limits by at `now`, or null when none is active. */
export function activePercent(sessions: BurstSession[], now: number): number | null {
  const s = sessions.find((x) => x.state === "active" && x.ends_at !== null && x.ends_at > now);
  return s ? s.percent : null;
}
