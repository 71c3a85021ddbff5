/**
 * The scheduler as the rest of the service sees it: one scheduler object per shard (see
 * objects/scheduler/shards.ts). New work goes to its client's owner shard; a request is found where
 * it is held (its owner, or after a change of SCHEDULER_SHARDS the shard that held it then); reads
 * about "the scheduler" ask every shard that may hold work and merge the answers.
 */
import { histogramOf } from "../domain/histogram";
import type { QueueName } from "../domain/priority";
import type { RequestSla, SlaTarget } from "../domain/sla";
import type { Tier } from "../domain/types";
import { ownerShard, shardCount, shardIndexOf, shardStub } from "../objects/scheduler/shards";
import type { PositionView, QueueStats, RequestView, SchedulerMetrics, SchedulerState, SlaGroup } from "../objects/scheduler/types";

/** Every shard's state summed; `shards`: how many answered. */
export type MergedState = SchedulerState & { shards: number };

type Waiting = Record<string, { requests: number; units: number; oldest_wait_ms: number }>;

/** Shards that may hold work: 0 .. span-1, where span is the highest count used until those above it emptied. */
const spans = new Map<number, { at: number; span: Promise<number> }>();
const SPAN_TTL_MS = 5000;

export async function shardSpan(env: Env): Promise<number> {
  const count = shardCount(env);
  const cached = spans.get(count);
  if (cached && Date.now() - cached.at < SPAN_TTL_MS) return cached.span;
  const span = shardStub(env, 0).shardSpan(count).catch((err: unknown) => {
    spans.delete(count);
    throw err;
  });
  spans.set(count, { at: Date.now(), span });
  return span;
}

/** Forget the cached span (tests that change the shard count; the cron after retiring shards). */
export function clearShardSpan(): void {
  spans.clear();
}

async function shards(env: Env): Promise<number[]> {
  return Array.from({ length: await shardSpan(env) }, (_, k) => k);
}

/** Ask every shard that may hold work, in parallel. */
async function everyShard<T>(env: Env, ask: (stub: ReturnType<typeof shardStub>, index: number) => Promise<T>): Promise<T[]> {
  return Promise.all((await shards(env)).map((k) => ask(shardStub(env, k), k)));
}

/** The owner shard of a client's new work. */
export function ownerOf(env: Env, clientId: string) {
  return shardStub(env, ownerShard(env, clientId));
}

/**
 * The shard that holds a request: the client's owner first (almost always), then every other shard.
 * For an admin (no client), every shard at once. Null when none has it.
 */
async function findHolder<T>(env: Env, clientId: string | null, ask: (stub: ReturnType<typeof shardStub>) => Promise<T | null>): Promise<T | null> {
  const all = await shards(env);
  const owner = clientId === null ? null : ownerShard(env, clientId);
  if (owner !== null) {
    const found = await ask(shardStub(env, owner));
    if (found !== null) return found;
  }
  const rest = await Promise.all(all.filter((k) => k !== owner).map((k) => ask(shardStub(env, k))));
  return rest.find((r) => r !== null) ?? null;
}

// The stubs' RPC types flatten these views to `never`: the objects' own signatures say what comes back.
export function getRequestView(env: Env, id: string, clientId: string | null): Promise<RequestView | null> {
  return findHolder(env, clientId, (s) => s.get(id, clientId) as Promise<RequestView | null>);
}

export function positionView(env: Env, id: string, clientId: string | null): Promise<PositionView | null> {
  return findHolder(env, clientId, (s) => s.position(id, clientId) as Promise<PositionView | null>);
}

export function requestSla(env: Env, id: string, clientId: string | null, targets: SlaTarget[]): Promise<RequestSla | null> {
  return findHolder(env, clientId, (s) => s.sla(id, clientId, targets) as Promise<RequestSla | null>);
}

/** Cancel where the request is held; request_not_found when no shard holds it (the owner's answer). */
export async function cancelHeld(env: Env, id: string, clientId: string | null, onlyQueued: boolean) {
  const holder = await findHolder(env, clientId, async (s) => ((await s.get(id, clientId)) ? s : null));
  return (holder ?? (clientId ? ownerOf(env, clientId) : shardStub(env, 0))).cancel(id, clientId, onlyQueued);
}

