/**
 * When a pool's usage outbox is delivered. Each delivery has a fixed cost (a D1 batch, one report to
 * each client's object, the outbox's own writes), so a busy outbox is delivered every `baseMs` and a
 * quiet one waits longer, until about GATHER events are there, but never longer than `maxMs`. With a
 * hundred pools of a few consumes a second each, one delivery per pool per second was most of their
 * cost (bench (d), V8 profile: a quarter of the runtime). Budgets do not wait for it: a client's money
 * stays in flight until its spend is delivered.
 */
export const FLUSH_GATHER = 200;

/** Milliseconds to wait from the first undelivered event, given the outbox's recent rate (events per second; null: unknown). */
export function flushDelay(ratePerSec: number | null, baseMs: number, maxMs: number): number {
  const max = Math.max(baseMs, maxMs);
  if (ratePerSec === null || !(ratePerSec > 0)) return baseMs;
  return Math.round(Math.min(max, Math.max(baseMs, (FLUSH_GATHER * 1000) / ratePerSec)));
}
