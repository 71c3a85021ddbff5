import type { BudgetView } from "../domain/budget";
import { AppError } from "../errors";
import { clientIds } from "../storage/clients";
import { budgetLimit } from "../storage/config";
import { unfinished } from "./scheduler";
import { clientStub } from "../objects/client/stub";
import { ownerShard, shardStub } from "../objects/scheduler/shards";
import { log } from "../log";

/**
 * A client's budget as its object keeps it: the limit that applies, this month's spend, money in
 * flight and what remains, plus the concurrency slots in use. 404 for an unknown client.
 * Money in flight counts every hold of the client's budget; a scheduler shard's hold for single
 * enqueues (decision 008) is returned first unless `leases` is "count".
 */
export async function clientBudget(env: Env, clientId: string, leases: "return" | "count" = "return"): Promise<BudgetView & { concurrency_in_use: number }> {
  const limit = await budgetLimit(env, clientId);
  if (!limit) throw new AppError("client_not_found", `no client ${clientId}`, { client_id: clientId });
  // The owner shard's money lease (decision 008) first becomes its requests' estimates in flight, so the
  // view counts requests, as it would without leases; unreachable, the view counts the hold instead.
  // "count": the hold is counted as it stands (the optimizer's budget pressure, read per enqueue).
  if (leases === "return") await returnShardHold(env, clientId, null);
  return clientStub(env, clientId).budget(limit);
}

/**
 * Have the client's owner shard convert the requests admitted on its money hold and end the hold (decision
 * 008), so the client's money in flight counts requests only. False (logged) when the shard could not be reached.
 */
export function returnShardHold(env: Env, clientId: string, traceId: string | null): Promise<boolean> {
  return shardStub(env, ownerShard(env, clientId)).returnMoneyLease(clientId).then(() => true, (err: unknown) => {
    log.warn("money_lease_return_failed", { client_id: clientId, error: String(err), trace_id: traceId });
    return false;
  });
}

/** An estimate older than this with no unfinished request behind it is taken out of flight by the cron. */
const IN_FLIGHT_GRACE_MS = 60_000;

/**
 * Money in flight whose request is gone (its enqueue failed after admission, or its settlement was
 * lost) would hold a client's budget forever: take it out of flight. Returns how many were dropped.
 */
export async function reconcileInFlight(env: Env, now: number): Promise<number> {
  let dropped = 0;
  for (const id of await clientIds(env.DB)) {
    const client = clientStub(env, id);
    const old = await client.inFlightSince(now - IN_FLIGHT_GRACE_MS);
    if (old.length === 0) continue;
    const alive = new Set(await unfinished(env, old));
    const gone = old.filter((r) => !alive.has(r));
    if (gone.length) await client.drop(gone);
    dropped += gone.length;
  }
  return dropped;
}
