import { describe, expect, it } from "vitest";
import { activePercent, burstRefusal, type BurstPolicy, type BurstSession } from "../../src/domain/burst";
import { fitsDaily, fitsQuota, withBurst, type ResolvedQuota } from "../../src/domain/quota";

const quota: ResolvedQuota = { maxConcurrent: 10, cpuMillicores: 4000, memoryMb: 8192, poolDaily: { "email-sendgrid": 100 } };
const idle = { jobs: 0, cpuMillicores: 0, memoryMb: 0, poolToday: {} };

describe("withBurst", () => {
  it("raises concurrency, CPU and memory by the percent, rounded down; daily caps stay", () => {
    expect(withBurst(quota, 150)).toEqual({ maxConcurrent: 15, cpuMillicores: 6000, memoryMb: 12288, poolDaily: { "email-sendgrid": 100 } });
    expect(withBurst({ ...quota, maxConcurrent: 5 }, 150).maxConcurrent).toBe(7);
    expect(withBurst({ ...quota, cpuMillicores: null }, 200).cpuMillicores).toBeNull();
  });
  it("no burst, or 100% or less, changes nothing", () => {
    expect(withBurst(quota, null)).toBe(quota);
    expect(withBurst(quota, 100)).toBe(quota);
  });
});

describe("fitsQuota", () => {
  it("admits up to exactly the concurrent limit", () => {
    expect(fitsQuota(quota, { ...idle, jobs: 9 }, { kind: "request" })).toEqual({ ok: true });
    expect(fitsQuota(quota, { ...idle, jobs: 10 }, { kind: "request" })).toEqual({
      ok: false, shortfall: { limit: "concurrent", limit_value: 10, in_use: 10, requested: 1, shortfall: 1 },
    });
  });
  it("names CPU, then memory, with the shortfall", () => {
    expect(fitsQuota(quota, { ...idle, cpuMillicores: 3500 }, { kind: "allocation", cpuMillicores: 500 })).toEqual({ ok: true });
    expect(fitsQuota(quota, { ...idle, cpuMillicores: 3500 }, { kind: "allocation", cpuMillicores: 750 })).toEqual({
      ok: false, shortfall: { limit: "cpu", limit_value: 4000, in_use: 3500, requested: 750, shortfall: 250 },
    });
    expect(fitsQuota(quota, { ...idle, memoryMb: 8000 }, { kind: "allocation", memoryMb: 200 })).toMatchObject({ ok: false, shortfall: { limit: "memory", shortfall: 8 } });
  });
  it("no CPU or memory limit: any amount fits", () => {
    const open = { ...quota, cpuMillicores: null, memoryMb: null };
    expect(fitsQuota(open, { ...idle, cpuMillicores: 1e9 }, { kind: "allocation", cpuMillicores: 1e9, memoryMb: 1e9 })).toEqual({ ok: true });
  });
  it("daily caps: exactly the cap fits, one more does not; pools without a cap are free", () => {
    expect(fitsDaily(quota, { poolToday: { "email-sendgrid": 99 } }, { "email-sendgrid": 1, "sms-twilio": 1e6 })).toEqual({ ok: true });
    expect(fitsDaily(quota, { poolToday: { "email-sendgrid": 99 } }, { "email-sendgrid": 2 })).toEqual({
      ok: false, shortfall: { limit: "pool_daily", pool: "email-sendgrid", limit_value: 100, in_use: 99, requested: 2, shortfall: 1 },
    });
    expect(fitsDaily({ ...quota, poolDaily: { p: 0 } }, { poolToday: {} }, { p: 1 })).toMatchObject({ ok: false, shortfall: { limit_value: 0, shortfall: 1 } });
  });
});

const policy: BurstPolicy = { tier: "premium", allowed: true, max_percent: 150, max_duration_ms: 3_600_000, cooldown_ms: 600_000, max_per_day: 2, requires_approval: false };
const T = 1_800_000_000_000;
function session(over: Partial<BurstSession>): BurstSession {
  return {
    id: "bst_1", client_id: "c", state: "ended", percent: 150, duration_ms: 3_600_000, reason: null, requested_at: T - 7_200_000,
    decided_at: null, started_at: T - 7_200_000, ends_at: T - 3_600_000, ended_at: T - 3_600_000, updated_at: T, ...over,
  };
}
const ask = { percent: 150, duration_ms: 3_600_000 };

describe("burstRefusal", () => {
  it("allows a first burst within the policy", () => {
    expect(burstRefusal(policy, [], ask, T)).toBeNull();
  });
  it("refuses a tier that may not burst, and asks above the policy", () => {
    expect(burstRefusal({ ...policy, allowed: false }, [], ask, T)?.code).toBe("burst_not_allowed");
    expect(burstRefusal(policy, [], { ...ask, percent: 151 }, T)?.details).toEqual({ max_percent: 150, percent: 151 });
    expect(burstRefusal(policy, [], { ...ask, duration_ms: 3_600_001 }, T)?.code).toBe("burst_not_allowed");
  });
  it("one open session at a time; an active one past its end no longer counts as open", () => {
    expect(burstRefusal(policy, [session({ state: "pending", started_at: null, ends_at: null, ended_at: null })], ask, T)?.code).toBe("burst_state");
    expect(burstRefusal(policy, [session({ state: "active", ends_at: T + 1, ended_at: null })], ask, T)?.code).toBe("burst_state");
    expect(burstRefusal({ ...policy, cooldown_ms: 0 }, [session({ state: "active", ends_at: T, ended_at: null })], ask, T)).toBeNull();
  });
  it("cooldown counts from the end of the last session, to the millisecond", () => {
    const last = session({ ends_at: T - 600_000, ended_at: T - 600_000 });
    expect(burstRefusal(policy, [last], ask, T - 1)?.details).toEqual({ cooldown_until: T });
    expect(burstRefusal(policy, [last], ask, T)).toBeNull();
    // ended early by the client: the cooldown starts then
    expect(burstRefusal(policy, [session({ ends_at: T + 3_000_000, ended_at: T - 600_000 })], ask, T)).toBeNull();
  });
  it("at most max_per_day sessions per rolling 24 hours; denied ones do not count", () => {
    const two = [session({ id: "a", requested_at: T - 80_000_000, started_at: T - 80_000_000, ends_at: T - 79_000_000, ended_at: T - 79_000_000 }), session({ id: "b" })];
    expect(burstRefusal(policy, two, ask, T)?.details).toEqual({ max_per_day: 2, used: 2 });
    expect(burstRefusal(policy, [two[0]!, session({ id: "b", state: "denied", started_at: null, ends_at: null, ended_at: null })], ask, T)).toBeNull();
    expect(burstRefusal(policy, two, ask, T - 80_000_000 + 86_400_001)).toBeNull();
  });
  it("activePercent: only an active session before its end", () => {
    expect(activePercent([session({ state: "active", percent: 140, ends_at: T + 1 })], T)).toBe(140);
    expect(activePercent([session({ state: "active", ends_at: T })], T)).toBeNull();
    expect(activePercent([session({ state: "pending" })], T)).toBeNull();
  });
});
