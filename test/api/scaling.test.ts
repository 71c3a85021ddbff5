import { createScheduledController } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { decideScaling, type ScalingBounds, type ScalingPolicy, type TriggerValues } from "../../src/domain/scaling";
import { runCron } from "../../src/cron";
import { recentScalingEvents } from "../../src/services/scaling";
import { ADMIN, call, consume, enqueue, eventually, expectError, KEYS, makePool, makeTemplate, sleep } from "../support/helpers";

// ---- the pure decision --------------------------------------------------------------------------

const POLICY: ScalingPolicy = {
  targetUtilization: 0.5, scaleUpUtilization: 0.8, scaleDownUtilization: 0.2, windowMs: 300_000,
  scaleUpQueueDepth: 10, scaleUpWaitMs: 60_000, step: 10, cooldownMs: 60_000, enabled: true,
};
const BOUNDS: ScalingBounds = { capacity: 100, minCapacity: 50, maxCapacity: 200 };
const NOW = 1_800_000_000_000;

function readings(over: Partial<TriggerValues> = {}): TriggerValues {
  return { utilization: 0.5, used_units: 50, samples: 6, window_ms: 300_000, queued_requests: 0, queued_units: 0, oldest_wait_ms: 0, ...over };
}

function decide(t: Partial<TriggerValues>, opts: { policy?: Partial<ScalingPolicy>; bounds?: Partial<ScalingBounds>; cooldownUntil?: number | null } = {}) {
  return decideScaling({ ...POLICY, ...opts.policy }, { ...BOUNDS, ...opts.bounds }, readings(t), opts.cooldownUntil ?? null, NOW);
}

describe("decideScaling (pure)", () => {
  it("scales up at the utilization threshold exactly, not below it, by the whole steps that reach the target", () => {
    // 80 units in use at target 50% need 160: six steps of 10
    expect(decide({ utilization: 0.8, used_units: 80 })).toMatchObject({ action: "scale_up", from: 100, to: 160, wanted: 160, blocked: null, cooldownUntil: NOW + 60_000 });
    expect(decide({ utilization: 0.79, used_units: 79 })).toMatchObject({ action: "none", to: 100, blocked: null });
    // 81 units need 162: a partial step rounds up to a whole one
    expect(decide({ utilization: 0.81, used_units: 81 }).to).toBe(170);
    // the target is already met (40 units in 100): still one step, never zero
    expect(decide({ utilization: 0.8, used_units: 40 }).to).toBe(110);
  });

  it("counts the units waiting in the demand, and fires on queue depth and on the oldest wait at their thresholds", () => {
    expect(decide({ queued_requests: 10, queued_units: 30 })).toMatchObject({ action: "scale_up", to: 160 }); // (50 + 30) / 0.5
    expect(decide({ queued_requests: 9, queued_units: 30 }).action).toBe("none");
    expect(decide({ queued_requests: 1, queued_units: 1, oldest_wait_ms: 60_000 })).toMatchObject({ action: "scale_up", to: 110 });
    expect(decide({ queued_requests: 1, queued_units: 1, oldest_wait_ms: 59_999 }).action).toBe("none");
    // a wait with nothing waiting (stale) is no trigger; null triggers are off
    expect(decide({ queued_requests: 0, oldest_wait_ms: 90_000 }).action).toBe("none");
    expect(decide({ queued_requests: 50, queued_units: 50 }, { policy: { scaleUpQueueDepth: null } }).action).toBe("none");
    const both = decide({ utilization: 0.9, used_units: 90, queued_requests: 12, queued_units: 12, oldest_wait_ms: 61_000 });
    expect(both.reason.split("; ")).toHaveLength(3);
  });

  it("clamps to max_capacity, and at max_capacity does nothing, saying why", () => {
    expect(decide({ utilization: 0.8, used_units: 80 }, { bounds: { maxCapacity: 150 } })).toMatchObject({ action: "scale_up", to: 150, wanted: 160 });
    expect(decide({ utilization: 0.95, used_units: 190 }, { bounds: { capacity: 200 } })).toMatchObject({ action: "none", to: 200, blocked: "max_capacity", wanted: 380 });
  });

  it("scales down at the threshold exactly by one step, never below the target's need nor min_capacity, and not while work waits", () => {
    expect(decide({ utilization: 0.2, used_units: 20 })).toMatchObject({ action: "scale_down", from: 100, to: 90 });
    expect(decide({ utilization: 0.21, used_units: 21 }).action).toBe("none");
    expect(decide({ utilization: 0.2, used_units: 20, queued_requests: 1, queued_units: 1 }).action).toBe("none");
    // 48 units in use need 96 at 50%: shrink to 96, not 90
    expect(decide({ utilization: 0.2, used_units: 48 })).toMatchObject({ action: "scale_down", to: 96 });
    // units in use already need the whole capacity: no change, nothing blocked it
    expect(decide({ utilization: 0.2, used_units: 60 })).toMatchObject({ action: "none", blocked: null });
    expect(decide({ utilization: 0.1, used_units: 5 }, { bounds: { capacity: 55 } })).toMatchObject({ action: "scale_down", to: 50, wanted: 45 });
    expect(decide({ utilization: 0.1, used_units: 5 }, { bounds: { capacity: 50 } })).toMatchObject({ action: "none", blocked: "min_capacity" });
  });

  it("changes nothing while cooling down (to the millisecond), but says what it wanted; a disabled policy or no readings decide nothing", () => {
    const cooling = decide({ utilization: 0.9, used_units: 90 }, { cooldownUntil: NOW + 1 });
    expect(cooling).toMatchObject({ action: "none", to: 100, wanted: 180, blocked: "cooldown", cooldownUntil: null });
    expect(cooling.reason).toContain("cooling down until");
    expect(decide({ utilization: 0.9, used_units: 90 }, { cooldownUntil: NOW })).toMatchObject({ action: "scale_up", to: 180 });
    expect(decide({ utilization: 0.1, used_units: 10 }, { cooldownUntil: NOW + 1 })).toMatchObject({ action: "none", blocked: "cooldown" });
    expect(decide({ utilization: 0.9, used_units: 90 }, { policy: { enabled: false } })).toMatchObject({ action: "none", blocked: "disabled" });
    expect(decide({ utilization: null, used_units: null, samples: 0 })).toMatchObject({ action: "none", blocked: null });
  });
});

