import { describe, expect, it } from "vitest";
import {
  DAY_MS, dayKey, daysInclusive, daysInMonth, dayStart, isLeapYear, monthKey, monthStart, nextMonthStart, parseDay, parseMonth,
} from "../../src/domain/calendar";

const utc = (y: number, m: number, d: number, h = 0, min = 0, s = 0, ms = 0) => Date.UTC(y, m - 1, d, h, min, s, ms);

describe("dayKey and monthKey", () => {
  const cases: [number, string, string][] = [
    [0, "1970-01-01", "1970-01"],
    [utc(2026, 11, 23, 12, 34, 56), "2026-11-23", "2026-11"],
    [utc(2026, 11, 23) - 1, "2026-11-22", "2026-11"], // the last ms of a day stays in it
    [utc(2026, 11, 23), "2026-11-23", "2026-11"],
    [utc(2026, 12, 31, 23, 59, 59, 999), "2026-12-31", "2026-12"],
    [utc(2027, 1, 1), "2027-01-01", "2027-01"],
    [utc(2028, 2, 29, 6), "2028-02-29", "2028-02"],
    [utc(2028, 3, 1) - 1, "2028-02-29", "2028-02"],
    [utc(2100, 2, 28, 23), "2100-02-28", "2100-02"],
    [utc(2100, 3, 1), "2100-03-01", "2100-03"],
    [utc(2000, 2, 29), "2000-02-29", "2000-02"],
    [utc(2026, 4, 30, 23, 59), "2026-04-30", "2026-04"],
    [utc(9999, 12, 31, 23, 59, 59, 999), "9999-12-31", "9999-12"],
  ];
  for (const [ms, day, month] of cases) {
    it(`${ms} is ${day} in ${month}`, () => {
      expect(dayKey(ms)).toBe(day);
      expect(monthKey(ms)).toBe(month);
    });
  }

  it("refuses times it cannot name with a four-digit year after 1970", () => {
    for (const bad of [NaN, Infinity, -1, utc(10000, 1, 1)]) expect(() => dayKey(bad)).toThrow(RangeError);
  });
});

describe("dayStart, monthStart, nextMonthStart", () => {
  const cases: [number, number, number, number][] = [
    // time, day start, month start, next month start
    [utc(2026, 11, 23, 17, 5), utc(2026, 11, 23), utc(2026, 11, 1), utc(2026, 12, 1)],
    [utc(2026, 12, 31, 23, 59, 59, 999), utc(2026, 12, 31), utc(2026, 12, 1), utc(2027, 1, 1)],
    [utc(2027, 1, 1), utc(2027, 1, 1), utc(2027, 1, 1), utc(2027, 2, 1)],
    [utc(2027, 1, 31, 12), utc(2027, 1, 31), utc(2027, 1, 1), utc(2027, 2, 1)],
    [utc(2027, 2, 28, 23), utc(2027, 2, 28), utc(2027, 2, 1), utc(2027, 3, 1)],
    [utc(2028, 2, 29, 23), utc(2028, 2, 29), utc(2028, 2, 1), utc(2028, 3, 1)],
    [utc(2026, 3, 29, 1, 30), utc(2026, 3, 29), utc(2026, 3, 1), utc(2026, 4, 1)], // a European DST change does nothing in UTC
    [utc(2026, 10, 25, 1, 30), utc(2026, 10, 25), utc(2026, 10, 1), utc(2026, 11, 1)],
    [0, 0, 0, utc(1970, 2, 1)],
  ];
  for (const [ms, day, month, next] of cases) {
    it(`${new Date(ms).toISOString()}`, () => {
      expect(dayStart(ms)).toBe(day);
      expect(monthStart(ms)).toBe(month);
      expect(nextMonthStart(ms)).toBe(next);
      expect(monthStart(ms)).toBeLessThanOrEqual(ms);
      expect(nextMonthStart(ms)).toBeGreaterThan(ms);
    });
  }

  it("every month of ten years: the next month starts where the month's last ms ends, one month on", () => {
    for (let y = 2024; y < 2034; y++) {
      for (let m = 1; m <= 12; m++) {
        const start = utc(y, m, 1);
        const end = nextMonthStart(start);
        expect(end - start).toBe(daysInMonth(y, m) * DAY_MS);
        expect(nextMonthStart(end - 1)).toBe(end);
        expect(monthStart(end - 1)).toBe(start);
        expect(monthKey(end)).toBe(m === 12 ? `${y + 1}-01` : `${y}-${String(m + 1).padStart(2, "0")}`);
      }
    }
  });
});

