/**
 * UTC calendar arithmetic for usage periods and budget months. Pure: every function is given the
 * time it works on. Days are 'YYYY-MM-DD', months 'YYYY-MM', both UTC.
 */
export const DAY_MS = 86_400_000;

/** Years outside this range are refused: epoch ms start in 1970, and keys have four-digit years. */
const MIN_YEAR = 1970;
const MAX_YEAR = 9999;
const MAX_MS = Date.UTC(MAX_YEAR + 1, 0, 1) - 1;

const DAY = /^(\d{4})-(\d{2})-(\d{2})$/;
const MONTH = /^(\d{4})-(\d{2})$/;

function checked(ms: number): Date {
  if (!Number.isFinite(ms) || ms < 0 || ms > MAX_MS) throw new RangeError(`time out of range: ${ms}`);
  return new Date(ms);
}

export function isLeapYear(year: number): boolean {
  return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
}

/** Days in `month` (1-12) of `year`. */
export function daysInMonth(year: number, month: number): number {
  return [31, isLeapYear(year) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]!;
}

/** The day dayKey formatted last: callers ask for the same day over and over (each event of a batch, now). */
let lastDay = { index: NaN, key: "" };

/** The UTC day of `ms`, e.g. 1795334494000 → '2026-11-23'. */
export function dayKey(ms: number): string {
  const index = Math.floor(ms / DAY_MS);
  // Every ms of a day already checked is in range, so the check can be skipped too.
  if (index === lastDay.index) return lastDay.key;
  const key = checked(ms).toISOString().slice(0, 10);
  lastDay = { index, key };
  return key;
}

/** The UTC month of `ms`, e.g. '2026-11'. */
export function monthKey(ms: number): string {
  return dayKey(ms).slice(0, 7);
}

/** 00:00 UTC of the day of `ms`. */
export function dayStart(ms: number): number {
  checked(ms);
  return Math.floor(ms / DAY_MS) * DAY_MS;
}

/** 00:00 UTC on the first of the month of `ms`. */
export function monthStart(ms: number): number {
  const d = checked(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}

/** 00:00 UTC on the first of the next month: when a monthly budget resets. */
export function nextMonthStart(ms: number): number {
  const d = checked(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
}

/** 00:00 UTC of a 'YYYY-MM-DD' day, or null when it is not a real calendar day in 1970-9999. */
export function parseDay(text: string): number | null {
  const m = DAY.exec(text);
  if (!m) return null;
  const [year, month, day] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (year < MIN_YEAR || month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return null;
  return Date.UTC(year, month - 1, day);
}

/** 00:00 UTC on the first of a 'YYYY-MM' month, or null when it is not one in 1970-9999. */
export function parseMonth(text: string): number | null {
  const m = MONTH.exec(text);
  if (!m) return null;
  const [year, month] = [Number(m[1]), Number(m[2])];
  if (year < MIN_YEAR || month < 1 || month > 12) return null;
  return Date.UTC(year, month - 1, 1);
}

/** Whole days from `from` to `to`, both counted: '2026-11-01'..'2026-11-30' is 30. Days must be valid. */
export function daysInclusive(from: string, to: string): number {
  const a = parseDay(from);
  const b = parseDay(to);
  if (a === null || b === null) throw new RangeError(`not a day: ${a === null ? from : to}`);
  return (b - a) / DAY_MS + 1;
}