/** A client's request made with this idempotency key, in whichever shard holds it (with that shard's index). */
export async function findByKey(env: Env, clientId: string, key: string, specHash: string | null): Promise<{ id: string; conflict: boolean; shard: number } | null> {
  const owner = ownerShard(env, clientId);
  const mine = await shardStub(env, owner).findByKey(clientId, key, specHash);
  if (mine) return { ...mine, shard: owner };
  const all = await shards(env);
  const found = await Promise.all(all.filter((k) => k !== owner).map(async (k) => {
    const r = await shardStub(env, k).findByKey(clientId, key, specHash);
    return r ? { ...r, shard: k } : null;
  }));
  return found.find((r) => r !== null) ?? null;
}

export async function countsFor(env: Env, clientId: string, since: number): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const counts of await everyShard(env, (s) => s.countsFor(clientId, since))) {
    for (const [status, n] of Object.entries(counts)) out[status] = (out[status] ?? 0) + n;
  }
  return out;
}

export async function activeFor(env: Env, clientId: string): Promise<{ queued: number; running: number }> {
  const all = await everyShard(env, (s) => s.activeFor(clientId));
  return { queued: all.reduce((n, a) => n + a.queued, 0), running: all.reduce((n, a) => n + a.running, 0) };
}

export async function cancelClient(env: Env, clientId: string): Promise<number> {
  return (await everyShard(env, (s) => s.cancelClient(clientId))).reduce((a, b) => a + b, 0);
}

/** Of these request ids, those some shard holds unfinished. */
export async function unfinished(env: Env, ids: string[]): Promise<string[]> {
  return [...new Set((await everyShard(env, (s) => s.unfinished(ids))).flat())];
}

/** Wake every shard (capacity was freed somewhere: any shard may have work waiting for it). */
export async function wakeAll(env: Env): Promise<void> {
  await everyShard(env, (s) => s.wake());
}

export async function setRunning(env: Env, running: boolean): Promise<MergedState> {
  return mergeStates(await everyShard(env, (s) => s.setRunning(running)));
}

export async function schedulerState(env: Env): Promise<MergedState> {
  return mergeStates(await everyShard(env, (s) => s.state()));
}

/** A dispatch pass on every shard (the cron's backstop); how many were launched in all. */
export async function passAll(env: Env, trigger: string): Promise<number> {
  return (await everyShard(env, (s) => s.pass(trigger))).reduce((a, b) => a + b, 0);
}

export async function purgeFinished(env: Env, cutoff: number, limit: number): Promise<number> {
  return (await everyShard(env, (s) => s.purgeFinished(cutoff, limit))).reduce((a, b) => a + b, 0);
}

/**
 * Shards above the configured count that hold nothing any more are forgotten (the span shrinks), so
 * reads stop asking them. The cron calls it after its pass and the retention run.
 */
export async function retireEmptyShards(env: Env): Promise<number> {
  const count = shardCount(env);
  const span = await shardSpan(env);
  if (span <= count) return span;
  let top = span;
  while (top > count && (await shardStub(env, top - 1).holdsNothing())) top -= 1;
  if (top < span) {
    await shardStub(env, 0).retireShards(count, top);
    clearShardSpan();
  }
  return top;
}

export async function queueStatus(env: Env): Promise<{ queues: QueueStats[]; scheduler: MergedState }> {
  const all = await everyShard(env, (s) => s.queueStatus());
  const queues = all[0]!.queues.map((q, i) => {
    const same = all.map((a) => a.queues[i]!).filter((x) => x.depth > 0);
    return {
      queue: q.queue,
      depth: same.reduce((n, x) => n + x.depth, 0),
      ready: same.reduce((n, x) => n + x.ready, 0),
      oldest_wait_ms: Math.max(0, ...same.map((x) => x.oldest_wait_ms)),
      // Percentiles do not add up: across shards, the highest shard's (an upper bound).
      wait_p50_ms: Math.max(0, ...same.map((x) => x.wait_p50_ms)),
      wait_p95_ms: Math.max(0, ...same.map((x) => x.wait_p95_ms)),
      dispatch_rate_per_s: Math.round(all.reduce((n, a) => n + a.queues[i]!.dispatch_rate_per_s, 0) * 100) / 100,
    };
  });
  return { queues, scheduler: mergeStates(all.map((a) => a.scheduler)) };
}

