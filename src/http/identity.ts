import type { Principal } from "./context";

/** Who an in-process call to the app acts as, and whether that client is suspended (authenticate()'s inputs). */
export interface Identity {
  principal: Principal;
  suspended: boolean;
}

/**
 * Identities of in-process calls (RPC over a service binding, MCP tools), keyed by the env object
 * each call hands the app. Nothing from outside can put an entry here: an HTTP request gets the
 * worker's own env, which is never a key. Entries go when their call's env is collected.
 */
const identities = new WeakMap<object, Identity>();

/** An env for one in-process call, whose requests authenticate as `identity`. */
export function envActingAs(env: Env, identity: Identity): Env {
  const callEnv = Object.create(env) as Env;
  identities.set(callEnv, identity);
  return callEnv;
}

/** The identity of an in-process call, or null for a request from outside. */
export function identityOf(env: Env): Identity | null {
  return identities.get(env) ?? null;
}
