import { describe, expect, it } from "vitest";
import { compareRisk, projectMonthEnd, rankByRisk, usedPermille } from "../../src/domain/budget-risk";
import { minutesAgoLabel, niceCeil, polylinePoints, xOf, xTicks, yOf, yTicks, type Frame } from "../../src/domain/chart";
import { describeFailure, exactMoney, formatCents, relativeTime, utcText } from "../../src/domain/display";

const APR_1 = Date.UTC(2026, 3, 1); // April: 30 days
const DAY = 86_400_000;

describe("money to the cent", () => {
  it("rounds half away from zero to the cent, with thousands separators", () => {
    expect(formatCents(8_263_456_250)).toBe("$8.26");
    expect(formatCents(9_997_749_900_000)).toBe("$9,997.75");
    expect(formatCents(5_000_000)).toBe("$0.01"); // half a cent rounds up
    expect(formatCents(4_999_999)).toBe("<$0.01");
    expect(formatCents(1)).toBe("<$0.01");
    expect(formatCents(0)).toBe("$0.00");
    expect(formatCents(1_000_000_000_000)).toBe("$1,000.00");
    expect(formatCents(-1_234_567_890)).toBe("-$1.23");
    expect(formatCents(-3)).toBe("-<$0.01");
  });

  it("is exact at the largest safe integers (no float division)", () => {
    expect(formatCents(9_007_199_254_740_991)).toBe("$9,007,199.25");
    expect(formatCents(9_007_199_244_999_999)).toBe("$9,007,199.24");
    expect(formatCents(9_007_199_245_000_000)).toBe("$9,007,199.25");
  });

  it("the tooltip carries the exact nano-dollars", () => {
    expect(exactMoney(9_997_749_900_000)).toBe("9,997,749,900,000 nano-dollars ($9997.7499)");
    expect(exactMoney(500)).toBe("500 nano-dollars ($0.0000005)");
  });
});

describe("times", () => {
  const now = Date.UTC(2026, 3, 20, 12, 0, 0);
  it("relative, in the largest whole unit", () => {
    expect(relativeTime(now - 4_999, now)).toBe("just now");
    expect(relativeTime(now - 45_000, now)).toBe("45 s ago");
    expect(relativeTime(now - 3 * 60_000 - 59_000, now)).toBe("3 min ago");
    expect(relativeTime(now - 2 * 3_600_000 - 1, now)).toBe("2 h ago");
    expect(relativeTime(now - 4 * DAY, now)).toBe("4 d ago");
    expect(relativeTime(now + 10 * 60_000, now)).toBe("in 10 min");
  });
  it("UTC text for the tooltip", () => {
    expect(utcText(Date.UTC(2026, 3, 20, 9, 5, 7, 999))).toBe("2026-04-20 09:05:07 UTC");
  });
});

describe("failures as code and message", () => {
  it("a JSON error envelope gives its code and message", () => {
    expect(describeFailure('worker answered 503: {"error":{"code":"upstream_down","message":"SendGrid is down"},"trace_id":"t"}'))
      .toEqual({ code: "upstream_down", message: "SendGrid is down" });
    expect(describeFailure('worker answered 500: {"error":"simulated upstream error"}')).toEqual({ code: "http_500", message: "simulated upstream error" });
    expect(describeFailure('worker failed: {"code":"bad_params","message":"to is required"}')).toEqual({ code: "bad_params", message: "to is required" });
  });
  it("a body cut off at 300 characters is read by its fields", () => {
    const cut = `worker answered 502: {"error":{"code":"gateway","message":"${"x".repeat(20)}`;
    expect(describeFailure(cut)).toEqual({ code: "gateway", message: `${"x".repeat(20)}…` });
    expect(describeFailure('worker answered 502: {"oops": [1, 2')).toEqual({ code: "http_502", message: "(an unreadable error body)" });
  });
  it("plain texts get a code for their kind", () => {
    expect(describeFailure("worker answered 500: simulated upstream error")).toEqual({ code: "http_500", message: "simulated upstream error" });
    expect(describeFailure("worker answered 500: <b>boom</b>")).toEqual({ code: "http_500", message: "<b>boom</b>" });
    expect(describeFailure("worker answered 404: ")).toEqual({ code: "http_404", message: "the worker answered 404" });
    expect(describeFailure("worker timed out after 30000 ms")).toEqual({ code: "timeout", message: "timed out after 30000 ms" });
    expect(describeFailure("worker failed: connection reset")).toEqual({ code: "worker_error", message: "connection reset" });
    expect(describeFailure("no service binding NOTIFIER for template notify-sms")).toEqual({ code: "no_binding", message: "no service binding NOTIFIER for template notify-sms" });
    expect(describeFailure("worker answered the batch without this request")).toEqual({ code: "missing_from_batch", message: "worker answered the batch without this request" });
    expect(describeFailure(null)).toEqual({ code: "unknown", message: "(no error recorded)" });
    expect(describeFailure("something else")).toEqual({ code: "error", message: "something else" });
  });
});

