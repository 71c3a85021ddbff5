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

/**
 * Which shard an object is, from its id. `id.name` is missing when an alarm wakes an object with no
 * instance in memory (workerd gives the name only to calls through a stub made by name; observed after
 * a restart, and by cloudflare/partykit#391): the id is then matched against every shard's, as
 * `idFromName` is deterministic. Before this, such a shard ran as shard 0 ("scheduler") until its next
 * restart: its money holds, unit and slot leases under shard 0's name, and the wrong clients as its own.
 * Null for an object that is no shard (not one of the first MAX_SHARDS names).
 */
export function shardOfId(env: Env, id: DurableObjectId): { name: string; index: number } | null {
  const named = id.name;
  if (named !== undefined) {
    const index = named === shardName(0) ? 0 : Number(named.slice("scheduler-".length));
    return Number.isInteger(index) && index >= 0 && index < MAX_SHARDS && shardName(index) === named ? { name: named, index } : null;
  }
  for (let index = 0; index < MAX_SHARDS; index++) {
    if (shardIds.of(env.SCHEDULER, shardName(index)).equals(id)) return { name: shardName(index), index };
  }
  return null;
}

export function shardStub(env: Env, index: number) {
  return env.SCHEDULER.get(shardIds.of(env.SCHEDULER, shardName(index)));
}

/** The shard that owns this client now (new work goes there; see docs/architecture.md: queues, shards). */
export function ownerShard(env: Env, clientId: string): number {
  return shardIndexOf(clientId, shardCount(env));
}
