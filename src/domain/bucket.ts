/**
 * Token-bucket arithmetic. Pure: the clock is a parameter, nothing is stored here.
 * Levels are real numbers (refill is continuous); grants are whole units.
 */
export interface BucketState {
  level: number;
  updatedAt: number;
}

export interface BucketShape {
  capacity: number;
  refillPerSec: number;
}

/** Tolerance for float comparisons so that e.g. 0.1 + 0.2 tokens count as 0.3. */
const EPSILON = 1e-9;

/** Level after lazy refill to `now`. A clock that goes backwards refills nothing and keeps the later mark. */
export function refill(state: BucketState, shape: BucketShape, now: number): BucketState {
  if (!(now > state.updatedAt)) return { level: Math.min(state.level, shape.capacity), updatedAt: state.updatedAt };
  const gained = ((now - state.updatedAt) * shape.refillPerSec) / 1000;
  return { level: Math.min(shape.capacity, state.level + gained), updatedAt: now };
}

/** Whether `amount` fits in `available` units (with float tolerance). */
export function fits(available: number, amount: number): boolean {
  return available + EPSILON >= amount;
}

/**
 * Milliseconds until `needed` units are in the bucket at the current level, or null when they never
 * will be (no refill, or more than the bucket can ever hold). 0 when they are already there.
 */
export function msUntil(level: number, needed: number, shape: BucketShape): number | null {
  if (fits(level, needed)) return 0;
  if (needed > shape.capacity + EPSILON || shape.refillPerSec <= 0) return null;
  return Math.max(1, Math.ceil(((needed - level) * 1000) / shape.refillPerSec - EPSILON));
}

/** Take `amount` from the level; caller has checked that it fits. Never leaves a negative level. */
export function take(state: BucketState, amount: number): BucketState {
  return { level: Math.max(0, state.level - amount), updatedAt: state.updatedAt };
}

/** Give `amount` back, never above capacity. */
export function giveBack(state: BucketState, amount: number, shape: BucketShape): BucketState {
  return { level: Math.min(shape.capacity, state.level + amount), updatedAt: state.updatedAt };
}
