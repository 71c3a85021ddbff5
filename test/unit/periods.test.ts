import { describe, expect, it } from "vitest";
import { csvCell, toCsv } from "../../src/domain/csv";
import { bucketIndex, dayRangeProblem, isoDay, isoWeekKey, periodKey, periodOfStart, periodStart, timeBuckets } from "../../src/domain/periods";

const utc = (y: number, m: number, d: number, h = 0, min = 0, s = 0, ms = 0) => Date.UTC(y, m - 1, d, h, min, s, ms);
const DAY = 86_400_000;

describe("periodStart", () => {
  const cases: Array<[string, number, "day" | "week" | "month", string]> = [
    ["a Monday starts its own week", utc(2026, 11, 23, 9), "week", "2026-11-23"],
    ["the last ms of a Sunday is still in the week of the Monday before", utc(2026, 11, 30) - 1, "week", "2026-11-23"],
    ["the next Monday starts the next week", utc(2026, 11, 30), "week", "2026-11-30"],
    ["a week crosses a month", utc(2026, 12, 2), "week", "2026-11-30"],
    ["a week crosses a year", utc(2027, 1, 1, 12), "week", "2026-12-28"],
    ["a day starts at 00:00 UTC", utc(2026, 11, 23, 23, 59, 59, 999), "day", "2026-11-23"],
    ["a month starts on the first", utc(2028, 2, 29, 6), "month", "2028-02-01"],
    ["the first days of 1970 belong to a week starting in 1969", utc(1970, 1, 1), "week", "1969-12-29"],
  ];
  for (const [name, ms, period, day] of cases) {
    it(name, () => expect(isoDay(periodStart(ms, period))).toBe(day));
  }
});

describe("ISO weeks", () => {
  const cases: Array<[number, string]> = [
    [utc(2025, 12, 28), "2025-W52"], // Sunday
    [utc(2025, 12, 29), "2026-W01"], // Monday: 2026-01-01 is a Thursday, so this week is 2026's first
    [utc(2026, 1, 1), "2026-W01"],
    [utc(2026, 1, 4, 23, 59), "2026-W01"],
    [utc(2026, 1, 5), "2026-W02"],
    [utc(2026, 12, 31), "2026-W53"], // 2026 starts on a Thursday: 53 weeks
    [utc(2027, 1, 1), "2026-W53"],
    [utc(2027, 1, 3), "2026-W53"],
    [utc(2027, 1, 4), "2027-W01"],
    [utc(2021, 1, 3), "2020-W53"],
    [utc(2024, 12, 30), "2025-W01"],
    [utc(2008, 12, 29), "2009-W01"],
    [utc(1970, 1, 1), "1970-W01"],
  ];
  for (const [ms, week] of cases) {
    it(`${isoDay(ms)} is in ${week}`, () => expect(isoWeekKey(ms)).toBe(week));
  }

  it("agree with the ordinal-date rule on every day of 1990-2040", () => {
    // ISO 8601: week = floor((ordinal day - weekday + 10) / 7), weekday Monday=1..Sunday=7; week 0 is the
    // previous year's last week, and a week 53 in a year with 52 is the next year's first.
    const weeksIn = (year: number) => {
      const p = (y: number) => (y + Math.floor(y / 4) - Math.floor(y / 100) + Math.floor(y / 400)) % 7;
      return p(year) === 4 || p(year - 1) === 3 ? 53 : 52;
    };
    const wrong: string[] = [];
    for (let ms = utc(1990, 1, 1); ms < utc(2041, 1, 1); ms += DAY) {
      const d = new Date(ms);
      let year = d.getUTCFullYear();
      const ordinal = (ms - Date.UTC(year, 0, 1)) / DAY + 1;
      const weekday = d.getUTCDay() || 7;
      let week = Math.floor((ordinal - weekday + 10) / 7);
      if (week < 1) week = weeksIn(--year);
      else if (week > weeksIn(year)) [year, week] = [year + 1, 1];
      const expected = `${year}-W${String(week).padStart(2, "0")}`;
      if (isoWeekKey(ms) !== expected) wrong.push(`${isoDay(ms)}: ${isoWeekKey(ms)}, expected ${expected}`);
    }
    expect(wrong).toEqual([]);
  });
});

