import { describe, expect, it } from "vitest";
import { DispatchWindow } from "../../src/domain/dispatch-window";
import { mulberry32 as random } from "../support/helpers";

/** A dispatch is in the window while its second has not wholly passed `now - window`; countSince, likewise for `now - span`. */
function reference(log: Array<{ at: number; client: string; queue: string }>, now: number, windowMs: number) {
  const inWindow = log.filter((d) => Math.floor(d.at / 1000) * 1000 + 999 > now - windowMs);
  const counts = new Map<string, number>();
  for (const d of inWindow) counts.set(d.client, (counts.get(d.client) ?? 0) + 1);
  const since = (spanMs: number, queue?: string) => inWindow.filter((d) => Math.floor(d.at / 1000) * 1000 + 999 > now - spanMs && (queue === undefined || d.queue === queue)).length;
  return { counts, total: inWindow.length, since };
}

describe("DispatchWindow: the fairness window's dispatches, per second", () => {
  it("counts per client and per queue as a list of every dispatch would, to the second, over 50 random streams", () => {
    const WINDOW = 5 * 60_000;
    for (let seed = 1; seed <= 50; seed++) {
      const r = random(seed);
      const w = new DispatchWindow(WINDOW);
      const log: Array<{ at: number; client: string; queue: string }> = [];
      let now = 1_800_000_000_000 + Math.floor(r() * 1000);
      for (let step = 0; step < 300; step++) {
        // Bursts and gaps: several dispatches a millisecond apart, or a pause of up to two minutes.
        now += r() < 0.1 ? Math.floor(r() * 120_000) : Math.floor(r() * 1500);
        for (let k = Math.floor(r() * 20); k > 0; k--) {
          const d = { at: now, client: `c${Math.floor(r() * 5)}`, queue: ["fast", "normal", "batch"][Math.floor(r() * 3)]! };
          log.push(d);
          w.note(d.at, d.client, d.queue);
        }
        if (r() < 0.3) {
          const ref = reference(log, now, WINDOW);
          expect(new Map(w.counts(now)), `seed ${seed} step ${step}`).toEqual(ref.counts);
          expect(w.total(now)).toBe(ref.total);
          expect(w.countSince(now, 60_000)).toBe(ref.since(60_000));
          expect(w.countSince(now, 60_000, "normal")).toBe(ref.since(60_000, "normal"));
        }
      }
    }
  });

  it("keeps at most a window's seconds however many dispatches: 1,000 a second for 20 minutes", () => {
    const w = new DispatchWindow(5 * 60_000);
    const start = 1_800_000_000_000;
    for (let ms = 0; ms < 20 * 60_000; ms += 1) w.note(start + ms, `c${ms % 3}`, "normal");
    const now = start + 20 * 60_000;
    expect(w.total(now)).toBe(5 * 60_000);
    expect([...w.counts(now).values()].reduce((a, b) => a + b, 0)).toBe(5 * 60_000);
    expect(w.countSince(now, 60_000, "normal")).toBe(60_000);
    expect((w as unknown as { seconds: unknown[] }).seconds.length).toBeLessThanOrEqual(2 * 301);
    // Nothing for longer than the window: empty, and a client with no dispatch left is forgotten.
    expect(new Map(w.counts(now + 6 * 60_000))).toEqual(new Map());
    expect(w.total(now + 6 * 60_000)).toBe(0);
  });

  it("counts a dispatch stamped before the last second (a clock step back) in that second", () => {
    const w = new DispatchWindow(60_000);
    w.note(10_500, "a", "fast");
    w.note(9_100, "b", "fast");
    expect(new Map(w.counts(10_600))).toEqual(new Map([["a", 1], ["b", 1]]));
    expect(w.countSince(10_600, 1000, "fast")).toBe(2);
    // Second 10 (10,000-10,999) is in the window while its last millisecond is after now - 60,000.
    expect(w.total(70_998)).toBe(2);
    expect(w.total(70_999)).toBe(0);
  });
});