describe("month-end projection", () => {
  it("spent × month length / elapsed, exact and rounded down", () => {
    // 10 days into a 30-day month: three times the spend.
    expect(projectMonthEnd(1_000_000_001, APR_1 + 10 * DAY)).toBe(3_000_000_003);
    // 7 days into April: 30/7 of it, rounded down (7 * 428571428 = 2999999996, remainder kept out).
    expect(projectMonthEnd(100_000_000, APR_1 + 7 * DAY)).toBe(Math.floor((100_000_000 * 30) / 7));
    expect(projectMonthEnd(100_000_000, APR_1 + 7 * DAY)).toBe(428_571_428);
  });
  it("amounts past 2^53 when multiplied stay exact (BigInt)", () => {
    const spent = 9_000_000_000_000_000; // $9M: spent × month ms is ~2.3e25
    const at = APR_1 + 13 * DAY + 12_345;
    const expected = (BigInt(spent) * BigInt(30 * DAY)) / BigInt(13 * DAY + 12_345);
    expect(projectMonthEnd(spent, at)).toBe(Number(expected));
  });
  it("extrapolates from at least one day: the first hour of a month does not multiply by 720", () => {
    expect(projectMonthEnd(1_000_000, APR_1 + 3_600_000)).toBe(30_000_000);
    expect(projectMonthEnd(1_000_000, APR_1)).toBe(30_000_000);
    // The month's last millisecond: the projection is what was spent.
    expect(projectMonthEnd(777, Date.UTC(2026, 4, 1) - 1)).toBe(777);
  });
  it("February of a leap year is 29 days", () => {
    expect(projectMonthEnd(1_000, Date.UTC(2028, 1, 1) + DAY)).toBe(29_000);
  });
});

describe("budgets by risk", () => {
  it("used per mille, rounded down; null for a zero budget", () => {
    expect(usedPermille(999_999, 1_000_000)).toBe(999);
    expect(usedPermille(1_000_000, 1_000_000)).toBe(1000);
    expect(usedPermille(2_500_000, 1_000_000)).toBe(2500);
    expect(usedPermille(5, 0)).toBeNull();
  });

  it("orders by spent / budget exactly, then more spent, then id", () => {
    const rows = [
      { client_id: "a", budget_nano: 100_000_000_000, spent_nano: 50_000_000_000 }, // 50%
      { client_id: "b", budget_nano: 3, spent_nano: 2 }, // 66.7%
      { client_id: "c", budget_nano: 10_000_000_000_000, spent_nano: 9_999_999_999_999 }, // 99.99999%
      { client_id: "d", budget_nano: 1_000, spent_nano: 1_000 }, // 100%
      { client_id: "e", budget_nano: 0, spent_nano: 1 }, // past a zero budget
      { client_id: "f", budget_nano: 0, spent_nano: 0 }, // 0
      { client_id: "g", budget_nano: 200_000_000_000, spent_nano: 100_000_000_000 }, // 50%, more spent than a
      { client_id: "h", budget_nano: 500, spent_nano: 0 },
    ];
    expect([...rows].sort(compareRisk).map((r) => r.client_id)).toEqual(["e", "d", "c", "b", "g", "a", "f", "h"]); // f and h both at 0%: by id
  });

  it("ranks clients with a budget, keeps the first n with percentage and projection, counts those without a limit", () => {
    const now = APR_1 + 15 * DAY; // half of April
    const r = rankByRisk([
      { client_id: "low", budget_nano: 100_000_000_000, spent_nano: 10_000_000_000 },
      { client_id: "unlimited", budget_nano: null, spent_nano: 999_000_000_000 },
      { client_id: "over", budget_nano: 100_000_000_000, spent_nano: 60_000_000_001 },
      { client_id: "edge", budget_nano: 100_000_000_000, spent_nano: 50_000_000_000 },
    ], now, 2);
    expect(r.with_budget).toBe(3);
    expect(r.without_limit).toBe(1);
    expect(r.top).toEqual([
      { client_id: "over", budget_nano: 100_000_000_000, spent_nano: 60_000_000_001, used_permille: 600, projected_nano: 120_000_000_002, projected_overrun: true },
      // Exactly on budget at month end is not an overrun.
      { client_id: "edge", budget_nano: 100_000_000_000, spent_nano: 50_000_000_000, used_permille: 500, projected_nano: 100_000_000_000, projected_overrun: false },
    ]);
  });
});

describe("chart scaling", () => {
  const f: Frame = { width: 110, height: 60, left: 10, right: 0, top: 10, bottom: 0 };
  const axes = { t0: 0, t1: 100, max: 10 };

  it("nice maxima are 1, 2 or 5 × 10^k, at least the floor", () => {
    expect([0, 0.3, 1, 1.01, 2, 3, 7, 10, 11, 450, 999, 1001].map((v) => niceCeil(v))).toEqual([1, 1, 1, 2, 2, 5, 10, 10, 20, 500, 1000, 2000]);
    expect(niceCeil(0.003, 0.001)).toBe(0.005);
    expect(niceCeil(0.02, 0.001)).toBe(0.02);
  });

  it("maps time to x and value to y inside the frame, clamped", () => {
    expect(xOf(0, axes, f)).toBe(10);
    expect(xOf(50, axes, f)).toBe(60);
    expect(xOf(100, axes, f)).toBe(110);
    expect(xOf(-5, axes, f)).toBe(10);
    expect(yOf(0, axes, f)).toBe(60);
    expect(yOf(10, axes, f)).toBe(10);
    expect(yOf(2.5, axes, f)).toBe(47.5);
    expect(yOf(99, axes, f)).toBe(10);
  });

  it("one polyline point per sample, in time order", () => {
    const points = polylinePoints([{ t: 100, v: 10 }, { t: 0, v: 0 }, { t: 50, v: 5 }], axes, f);
    expect(points).toBe("10,60 60,35 110,10");
    expect(points.split(" ")).toHaveLength(3);
  });

  it("ticks: 0, half and top; x every step back from now", () => {
    expect(yTicks(20)).toEqual([0, 10, 20]);
    expect(xTicks({ t0: 0, t1: 3_600_000, max: 1 }, 900_000)).toEqual([0, 900_000, 1_800_000, 2_700_000, 3_600_000]);
    expect(minutesAgoLabel(0, 3_600_000)).toBe("-60 min");
    expect(minutesAgoLabel(3_600_000, 3_600_000)).toBe("now");
  });
});
