import { clearLoginAttempts, countLoginAttempt } from "../storage/admin-sessions";

/**
 * Dashboard logins per source address: at most LOGIN_MAX_FAILURES attempts that did not log in per
 * LOGIN_WINDOW_MS window (which starts at the window's first attempt); beyond that every attempt,
 * the right token included, is refused until the window ends. A successful login clears the count.
 *
 * Every attempt is counted in D1 before the token is checked, by one atomic upsert, so the limit is
 * exact across isolates and concurrent guesses: no more than LOGIN_MAX_FAILURES tokens are ever
 * checked per window. An isolate that saw a source locked remembers until when, and refuses it
 * without D1 meanwhile (the lock cannot end early, so this refuses nothing D1 would admit).
 */
export const LOGIN_MAX_FAILURES = 5;
export const LOGIN_WINDOW_MS = 5 * 60_000;

const lockedUntil = new Map<string, number>();
const LOCKED_MAX = 1024;

/** A refused attempt: how long until the source may try again. */
export interface LoginLocked {
  retryAfterMs: number;
}

/** Count an attempt from `source`; a lock when it is over the limit (then the token must not be checked). */
export async function admitLoginAttempt(env: Env, source: string, now: number): Promise<LoginLocked | null> {
  const until = lockedUntil.get(source);
  if (until !== undefined && until > now) return { retryAfterMs: until - now };
  lockedUntil.delete(source);
  const { attempts, windowStart } = await countLoginAttempt(env.DB, source, now, LOGIN_WINDOW_MS);
  if (attempts <= LOGIN_MAX_FAILURES) return null;
  const ends = windowStart + LOGIN_WINDOW_MS;
  if (lockedUntil.size >= LOCKED_MAX) lockedUntil.delete(lockedUntil.keys().next().value!);
  lockedUntil.set(source, ends);
  return { retryAfterMs: Math.max(1, ends - now) };
}

/** A login succeeded: the source starts over. */
export function loginSucceeded(env: Env, source: string): Promise<void> {
  return clearLoginAttempts(env.DB, source);
}
