// PassWaker: a shard's next pass. Soon (within SOON_MS) it runs on a timer, with the durable alarm kept
// set no later than BACKSTOP_MS ahead and written only when none is set that early; later it is the
// alarm alone. Against a real object's storage, counting its setAlarm writes.
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { AlarmClock } from "../../src/objects/alarm";
import { BACKSTOP_MS, PassWaker, SOON_MS } from "../../src/objects/scheduler/wake";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const stub = () => env.POOL.get(env.POOL.idFromName(`pass-waker-${crypto.randomUUID()}`));

/** The object's storage with its setAlarm calls recorded. */
function counted(storage: DurableObjectStorage, writes: number[]): DurableObjectStorage {
  return new Proxy(storage, {
    get(target, prop) {
      if (prop === "setAlarm") return (at: number) => (writes.push(at), target.setAlarm(at));
      const v = Reflect.get(target, prop) as unknown;
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

/** A waker on the object's alarm (its setAlarm calls recorded in `seen.writes`) whose pass counts itself in `seen.passes`. */
async function countingWaker(state: DurableObjectState): Promise<{ waker: PassWaker; seen: { passes: number; writes: number[] } }> {
  const seen = { passes: 0, writes: [] as number[] };
  const clock = new AlarmClock(counted(state.storage, seen.writes), "test");
  await clock.load();
  return { waker: new PassWaker(clock, async () => void (seen.passes += 1)), seen };
}

describe("PassWaker", () => {
  afterEach(() => vi.restoreAllMocks());

  it("runs a pass wanted soon on a timer, once for many asks, behind one alarm write BACKSTOP_MS ahead", async () => {
    await runInDurableObject(stub(), async (_i, state) => {
      const { waker, seen } = await countingWaker(state);
      const { writes } = seen;
      const before = Date.now();
      for (let i = 0; i < 20; i++) waker.ensure(Date.now()); // a busy stretch: 20 asks for a pass now
      expect(seen.passes).toBe(0); // not inside the caller's task
      await sleep(20);
      expect(seen.passes).toBe(1);
      // One alarm write, the backstop, however many asks.
      expect(writes).toHaveLength(1);
      expect(writes[0]!).toBeGreaterThanOrEqual(before + BACKSTOP_MS);
      expect(writes[0]!).toBeLessThanOrEqual(Date.now() + BACKSTOP_MS);
      expect(await state.storage.getAlarm()).toBe(writes[0]);
      // The next stretch's asks: another timer pass, still no alarm write (the backstop set is early enough).
      waker.ensure(Date.now() + 30);
      waker.ensure(Date.now() + 10); // sooner: the timer moves
      await sleep(60);
      expect(seen.passes).toBe(2);
      expect(writes).toHaveLength(1);
      await state.storage.deleteAlarm();
    });
  });

  it(`leaves a pass wanted later than ${SOON_MS} ms to the alarm alone`, async () => {
    await runInDurableObject(stub(), async (_i, state) => {
      const { waker, seen } = await countingWaker(state);
      const { writes } = seen;
      const at = Date.now() + SOON_MS + 200;
      waker.ensure(at);
      await sleep(SOON_MS + 50);
      expect(seen.passes).toBe(0);
      expect(writes).toEqual([at]);
      expect(await state.storage.getAlarm()).toBe(at);
      await state.storage.deleteAlarm();
    });
  });

  it("never overlaps its passes: a timer that fires during a pass runs one more after it, and the alarm's pass waits for the timer's", async () => {
    await runInDurableObject(stub(), async (_i, state) => {
      const clock = new AlarmClock(state.storage, "test");
      await clock.load();
      let running = 0;
      let most = 0;
      const triggers: string[] = [];
      const waker = new PassWaker(clock, async (trigger) => {
        running += 1;
        most = Math.max(most, running);
        triggers.push(trigger);
        await sleep(40);
        running -= 1;
      });
      waker.ensure(Date.now());
      await sleep(10); // the first timer pass is running
      waker.ensure(Date.now()); // fires during it: one more after it
      waker.ensure(Date.now()); // still that one
      const alarm = waker.alarm(); // waits for the timer's passes' turn
      await alarm;
      await sleep(120);
      expect(most).toBe(1);
      expect(triggers).toHaveLength(3);
      expect(triggers[0]).toBe("timer");
      expect(triggers.filter((t) => t === "alarm")).toHaveLength(1);
      await state.storage.deleteAlarm();
    });
  });

  it("sets a timer again when the one it holds is overdue (it never fired: its object's context went)", async () => {
    await runInDurableObject(stub(), async (_i, state) => {
      const { waker, seen } = await countingWaker(state);
      // As a waker whose timer was set 2 s ago and never ran.
      (waker as unknown as { timerAt: number }).timerAt = Date.now() - 2000;
      waker.ensure(Date.now());
      await sleep(20);
      expect(seen.passes).toBe(1);
      await state.storage.deleteAlarm();
    });
  });

  it("logs a timer pass that fails (the alarm behind it passes again) instead of rejecting unhandled", async () => {
    await runInDurableObject(stub(), async (_i, state) => {
      const lines: string[] = [];
      vi.spyOn(console, "log").mockImplementation((line: unknown) => void lines.push(String(line)));
      const clock = new AlarmClock(state.storage, "test");
      await clock.load();
      const waker = new PassWaker(clock, () => Promise.reject(new Error("D1 unreachable")));
      waker.ensure(Date.now());
      await sleep(20);
      const failed = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === "scheduler_pass_failed");
      expect(failed).toEqual([expect.objectContaining({ level: "error", trigger: "timer", error: "Error: D1 unreachable" })]);
      expect(await state.storage.getAlarm()).not.toBeNull(); // the backstop is still set
      await state.storage.deleteAlarm();
    });
  });
});