describe("leap years and month lengths", () => {
  it("leap years follow the Gregorian rule", () => {
    expect([1900, 2000, 2024, 2026, 2028, 2100, 2400].map(isLeapYear)).toEqual([false, true, true, false, true, false, true]);
  });

  it("days in each month", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((m) => daysInMonth(2026, m))).toEqual([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]);
    expect(daysInMonth(2028, 2)).toBe(29);
    expect(daysInMonth(2100, 2)).toBe(28);
    expect(daysInMonth(2000, 2)).toBe(29);
  });
});

describe("parseDay and parseMonth", () => {
  const good: [string, number][] = [
    ["2026-11-23", utc(2026, 11, 23)],
    ["1970-01-01", 0],
    ["2028-02-29", utc(2028, 2, 29)],
    ["2000-02-29", utc(2000, 2, 29)],
    ["2026-12-31", utc(2026, 12, 31)],
    ["2026-04-30", utc(2026, 4, 30)],
    ["9999-12-31", utc(9999, 12, 31)],
  ];
  for (const [text, ms] of good) {
    it(`${text} parses and round-trips`, () => {
      expect(parseDay(text)).toBe(ms);
      expect(dayKey(parseDay(text)!)).toBe(text);
    });
  }

  const bad = [
    "2026-02-29", "2100-02-29", "2026-04-31", "2026-13-01", "2026-00-10", "2026-01-00", "2026-01-32",
    "1969-12-31", "26-11-23", "2026-1-23", "2026-11-3", "2026/11/23", "2026-11-23T00:00:00Z", " 2026-11-23",
    "2026-11-23 ", "", "yesterday", "２０２６-11-23", "+02026-11-23", "2026-11",
  ];
  for (const text of bad) {
    it(`${JSON.stringify(text)} is not a day`, () => expect(parseDay(text)).toBeNull());
  }

  it("months", () => {
    expect(parseMonth("2026-11")).toBe(utc(2026, 11, 1));
    expect(parseMonth("1970-01")).toBe(0);
    expect(parseMonth("2026-12")).toBe(utc(2026, 12, 1));
    for (const text of ["2026-13", "2026-00", "1969-12", "2026-1", "2026-11-01", "", "2026/11"]) expect(parseMonth(text)).toBeNull();
  });
});

describe("daysInclusive", () => {
  it("counts both ends, across month ends, year ends and leap days", () => {
    expect(daysInclusive("2026-11-23", "2026-11-23")).toBe(1);
    expect(daysInclusive("2026-11-01", "2026-11-30")).toBe(30);
    expect(daysInclusive("2026-12-31", "2027-01-01")).toBe(2);
    expect(daysInclusive("2026-01-01", "2026-12-31")).toBe(365);
    expect(daysInclusive("2028-01-01", "2028-12-31")).toBe(366);
    expect(daysInclusive("2028-02-28", "2028-03-01")).toBe(3);
    expect(daysInclusive("2027-02-28", "2027-03-01")).toBe(2);
    expect(daysInclusive("2026-11-23", "2026-11-22")).toBe(0);
  });

  it("refuses what is not a day", () => {
    expect(() => daysInclusive("2026-02-30", "2026-03-01")).toThrow(RangeError);
  });
});