// ---- the service, through the API ---------------------------------------------------------------

let seq = 0;
function poolId(): string {
  seq += 1;
  return `sc-${crypto.randomUUID().slice(0, 8)}-${seq}`;
}

/** A dynamic pool made through the admin API, with a policy (refill 0, so levels move only by spending). */
async function dynamicPool(opts: { capacity?: number; min?: number; max?: number; policy?: Record<string, unknown> } = {}): Promise<string> {
  const id = poolId();
  const created = await call("POST", "/admin/pools", {
    token: ADMIN,
    json: {
      id, name: id, unit: "slots", capacity: opts.capacity ?? 100, refill_per_sec: 0, cost_per_unit_nano: 0,
      sizing: "dynamic", min_capacity: opts.min ?? 50, max_capacity: opts.max ?? 200,
    },
  });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  const put = await call("PUT", `/admin/pools/${id}/scaling/policy`, {
    token: ADMIN,
    json: { target_utilization: 0.6, scale_up_utilization: 0.8, scale_down_utilization: 0.2, step: 25, cooldown_ms: 600_000, ...opts.policy },
  });
  expect(put.status, JSON.stringify(put.body)).toBe(200);
  return id;
}

/** Minute samples at these levels, the newest a minute ago. */
async function samples(pool: string, capacity: number, levels: number[]): Promise<void> {
  const now = Date.now();
  await env.DB.batch(levels.map((level, i) =>
    env.DB.prepare("INSERT INTO pool_samples (pool_id, at, level, capacity) VALUES (?1, ?2, ?3, ?4)").bind(pool, now - (i + 1) * 60_000, level, capacity)));
}

