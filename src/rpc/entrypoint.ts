import { WorkerEntrypoint } from "cloudflare:workers";
import type { Caller, PoolAmount } from "../domain/types";
import { AppError } from "../errors";
import type { CheckResult, ConsumeResult, ReleaseResult, ReserveResult } from "../objects/pool";
import type { EnqueueOutcome, PositionView, RequestView } from "../objects/scheduler";
import { clientTier, poolConfig } from "../services/config";
import { estimateCost, type CostEstimate } from "../services/estimate";
import { validationError } from "../http/errors";
import { RequestSpec as RequestSpecSchema } from "../routes/queue";
import { consumeAt, poolStub, unwrap } from "../services/pools";
import { cancelRequest, enqueueMany, execute, getRequest, positionOf, schedulerStub, type EnqueueResult, type RequestSpec } from "../services/requests";

/**
 * RPC for KAM and the platform's workers over a service binding
 * (`[[services]] binding = "RM", service = "resource-manager", entrypoint = "ResourceManagerRpc"`).
 * The binding is the credential: callers name the client they act for. Errors are thrown as
 * `Error` whose message starts with the error code, e.g. "rate_limited: pool openai-gpt4 ...".
 */
export class ResourceManagerRpc extends WorkerEntrypoint<Env> {
  async execute(clientId: string, spec: RequestSpec): Promise<EnqueueOutcome> {
    return this.run(async () => execute(this.env, await this.caller(clientId), parseSpec(spec)));
  }

  /** Each spec is validated and answered on its own, as with POST /api/queue/enqueue. */
  async enqueue(clientId: string, specs: RequestSpec[]): Promise<EnqueueResult[]> {
    return this.run(async () => {
      if (!Array.isArray(specs) || specs.length === 0 || specs.length > 100) throw new AppError("validation_failed", "specs must be an array of 1 to 100 requests");
      const caller = await this.caller(clientId);
      const parsed = specs.map((s) => SpecSchema.safeParse(s));
      const valid = parsed.flatMap((p, index) => (p.success ? [{ index, spec: p.data }] : []));
      const outcomes = await enqueueMany(this.env, caller, valid.map((v) => v.spec));
      const byIndex = new Map(valid.map((v, i) => [v.index, outcomes[i]!]));
      return parsed.map((p, index): EnqueueResult => {
        if (p.success) return { ...byIndex.get(index)!, index } as EnqueueResult;
        const e = validationError(p.error, "json");
        return { ok: false, index, error: { code: e.code, message: e.message, details: e.details } };
      });
    });
  }

  async status(clientId: string, requestId: string): Promise<RequestView> {
    return this.run(() => getRequest(this.env, requestId, clientId));
  }

  async position(clientId: string, requestId: string): Promise<PositionView> {
    return this.run(() => positionOf(this.env, requestId, clientId));
  }

  async cancel(clientId: string, requestId: string): Promise<RequestView> {
    return this.run(() => cancelRequest(this.env, requestId, clientId, false));
  }

  async estimate(input: { template?: string; requirements?: PoolAmount[] }): Promise<CostEstimate> {
    return this.run(() => estimateCost(this.env, input, null));
  }

  async check(clientId: string, pool: string, amount: number): Promise<CheckResult> {
    return this.run(async () => unwrap(await poolStub(this.env, pool).check(await poolConfig(this.env, pool), await this.caller(clientId, true), positive(amount))));
  }

  async reserve(clientId: string, pool: string, amount: number, opts: { ttlMs?: number; requestId?: string; idempotencyKey?: string } = {}): Promise<ReserveResult> {
    return this.run(async () => unwrap(await poolStub(this.env, pool).reserve(await poolConfig(this.env, pool), await this.caller(clientId), {
      amount: positive(amount), ttlMs: opts.ttlMs ?? 60_000, requestId: opts.requestId, idempotencyKey: opts.idempotencyKey,
    })));
  }

  async release(clientId: string, pool: string, reservationId: string, actualUsed = 0): Promise<ReleaseResult> {
    return this.run(async () => {
      const released = unwrap(await poolStub(this.env, pool).release(await poolConfig(this.env, pool), await this.caller(clientId, true), reservationId, actualUsed));
      if (released.refunded > 0) this.ctx.waitUntil(schedulerStub(this.env).wake());
      return released;
    });
  }

  async consume(clientId: string, pool: string, amount: number, opts: { requestId?: string; idempotencyKey?: string } = {}): Promise<ConsumeResult> {
    return this.run(async () => consumeAt(this.env, this.ctx, await poolConfig(this.env, pool), await this.caller(clientId), {
      amount: positive(amount), requestId: opts.requestId, idempotencyKey: opts.idempotencyKey,
    }));
  }

  /** The client acted for; a suspended one only for what starts nothing new (`allowSuspended`: check, release). */
  private async caller(clientId: string, allowSuspended = false): Promise<Caller> {
    const client = typeof clientId === "string" ? await clientTier(this.env, clientId) : null;
    if (!client) throw new AppError("client_not_found", `no client ${String(clientId)}`);
    if (client.status === "suspended" && !allowSuspended) throw new AppError("client_suspended", `client ${clientId} is suspended: new work is refused`);
    return { clientId, tier: client.tier, via: "rpc" };
  }

  /** RPC errors cross the binding as plain Errors: keep the code in the message. */
  private async run<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof AppError) {
        const fields = (err.details?.fields as Array<{ path: string; message: string }> | undefined)?.map((f) => `${f.path}: ${f.message}`).join("; ");
        throw new Error(`${err.code}: ${err.message}${fields ? ` (${fields})` : ""}`);
      }
      throw err;
    }
  }
}

const SpecSchema = RequestSpecSchema.omit({ client_id: true });

function parseSpec(spec: unknown): RequestSpec {
  const parsed = SpecSchema.safeParse(spec);
  if (!parsed.success) throw validationError(parsed.error, "json");
  return parsed.data;
}

function positive(amount: number): number {
  if (!Number.isSafeInteger(amount) || amount <= 0) throw new AppError("validation_failed", "amount must be a positive integer");
  return amount;
}