describe("period labels", () => {
  it("label a day, a week and a month", () => {
    const ms = utc(2026, 11, 29, 15);
    expect(periodKey(ms, "day")).toBe("2026-11-29");
    expect(periodKey(ms, "week")).toBe("2026-W48");
    expect(periodKey(ms, "month")).toBe("2026-11");
  });

  it("label a period from the first day a report query returns", () => {
    expect(periodOfStart("2025-12-29", "week")).toEqual({ period: "2026-W01", period_start: "2025-12-29" });
    expect(periodOfStart("2026-11-01", "month")).toEqual({ period: "2026-11", period_start: "2026-11-01" });
    expect(periodOfStart("1969-12-29", "week")).toEqual({ period: "1970-W01", period_start: "1969-12-29" });
    expect(() => periodOfStart("2026-11", "day")).toThrow(RangeError);
  });
});

describe("dayRangeProblem", () => {
  it("accepts a range up to the limit, both days counted", () => {
    expect(dayRangeProblem("2026-11-01", "2026-11-01", 1)).toBeNull();
    expect(dayRangeProblem("2026-01-01", "2026-12-31", 365)).toBeNull();
  });
  it("names the field at fault", () => {
    expect(dayRangeProblem("2026-02-30", "2026-03-01", 10)).toMatchObject({ field: "from" });
    expect(dayRangeProblem("2026-03-01", "2026-13-01", 10)).toMatchObject({ field: "to" });
    expect(dayRangeProblem("2026-03-02", "2026-03-01", 10)).toMatchObject({ field: "to", message: "must not be before from (2026-03-02)" });
    expect(dayRangeProblem("2026-01-01", "2026-12-31", 364)).toMatchObject({ field: "to", message: expect.stringContaining("365 days") });
  });
});

describe("time buckets", () => {
  it("cut [from, to) into steps from `from`; the last one ends at `to`", () => {
    expect(timeBuckets(1000, 1010, 3)).toEqual([
      { start: 1000, end: 1003 }, { start: 1003, end: 1006 }, { start: 1006, end: 1009 }, { start: 1009, end: 1010 },
    ]);
    expect(timeBuckets(0, 9, 3)).toHaveLength(3);
    expect(timeBuckets(5, 5, 3)).toEqual([]);
    expect(() => timeBuckets(0, 10, 0)).toThrow(RangeError);
    expect(() => timeBuckets(0, 10, 1.5)).toThrow(RangeError);
  });
  it("find the bucket of a time", () => {
    expect(bucketIndex(1000, 1000, 3)).toBe(0);
    expect(bucketIndex(1002, 1000, 3)).toBe(0);
    expect(bucketIndex(1003, 1000, 3)).toBe(1);
    expect(bucketIndex(1009, 1000, 3)).toBe(3);
  });
});

describe("CSV", () => {
  it("quotes commas, quotes and line breaks, and doubles quotes", () => {
    expect(csvCell("plain")).toBe("plain");
    expect(csvCell("a,b")).toBe('"a,b"');
    expect(csvCell('say "hi"')).toBe('"say ""hi"""');
    expect(csvCell("two\nlines")).toBe('"two\nlines"');
    expect(csvCell(null)).toBe("");
    expect(csvCell(-5)).toBe("-5");
    expect(csvCell(0)).toBe("0");
  });
  it("defuses text a spreadsheet would run as a formula", () => {
    expect(csvCell("=HYPERLINK(\"x\")")).toBe("\"'=HYPERLINK(\"\"x\"\")\"");
    expect(csvCell("+1")).toBe("'+1");
    expect(csvCell("-1")).toBe("'-1");
    expect(csvCell("@sum")).toBe("'@sum");
    expect(csvCell("$1.25")).toBe("$1.25");
  });
  it("ends every line with CRLF, header first", () => {
    expect(toCsv(["a", "b"], [[1, "x"], [null, "y,z"]])).toBe('a,b\r\n1,x\r\n,"y,z"\r\n');
  });
});