const evaluate = (pool: string) => call("POST", `/admin/pools/${pool}/scaling/evaluate`, { token: ADMIN });
const history = async (pool: string) => (await call("GET", `/admin/pools/${pool}/scaling/history`, { token: ADMIN })).body.events as any[];
const detail = async (pool: string) => (await call("GET", `/admin/pools/${pool}`, { token: ADMIN })).body;

describe("evaluation under synthetic load", () => {
  it("utilization over the window scales up exactly, through the admin path (version bump, pushed to the object), and is recorded", async () => {
    const pool = await dynamicPool();
    expect((await consume(pool, 90)).status).toBe(200); // live: 10 of 100 left
    await samples(pool, 100, [10, 10, 10, 10]);
    // a sample outside the 5-minute window counts for nothing
    await env.DB.prepare("INSERT INTO pool_samples (pool_id, at, level, capacity) VALUES (?1, ?2, 100, 100)").bind(pool, Date.now() - 301_000).run();

    const r = await evaluate(pool);
    expect(r.status).toBe(200);
    // 90 units in use at 60% need 150: two steps of 25
    expect(r.body).toMatchObject({ applied: true, evaluation: { action: "scale_up", from_capacity: 100, to_capacity: 150, trigger: "manual", blocked: null } });
    expect(r.body.evaluation.trigger_values).toMatchObject({ utilization: 0.9, used_units: 90, samples: 5, queued_requests: 0 });
    expect(r.body.cooldown_until).toBe(r.body.event.at + 600_000);

    const d = await detail(pool);
    expect(d.pool).toMatchObject({ capacity: 150, version: 2 });
    // the object has it already, and the 50 units added are there to spend
    expect(d.live).toMatchObject({ capacity: 150, version: 2, level: 60 });
    expect((await consume(pool, 60)).status).toBe(200);

    const events = await history(pool);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ pool, action: "scale_up", from_capacity: 100, to_capacity: 150, trigger: "manual", trigger_values: { samples: 5 } });
    expect(events[0].reason).toContain("utilization 90% >= 80%");
    expect((await recentScalingEvents(env, 50)).map((e) => e.id)).toContain(events[0].id);
  });

  it("the cooldown blocks a second decision; clearing it lets the next one through", async () => {
    const pool = await dynamicPool({ max: 400 });
    expect((await consume(pool, 90)).status).toBe(200);
    expect((await evaluate(pool)).body.evaluation.to_capacity).toBe(150);
    // live 60 of 150 left: 90 in use is 60%, below the 80% threshold: no trigger, so nothing to block
    expect((await evaluate(pool)).body.evaluation).toMatchObject({ action: "none", blocked: null });

    expect((await consume(pool, 45)).status).toBe(200); // 135 of 150 in use: 90%
    const again = await evaluate(pool);
    expect(again.body).toMatchObject({
      applied: false, event: null, evaluation: { action: "none", blocked: "cooldown", from_capacity: 150, to_capacity: 150, wanted_capacity: 225 },
    });
    expect((await detail(pool)).pool.capacity).toBe(150);
    expect(await history(pool)).toHaveLength(1);

    const status = await call("GET", `/admin/pools/${pool}/scaling`, { token: ADMIN });
    expect(status.body).toMatchObject({ sizing: "dynamic", capacity: 150, in_cooldown: true, last_evaluation: { blocked: "cooldown" }, last_decision: { to_capacity: 150 } });
    expect(status.body.cooldown_until).toBe(status.body.last_decision.at + 600_000);

    const cleared = await call("POST", `/admin/pools/${pool}/scaling/cooldown`, { token: ADMIN, json: { clear: true } });
    expect(cleared.body).toMatchObject({ cooldown_until: null, in_cooldown: false });
    expect((await evaluate(pool)).body.evaluation).toMatchObject({ action: "scale_up", from_capacity: 150, to_capacity: 225 });
    expect(await history(pool)).toHaveLength(2);

    // a cooldown set by hand blocks too: 195 of 225 in use is 87%
    const until = Date.now() + 3_600_000;
    expect((await call("POST", `/admin/pools/${pool}/scaling/cooldown`, { token: ADMIN, json: { until } })).body.cooldown_until).toBe(until);
    expect((await consume(pool, 60)).status).toBe(200);
    expect((await evaluate(pool)).body.evaluation).toMatchObject({ action: "none", blocked: "cooldown" });
    expect(await history(pool)).toHaveLength(2);
  });

  it("bounds clamp: up to max_capacity, then no further; down to min_capacity", async () => {
    const pool = await dynamicPool({ max: 120, policy: { cooldown_ms: 0 } });
    expect((await consume(pool, 95)).status).toBe(200);
    expect((await evaluate(pool)).body.evaluation).toMatchObject({ action: "scale_up", to_capacity: 120, wanted_capacity: 175 });
    expect((await consume(pool, 25)).status).toBe(200);
    expect((await evaluate(pool)).body.evaluation).toMatchObject({ action: "none", blocked: "max_capacity", to_capacity: 120 });

    const idle = await dynamicPool({ capacity: 60, min: 50, policy: { cooldown_ms: 0 } });
    await samples(idle, 60, [60, 60, 60]);
    expect((await evaluate(idle)).body.evaluation).toMatchObject({ action: "scale_down", from_capacity: 60, to_capacity: 50, wanted_capacity: 35 });
    expect((await evaluate(idle)).body.evaluation).toMatchObject({ action: "none", blocked: "min_capacity" });
    expect((await detail(idle)).live).toMatchObject({ capacity: 50, level: 50 });
  });

  it("scales down by one step when idle over the window, keeping the target for what is in use", async () => {
    const pool = await dynamicPool();
    await samples(pool, 100, [90, 90, 90, 90]); // 10% used
    // mean over 5 readings (the live one is full): 8% used, 8 units; one step down to 75
    const r = await evaluate(pool);
    expect(r.body.evaluation).toMatchObject({ action: "scale_down", from_capacity: 100, to_capacity: 75 });
    expect(r.body.evaluation.trigger_values).toMatchObject({ utilization: 0.08, used_units: 8, samples: 5 });
    expect((await detail(pool)).live).toMatchObject({ capacity: 75, level: 75 });
  });

  it("work waiting on the pool scales it up (queue depth, then oldest wait), counting the waiting units", async () => {
    const pool = await dynamicPool({ policy: { scale_up_queue_depth: 10 } });
    const template = await makeTemplate([{ pool, amount: 6 }]);
    expect((await call("POST", "/admin/scheduler/stop", { token: ADMIN })).status).toBe(200);
    const ids: string[] = [];
    const add = async (template: string, n: number) => {
      const r = await enqueue({ requests: Array.from({ length: n }, (_, i) => ({ template, queue: "batch", params: { i } })) });
      expect(r.body.accepted).toBe(n);
      ids.push(...r.body.results.map((x: any) => x.request.id));
    };
    try {
      await add(template, 9);
      expect((await evaluate(pool)).body.evaluation).toMatchObject({ action: "none", trigger_values: { queued_requests: 9, queued_units: 54 } });
      await add(template, 1);
      const r = await evaluate(pool);
      // nothing in use, 60 units waiting: 100 at 60% already fits, so one step
      expect(r.body.evaluation).toMatchObject({ action: "scale_up", to_capacity: 125, trigger_values: { queued_requests: 10, queued_units: 60 } });
      expect(r.body.evaluation.reason).toContain("10 requests waiting >= 10");

      const slow = await dynamicPool({ policy: { scale_up_wait_ms: 1000 } });
      const slowTemplate = await makeTemplate([{ pool: slow, amount: 1 }]);
      await add(slowTemplate, 1);
      expect((await evaluate(slow)).body.evaluation.action).toBe("none");
      await sleep(1100);
      const waited = await evaluate(slow);
      expect(waited.body.evaluation).toMatchObject({ action: "scale_up", to_capacity: 125 });
      expect(waited.body.evaluation.reason).toMatch(/oldest wait \d+ ms >= 1000 ms/);
    } finally {
      for (const id of ids) expect((await call("DELETE", `/api/queue/${id}`, { token: KEYS.acme })).status).toBe(200);
      expect((await call("POST", "/admin/scheduler/start", { token: ADMIN })).status).toBe(200);
    }
  });

  it("concurrent evaluations of one pool change it once", async () => {
    const pool = await dynamicPool({ policy: { cooldown_ms: 0 } });
    expect((await consume(pool, 90)).status).toBe(200);
    const results = await Promise.all(Array.from({ length: 6 }, () => evaluate(pool)));
    expect(results.every((r) => r.status === 200)).toBe(true);
    const applied = results.filter((r) => r.body.applied);
    // with no cooldown a later evaluation may see the first resize (90 of 150: 60%, no trigger), or lose the race
    expect(applied).toHaveLength(1);
    expect(applied[0]!.body.evaluation.to_capacity).toBe(150);
    for (const r of results.filter((x) => !x.body.applied)) expect([null, "conflict"]).toContain(r.body.evaluation.blocked);
    expect(await history(pool)).toHaveLength(1);
    expect((await detail(pool)).pool).toMatchObject({ capacity: 150, version: 2 });
  });

  it("the minute cron evaluates every dynamic pool with a policy", async () => {
    const pool = await dynamicPool();
    expect((await consume(pool, 85)).status).toBe(200);
    const before = Date.now();
    await runCron(createScheduledController({ scheduledTime: Date.now(), cron: "* * * * *" }), env);
    const events = await history(pool);
    expect(events).toHaveLength(1);
    // 85 in use at 60% need 142: two steps of 25
    expect(events[0]).toMatchObject({ trigger: "cron", from_capacity: 100, to_capacity: 150 });
    expect(events[0].at).toBeGreaterThanOrEqual(before);
  });

  it("a dynamic pool that runs dry asks for an evaluation itself, once per cooldown", async () => {
    const pool = await dynamicPool({ capacity: 10, min: 10, max: 40, policy: { step: 10 } });
    expect((await consume(pool, 10)).status).toBe(200);
    expectError(await consume(pool, 1), 429, "rate_limited");
    const [event] = await eventually(async () => {
      const events = await history(pool);
      return events.length > 0 ? events : null;
    }, 5000, "a pool_dry scaling event");
    // all 10 in use at 60% need 17: one step
    expect(event).toMatchObject({ trigger: "pool_dry", from_capacity: 10, to_capacity: 20 });
    await eventually(async () => (await detail(pool)).live.capacity === 20, 5000, "the resize to reach the object");
    const scaling = async () => (await call("GET", `/admin/pools/${pool}/scaling`, { token: ADMIN })).body;
    expect((await scaling()).last_evaluation).toMatchObject({ trigger: "pool_dry", at: event.at });
    expect((await consume(pool, 10)).status).toBe(200);
    // dry again, within the cooldown: refused, and no evaluation is asked for (none is even recorded)
    expectError(await consume(pool, 1), 429, "rate_limited");
    expectError(await consume(pool, 1), 429, "rate_limited");
    await sleep(500);
    expect((await scaling()).last_evaluation.at).toBe(event.at);
    expect(await history(pool)).toHaveLength(1);
  });
});

