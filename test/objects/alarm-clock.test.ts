// AlarmClock: an object's one alarm. Against a real object's storage it sets the alarm only when none
// due sooner is set; when setAlarm fails (the object is reset while an alarm is being set, as
// abortAllDurableObjects does to a pool mid-flush) the failure is logged, never an unhandled
// rejection, and the next ensure sets the alarm again.
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { AlarmClock } from "../../src/objects/alarm";

const settle = () => new Promise((r) => setTimeout(r, 10));
const stub = () => env.POOL.get(env.POOL.idFromName(`alarm-clock-${crypto.randomUUID()}`));

describe("AlarmClock", () => {
  afterEach(() => vi.restoreAllMocks());

  it("sets the alarm when none is due sooner, moves it earlier, and leaves an earlier one alone", async () => {
    await runInDurableObject(stub(), async (_i, state) => {
      const clock = new AlarmClock(state.storage, "test");
      await clock.load();
      const t = Date.now() + 60_000;
      clock.ensure(t);
      await settle();
      expect(await state.storage.getAlarm()).toBe(t);
      clock.ensure(t + 5_000); // later: the one set fires first
      await settle();
      expect(await state.storage.getAlarm()).toBe(t);
      clock.ensure(t - 5_000); // earlier: moved
      await settle();
      expect(await state.storage.getAlarm()).toBe(t - 5_000);
      clock.set(t + 10_000); // set: to exactly that time, later or not
      await settle();
      expect(await state.storage.getAlarm()).toBe(t + 10_000);
      await state.storage.deleteAlarm();
    });
  });

  it("logs a failed setAlarm instead of rejecting unhandled, and sets the alarm again on the next ensure", async () => {
    await runInDurableObject(stub(), async (_i, state) => {
      const lines: string[] = [];
      vi.spyOn(console, "log").mockImplementation((line: unknown) => void lines.push(String(line)));
      let refuse = true;
      let calls = 0;
      const storage = new Proxy(state.storage, {
        get(target, prop) {
          if (prop === "setAlarm") {
            return (at: number) => {
              calls += 1;
              return refuse ? Promise.reject(new Error("object reset")) : target.setAlarm(at);
            };
          }
          const v = Reflect.get(target, prop) as unknown;
          return typeof v === "function" ? v.bind(target) : v;
        },
      });
      const clock = new AlarmClock(storage, "pool");
      const t = Date.now() + 60_000;
      clock.ensure(t);
      await settle();
      expect(calls).toBe(1);
      const failed = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === "alarm_set_failed");
      expect(failed).toHaveLength(1);
      expect(failed[0]).toMatchObject({ level: "warn", object: "pool", at: t, error: "Error: object reset" });
      expect(await state.storage.getAlarm()).toBeNull();
      refuse = false;
      clock.ensure(t); // the same time again: not taken for set
      await settle();
      expect(calls).toBe(2);
      expect(await state.storage.getAlarm()).toBe(t);
      // A storage that throws at once (rather than rejecting) is logged the same way, and forgotten.
      const throwing = new Proxy(state.storage, {
        get(target, prop) {
          if (prop === "setAlarm") return () => { throw new Error("storage gone"); };
          const v = Reflect.get(target, prop) as unknown;
          return typeof v === "function" ? v.bind(target) : v;
        },
      });
      const other = new AlarmClock(throwing, "allocations");
      expect(() => other.ensure(t + 1_000)).not.toThrow();
      const thrown = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === "alarm_set_failed" && l.object === "allocations");
      expect(thrown).toEqual([expect.objectContaining({ level: "warn", at: t + 1_000, error: "Error: storage gone" })]);
      await state.storage.deleteAlarm();
    });
  });
});
