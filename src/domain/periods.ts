/**
 * Report periods and time buckets. Pure: every function is given the time it works on. Periods are
 * UTC: a day, an ISO 8601 week (Monday to Sunday), a calendar month.
 */
import { DAY_MS, daysInclusive, monthKey, monthStart, parseDay } from "./calendar";

export const PERIODS = ["day", "week", "month"] as const;
export type Period = (typeof PERIODS)[number];

const WEEK_MS = 7 * DAY_MS;

/**
 * 00:00 UTC of the first day of the period that holds `ms`: the day itself, the Monday of its ISO
 * week, or the first of its month. The Monday of the first days of 1970 is in 1969, before 0.
 */
export function periodStart(ms: number, period: Period): number {
  if (period === "month") return monthStart(ms);
  const day = Math.floor(ms / DAY_MS) * DAY_MS;
  if (period === "day") return day;
  const sinceMonday = (new Date(day).getUTCDay() + 6) % 7;
  return day - sinceMonday * DAY_MS;
}

/** 'YYYY-MM-DD' of any ms, 1969 included (calendar.dayKey refuses it; a week label may need it). */
export function isoDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/**
 * The ISO 8601 week of `ms`: the week-numbering year and week, e.g. '2026-W01' for 2025-12-29. A week
 * belongs to the year of its Thursday, so the first days of January may be in the previous year's
 * last week (2027-01-01 is in 2026-W53) and the last days of December in the next year's first.
 */
export function isoWeekKey(ms: number): string {
  const thursday = periodStart(ms, "week") + 3 * DAY_MS;
  const year = new Date(thursday).getUTCFullYear();
  const week = Math.floor((thursday - Date.UTC(year, 0, 1)) / WEEK_MS) + 1;
  return `${year}-W${String(week).padStart(2, "0")}`;
}

/** The label of the period holding `ms`: 'YYYY-MM-DD', 'YYYY-Www' (ISO week) or 'YYYY-MM'. */
export function periodKey(ms: number, period: Period): string {
  if (period === "day") return isoDay(ms);
  if (period === "week") return isoWeekKey(ms);
  return monthKey(ms);
}

/** The label and first day of the period that starts on `startDay` ('YYYY-MM-DD', as a report query returns it). */
export function periodOfStart(startDay: string, period: Period): { period: string; period_start: string } {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(startDay);
  if (!match) throw new RangeError(`not a day: ${startDay}`);
  const ms = Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3]));
  return { period: periodKey(ms, period), period_start: startDay };
}

/**
 * Why a day range is not acceptable for a report by `period`, or null when it is: both days valid,
 * `from` not after `to`, at most `maxDays` days.
 */
export function dayRangeProblem(from: string, to: string, maxDays: number): { field: "from" | "to"; message: string } | null {
  if (parseDay(from) === null) return { field: "from", message: "a calendar day YYYY-MM-DD (UTC), 1970 or later" };
  if (parseDay(to) === null) return { field: "to", message: "a calendar day YYYY-MM-DD (UTC), 1970 or later" };
  const days = daysInclusive(from, to);
  if (days < 1) return { field: "to", message: `must not be before from (${from})` };
  if (days > maxDays) return { field: "to", message: `the range covers ${days} days; at most ${maxDays} for this period` };
  return null;
}

/** One step of a time series: [start, end), epoch ms. */
export interface TimeBucket {
  start: number;
  end: number;
}

/** [from, to) cut into steps of `stepMs` counted from `from`; the last step ends at `to` and may be shorter. */
export function timeBuckets(from: number, to: number, stepMs: number): TimeBucket[] {
  if (!(stepMs > 0) || !Number.isInteger(stepMs)) throw new RangeError(`step must be a positive integer: ${stepMs}`);
  const buckets: TimeBucket[] = [];
  for (let start = from; start < to; start += stepMs) buckets.push({ start, end: Math.min(start + stepMs, to) });
  return buckets;
}

/** The index of the bucket of `timeBuckets(from, ..., stepMs)` that holds `at` (at >= from). */
export function bucketIndex(at: number, from: number, stepMs: number): number {
  return Math.floor((at - from) / stepMs);
}
