import { QUEUES, type QueueName } from "../domain/priority";
import { costOf } from "../domain/money";
import type { Caller } from "../domain/types";
import { AppError, type ErrorBody } from "../errors";
import type { EnqueueOutcome, NewRequest, PositionView, RequestView } from "../objects/scheduler";
import { poolConfigs, templateConfig, tierLimits } from "./config";
import { unwrap } from "./pools";

/** One request as a caller submits it (validated shape; see routes/queue.ts for the schema). */
export interface RequestSpec {
  template: string;
  params?: unknown;
  queue?: QueueName;
  idempotency_key?: string;
  not_before?: number;
  max_attempts?: number;
}

export const DEFAULT_QUEUE: QueueName = "normal";
export const DEFAULT_MAX_ATTEMPTS = 3;

export function schedulerStub(env: Env) {
  return env.SCHEDULER.get(env.SCHEDULER.idFromName("scheduler"));
}

/** Resolve the template and price the request; throws 404 for an unknown template or pool. */
export async function prepare(env: Env, caller: Caller, spec: RequestSpec): Promise<NewRequest> {
  const [template, pools, tiers] = await Promise.all([templateConfig(env, spec.template), poolConfigs(env), tierLimits(env)]);
  let estimateNano = 0;
  for (const need of template.requirements) {
    const pool = pools.get(need.pool);
    if (!pool) throw new AppError("pool_not_found", `template ${template.id} needs pool ${need.pool}, which does not exist`, { pool: need.pool });
    estimateNano += costOf(need.amount, pool.costPerUnitNano);
  }
  return {
    clientId: caller.clientId,
    tier: caller.tier,
    maxConcurrent: tiers.get(caller.tier)?.max_concurrent ?? 1,
    template: template.id,
    params: spec.params ?? null,
    queue: spec.queue ?? DEFAULT_QUEUE,
    idempotencyKey: spec.idempotency_key ?? null,
    notBefore: spec.not_before ?? null,
    maxAttempts: spec.max_attempts ?? DEFAULT_MAX_ATTEMPTS,
    estimateNano,
  };
}

export type EnqueueResult = { ok: true; value: EnqueueOutcome } | { ok: false; error: ErrorBody; index: number };

/** Enqueue several specs; each is answered on its own (a bad one does not stop the others). */
export async function enqueueMany(env: Env, caller: Caller, specs: RequestSpec[]): Promise<EnqueueResult[]> {
  const prepared = await Promise.all(specs.map(async (spec, index) => {
    try {
      return { ok: true as const, value: await prepare(env, caller, spec), index };
    } catch (err) {
      if (err instanceof AppError) return { ok: false as const, error: errorBody(err), index };
      throw err;
    }
  }));
  const good = prepared.filter((p) => p.ok);
  const outcomes = good.length ? await schedulerStub(env).enqueue(good.map((p) => p.value)) : [];
  const byIndex = new Map(good.map((p, i) => [p.index, outcomes[i]!]));
  return prepared.map((p) => (p.ok ? { ok: true, value: byIndex.get(p.index)! } : { ok: false, error: p.error, index: p.index }));
}

/** Enqueue one spec and, for the immediate queue, run it now when every limit admits it. */
export async function execute(env: Env, caller: Caller, spec: RequestSpec): Promise<EnqueueOutcome> {
  const prepared = await prepare(env, caller, { ...spec, queue: spec.queue ?? "immediate" });
  const template = await templateConfig(env, prepared.template);
  return schedulerStub(env).execute(prepared, template.timeoutMs + 1000);
}

export async function getRequest(env: Env, id: string, clientId: string | null): Promise<RequestView> {
  const found = await schedulerStub(env).get(id, clientId);
  if (!found) throw new AppError("request_not_found", `no request ${id}`, { request_id: id });
  return found;
}

export async function positionOf(env: Env, id: string, clientId: string | null): Promise<PositionView> {
  const found = await schedulerStub(env).position(id, clientId);
  if (!found) throw new AppError("request_not_found", `no request ${id}`, { request_id: id });
  return found;
}

export async function cancelRequest(env: Env, id: string, clientId: string | null, onlyQueued: boolean): Promise<RequestView> {
  return unwrap(await schedulerStub(env).cancel(id, clientId, onlyQueued));
}

function errorBody(err: AppError): ErrorBody {
  return err.details ? { code: err.code, message: err.message, details: err.details } : { code: err.code, message: err.message };
}

export { QUEUES };