/** Every shard's metrics merged, and each shard's queued count (for its SCHEDULER_MAX_QUEUED). */
export async function schedulerMetrics(env: Env): Promise<SchedulerMetrics & { shards: Array<{ shard: number; queued: number }> }> {
  const answers = await everyShard(env, async (s, shard) => ({ shard, m: (await s.metrics()) as SchedulerMetrics }));
  const all = answers.map((a) => a.m);
  const counters: SchedulerMetrics["counters"] = {};
  for (const m of all) {
    for (const [template, c] of Object.entries(m.counters)) {
      const t = (counters[template] ??= { dispatches: 0, completions: 0, failures: 0, retries: 0, timeouts: 0 });
      for (const k of Object.keys(t) as Array<keyof typeof t>) t[k] += c[k];
    }
  }
  return {
    running: all.every((m) => m.running),
    in_flight: all.reduce((n, m) => n + m.in_flight, 0),
    settlements_owed: all.reduce((n, m) => n + m.settlements_owed, 0),
    queues: all[0]!.queues.map((q, i) => {
      const same = all.map((m) => m.queues[i]!);
      const h = same.map((x) => x.wait_seconds);
      return {
        queue: q.queue,
        depth: same.reduce((n, x) => n + x.depth, 0),
        oldest_wait_ms: Math.max(...same.map((x) => x.oldest_wait_ms)),
        wait_seconds: { ...histogramOf([], h[0]!.bounds), cumulative: h[0]!.cumulative.map((_, b) => h.reduce((n, x) => n + x.cumulative[b]!, 0)), sum: h.reduce((n, x) => n + x.sum, 0), count: h.reduce((n, x) => n + x.count, 0) },
      };
    }),
    counters,
    shards: answers.map(({ shard, m }) => ({ shard, queued: m.queues.reduce((n, q) => n + q.depth, 0) })),
  };
}

export async function waitingByPool(env: Env): Promise<Waiting> {
  const out: Waiting = {};
  for (const w of await everyShard(env, (s) => s.waitingByPool())) {
    for (const [pool, x] of Object.entries(w)) {
      const t = (out[pool] ??= { requests: 0, units: 0, oldest_wait_ms: 0 });
      t.requests += x.requests;
      t.units += x.units;
      t.oldest_wait_ms = Math.max(t.oldest_wait_ms, x.oldest_wait_ms);
    }
  }
  return out;
}

export async function slaSummary(env: Env, from: number, to: number, targets: SlaTarget[], filter: { clientId?: string; tier?: Tier; queue?: QueueName }): Promise<SlaGroup[]> {
  const groups = new Map<string, SlaGroup>();
  for (const list of await everyShard(env, (s) => s.slaSummary(from, to, targets, filter))) {
    for (const g of list) {
      const key = `${g.tier}/${g.queue}`;
      const t = groups.get(key);
      if (!t) {
        groups.set(key, { ...g, breached_examples: [...g.breached_examples] });
        continue;
      }
      t.total += g.total;
      t.met += g.met;
      t.breached += g.breached;
      t.breached_examples = [...t.breached_examples, ...g.breached_examples].slice(0, 5);
    }
  }
  for (const g of groups.values()) {
    const decided = g.met + g.breached;
    g.attainment_percent = decided ? Math.round((g.met * 10_000) / decided) / 100 : null;
    g.meets_target = g.attainment_percent === null ? null : g.attainment_percent >= g.target_percent;
  }
  return [...groups.values()];
}

function mergeStates(all: SchedulerState[]): MergedState {
  return {
    running: all.every((s) => s.running),
    queued: all.reduce((n, s) => n + s.queued, 0),
    in_flight: all.reduce((n, s) => n + s.in_flight, 0),
    max_in_flight: all.reduce((n, s) => n + s.max_in_flight, 0),
    last_pass_at: all.reduce<number | null>((t, s) => (s.last_pass_at !== null && (t === null || s.last_pass_at > t) ? s.last_pass_at : t), null),
    dispatched_total: all.reduce((n, s) => n + s.dispatched_total, 0),
    settlements_owed: all.reduce((n, s) => n + s.settlements_owed, 0),
    shards: all.length,
  };
}

export { shardIndexOf };
