import { settings } from "../../settings";
import { fnv1a } from "../../domain/hash";
import { ObjectIds } from "../object-ids";

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

/** The shard that owns a client under `count` shards (FNV-1a: the partition must not move by itself). */
export function shardIndexOf(clientId: string, count: number): number {
  return count <= 1 ? 0 : fnv1a(clientId) % count;
}

/** A shard's object name: "scheduler" for shard 0 (the name before shards), "scheduler-<k>" after. */
export function shardName(index: number): string {
  return index === 0 ? "scheduler" : `scheduler-${index}`;
}

/** Shards' object ids (at most MAX_SHARDS): every enqueue needs one. */
const shardIds = new ObjectIds(MAX_SHARDS);

export function shardStub(env: Env, index: number) {
  return env.SCHEDULER.get(shardIds.of(env.SCHEDULER, shardName(index)));
}

/** The shard that owns this client now (new work goes there; see docs/architecture.md: queues, shards). */
export function ownerShard(env: Env, clientId: string): number {
  return shardIndexOf(clientId, shardCount(env));
}
