import { settings } from "../../settings";

/**
 * Scheduler shards: which scheduler object owns a client, by name. A client's requests go to shard
 * `hash(client id) mod SCHEDULER_SHARDS`; shard 0 keeps the name the single scheduler always had
 * ("scheduler"), so one shard is exactly the old layout and its data. Plain functions over `env`:
 * the service layer routes with them, and the objects (client, scheduler) wake shards with them.
 */

/** Reads that ask every shard fan out to all of them: a bound keeps that fan-out small. */
export const MAX_SHARDS = 64;

/** The configured shard count. */
export function shardCount(env: Env): number {
  return Math.min(settings(env).SCHEDULER_SHARDS, MAX_SHARDS);
}

/** 32-bit FNV-1a: stable across isolates and deploys (the partition must not move by itself). */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** The shard that owns a client under `count` shards. */
export function shardIndexOf(clientId: string, count: number): number {
  return count <= 1 ? 0 : fnv1a(clientId) % count;
}

/** A shard's object name: "scheduler" for shard 0 (the name before shards), "scheduler-<k>" after. */
export function shardName(index: number): string {
  return index === 0 ? "scheduler" : `scheduler-${index}`;
}

export function shardStub(env: Env, index: number) {
  return env.SCHEDULER.get(env.SCHEDULER.idFromName(shardName(index)));
}

/** The shard that owns this client now (new work goes there; see docs/architecture.md: queues, shards). */
export function ownerShard(env: Env, clientId: string): number {
  return shardIndexOf(clientId, shardCount(env));
}