describe("policies", () => {
  it("static pools refuse policies, cooldowns and evaluations with 409 pool_not_dynamic; they have no policy to read", async () => {
    const pool = await makePool({ capacity: 10 });
    const body = { target_utilization: 0.6, scale_up_utilization: 0.8, scale_down_utilization: 0.2, step: 5, cooldown_ms: 0 };
    expectError(await call("PUT", `/admin/pools/${pool.id}/scaling/policy`, { token: ADMIN, json: body }), 409, "pool_not_dynamic");
    expectError(await call("POST", `/admin/pools/${pool.id}/scaling/cooldown`, { token: ADMIN, json: { clear: true } }), 409, "pool_not_dynamic");
    expectError(await evaluate(pool.id), 409, "pool_not_dynamic");
    expectError(await call("GET", `/admin/pools/${pool.id}/scaling/policy`, { token: ADMIN }), 404, "scaling_policy_not_found");
    const status = await call("GET", `/admin/pools/${pool.id}/scaling`, { token: ADMIN });
    expect(status.body).toMatchObject({ sizing: "static", policy: null, min_capacity: null, cooldown_until: null, last_evaluation: null });
    expectError(await call("GET", "/admin/pools/no-such-pool/scaling", { token: ADMIN }), 404, "pool_not_found");
    expectError(await call("PUT", "/admin/pools/no-such-pool/scaling/policy", { token: ADMIN, json: body }), 404, "pool_not_found");
  });

  it("PUT replaces the policy with defaults for what is left out; bad input is 400 naming the field and changes nothing", async () => {
    const pool = await dynamicPool({ policy: { scale_up_queue_depth: 7, window_ms: 120_000 } });
    const got = await call("GET", `/admin/pools/${pool}/scaling/policy`, { token: ADMIN });
    expect(got.body.policy).toMatchObject({ pool, target_utilization: 0.6, scale_up_queue_depth: 7, window_ms: 120_000, scale_up_wait_ms: null, enabled: true, min_capacity: 50, max_capacity: 200 });

    const put = (json: unknown) => call("PUT", `/admin/pools/${pool}/scaling/policy`, { token: ADMIN, json });
    const base = { target_utilization: 0.6, scale_up_utilization: 0.8, scale_down_utilization: 0.2, step: 25, cooldown_ms: 0 };
    const fields = async (json: unknown) => {
      const r = await put(json);
      expectError(r, 400, "validation_failed");
      return r.body.error.details.fields.map((f: any) => f.path);
    };
    expect(await fields({ ...base, scale_down_utilization: 0.6 })).toEqual(["scale_down_utilization"]);
    expect(await fields({ ...base, scale_up_utilization: 0.5 })).toEqual(["scale_up_utilization"]);
    expect(await fields({ ...base, step: 0, window_ms: 59_999, cooldown_ms: -1 })).toEqual(expect.arrayContaining(["step", "window_ms", "cooldown_ms"]));
    expect(await fields({ target_utilization: 1.5 })).toEqual(expect.arrayContaining(["target_utilization", "step", "cooldown_ms"]));
    expect(await fields({ ...base, surprise: 1 })).toEqual([""]);
    expectError(await call("PUT", `/admin/pools/${pool}/scaling/policy`, { token: ADMIN, body: "{", headers: { "content-type": "application/json" } }), 400, "bad_request");
    expect((await call("GET", `/admin/pools/${pool}/scaling/policy`, { token: ADMIN })).body.policy.scale_up_queue_depth).toBe(7);

    const replaced = await put(base);
    expect(replaced.body.policy).toMatchObject({ scale_up_queue_depth: null, window_ms: 300_000, step: 25 });
  });

  it("a disabled policy is evaluated and shown but never applied; deleting it stops evaluation; a pool made static loses it", async () => {
    const pool = await dynamicPool({ policy: { enabled: false } });
    expect((await consume(pool, 95)).status).toBe(200);
    expect((await evaluate(pool)).body.evaluation).toMatchObject({ action: "none", blocked: "disabled" });
    expect((await call("DELETE", `/admin/pools/${pool}/scaling/policy`, { token: ADMIN })).body).toMatchObject({ pool, deleted: true });
    expectError(await call("DELETE", `/admin/pools/${pool}/scaling/policy`, { token: ADMIN }), 404, "scaling_policy_not_found");
    expectError(await evaluate(pool), 404, "scaling_policy_not_found");

    const other = await dynamicPool();
    const r = await call("PATCH", `/admin/pools/${other}`, { token: ADMIN, json: { sizing: "static" } });
    expect(r.body.pool).toMatchObject({ sizing: "static", min_capacity: null, max_capacity: null });
    expectError(await call("GET", `/admin/pools/${other}/scaling/policy`, { token: ADMIN }), 404, "scaling_policy_not_found");
  });

  it("a draining pool is not scaled", async () => {
    const pool = await dynamicPool();
    expect((await call("PATCH", `/admin/pools/${pool}`, { token: ADMIN, json: { status: "draining" } })).status).toBe(200);
    expectError(await evaluate(pool), 409, "pool_inactive");
  });

  it("cooldown input: exactly one of until, duration_ms, clear", async () => {
    const pool = await dynamicPool();
    const set = (json: unknown) => call("POST", `/admin/pools/${pool}/scaling/cooldown`, { token: ADMIN, json });
    expectError(await set({}), 400, "validation_failed");
    const two = await set({ clear: true, duration_ms: 1000 });
    expectError(two, 400, "validation_failed");
    expect(two.body.error.details.fields.map((f: any) => f.path).sort()).toEqual(["clear", "duration_ms"]);
    expectError(await set({ duration_ms: 0 }), 400, "validation_failed");
    const before = Date.now();
    const r = await set({ duration_ms: 60_000 });
    expect(r.body.in_cooldown).toBe(true);
    expect(r.body.cooldown_until).toBeGreaterThanOrEqual(before + 60_000);
    expect(r.body.cooldown_until).toBeLessThanOrEqual(Date.now() + 60_000);
  });
});

describe("history", () => {
  it("filters by pool, action and time and pages by cursor, newest first; deleted pools' history stays", async () => {
    const pool = await dynamicPool({ policy: { cooldown_ms: 0 }, max: 1000 });
    const ids: string[] = [];
    for (const amount of [90, 60, 60]) {
      expect((await consume(pool, amount)).status).toBe(200);
      const r = await evaluate(pool);
      expect(r.body.applied).toBe(true);
      ids.unshift(r.body.event.id);
    }
    const all = await history(pool);
    expect(all.map((e) => e.id)).toEqual(ids);
    // 90 of 100 in use → 150; 150 of 150 → 250; 210 of 250 → 350
    expect(all.map((e) => e.to_capacity)).toEqual([350, 250, 150]);

    const page1 = await call("GET", `/admin/pools/${pool}/scaling/history?limit=2`, { token: ADMIN });
    expect(page1.body.events.map((e: any) => e.id)).toEqual(ids.slice(0, 2));
    const page2 = await call("GET", `/admin/pools/${pool}/scaling/history?limit=2&cursor=${page1.body.next_cursor}`, { token: ADMIN });
    expect(page2.body.events.map((e: any) => e.id)).toEqual(ids.slice(2));
    expect(page2.body.next_cursor).toBeNull();

    const oldest = all[2].at;
    const since = await call("GET", `/admin/scaling/events?pool=${pool}&from=${oldest + 1}`, { token: ADMIN });
    expect(since.body.events.every((e: any) => e.at > oldest)).toBe(true);
    const until = await call("GET", `/admin/scaling/events?pool=${pool}&to=${oldest + 1}`, { token: ADMIN });
    expect(until.body.events.map((e: any) => e.id)).toContain(ids[2]);
    expect((await call("GET", `/admin/scaling/events?pool=${pool}&action=scale_down`, { token: ADMIN })).body.events).toEqual([]);

    expectError(await call("GET", "/admin/scaling/events?cursor=nope", { token: ADMIN }), 400, "validation_failed");
    expectError(await call("GET", "/admin/scaling/events?limit=0", { token: ADMIN }), 400, "validation_failed");
    expectError(await call("GET", "/admin/scaling/events?bogus=1", { token: ADMIN }), 400, "validation_failed");
    expectError(await call("GET", `/admin/pools/no-such-pool/scaling/history`, { token: ADMIN }), 404, "pool_not_found");

    expect((await call("DELETE", `/admin/pools/${pool}`, { token: ADMIN })).status).toBe(200);
    expect((await call("GET", `/admin/scaling/events?pool=${pool}`, { token: ADMIN })).body.events).toHaveLength(3);
  });

  it("only the admin token reads or changes scaling", async () => {
    const pool = await dynamicPool();
    for (const [method, path] of [["GET", `/admin/pools/${pool}/scaling`], ["GET", "/admin/scaling/events"], ["POST", `/admin/pools/${pool}/scaling/evaluate`]] as const) {
      expectError(await call(method, path), 401, "unauthorized");
      expectError(await call(method, path, { token: KEYS.acme }), 403, "forbidden");
    }
    expectError(await call("PUT", `/admin/pools/${pool}/scaling/policy`, { token: KEYS.acme, json: {} }), 403, "forbidden");
    expect(await history(pool)).toEqual([]);
  });
});
