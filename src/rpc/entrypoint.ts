import { WorkerEntrypoint } from "cloudflare:workers";
import { createApp } from "../app";
import { SCOPES } from "../domain/scopes";
import { AppError } from "../errors";
import { CLIENT_ID } from "../routes/schemas";
import { clientTier } from "../storage/config";
import { callEnded, callRoute, failureOf, traceIdOf, type RouteCall } from "./dispatch";
import type { Identity } from "../http/identity";
import { fieldOf, OPERATIONS, type OperationName } from "./operations";
import type { RpcInput, RpcOptions, RpcOutput, RpcResult } from "./types";

type Answer<N extends OperationName> = Promise<RpcResult<RpcOutput<N>>>;

/** The REST app that answers every call (one per isolate, made on the first call). */
let app: ReturnType<typeof createApp> | null = null;

/**
 * RPC for KAM and the platform's workers over a service binding
 * (`[[services]] binding = "RM", service = "resource-manager", entrypoint = "ResourceManagerRpc"`).
 *
 * Every method is a REST operation (src/rpc/operations.ts) and is answered by that route, in-process:
 * the input is the route's body (or query) and path fields in REST's snake_case names, the answer is
 * REST's body with `ok: true`, or REST's error envelope with `ok: false` (never a throw: thrown errors
 * lose their properties across the binding unless both workers set `enhanced_error_serialization`).
 *
 * The binding is the credential, as the internal token is over HTTP: a caller names the client it acts
 * for in `client_id`, and client operations run as that client's API key with every scope would
 * (its own requests only; a suspended client may read but start nothing). Bind it only to trusted
 * workers. Each call writes one log line and is counted in /metrics (rm_rpc_*); pass `{ trace_id }`
 * as the last argument to carry your own trace id.
 */
export class ResourceManagerRpc extends WorkerEntrypoint<Env> {
  // Queue and execution
  enqueue(input: RpcInput<"enqueue">, options?: RpcOptions): Answer<"enqueue"> { return call(this.env, this.ctx, "enqueue", input, options); }
  execute(input: RpcInput<"execute">, options?: RpcOptions): Answer<"execute"> { return call(this.env, this.ctx, "execute", input, options); }
  queueStatus(input: RpcInput<"queueStatus">, options?: RpcOptions): Answer<"queueStatus"> { return call(this.env, this.ctx, "queueStatus", input, options); }
  position(input: RpcInput<"position">, options?: RpcOptions): Answer<"position"> { return call(this.env, this.ctx, "position", input, options); }
  dequeue(input: RpcInput<"dequeue">, options?: RpcOptions): Answer<"dequeue"> { return call(this.env, this.ctx, "dequeue", input, options); }
  status(input: RpcInput<"status">, options?: RpcOptions): Answer<"status"> { return call(this.env, this.ctx, "status", input, options); }
  cancel(input: RpcInput<"cancel">, options?: RpcOptions): Answer<"cancel"> { return call(this.env, this.ctx, "cancel", input, options); }
  sla(input: RpcInput<"sla">, options?: RpcOptions): Answer<"sla"> { return call(this.env, this.ctx, "sla", input, options); }
  // Usage and cost
  slaReport(input: RpcInput<"slaReport">, options?: RpcOptions): Answer<"slaReport"> { return call(this.env, this.ctx, "slaReport", input, options); }
  usage(input: RpcInput<"usage">, options?: RpcOptions): Answer<"usage"> { return call(this.env, this.ctx, "usage", input, options); }
  currentUsage(input: RpcInput<"currentUsage">, options?: RpcOptions): Answer<"currentUsage"> { return call(this.env, this.ctx, "currentUsage", input, options); }
  cost(input: RpcInput<"cost">, options?: RpcOptions): Answer<"cost"> { return call(this.env, this.ctx, "cost", input, options); }
  costEstimate(input: RpcInput<"costEstimate">, options?: RpcOptions): Answer<"costEstimate"> { return call(this.env, this.ctx, "costEstimate", input, options); }
  // Pools
  serviceStatus(input: RpcInput<"serviceStatus">, options?: RpcOptions): Answer<"serviceStatus"> { return call(this.env, this.ctx, "serviceStatus", input, options); }
  availability(input: RpcInput<"availability">, options?: RpcOptions): Answer<"availability"> { return call(this.env, this.ctx, "availability", input, options); }
  check(input: RpcInput<"check">, options?: RpcOptions): Answer<"check"> { return call(this.env, this.ctx, "check", input, options); }
  estimate(input: RpcInput<"estimate">, options?: RpcOptions): Answer<"estimate"> { return call(this.env, this.ctx, "estimate", input, options); }
  // Quota and bursts
  quota(input: RpcInput<"quota">, options?: RpcOptions): Answer<"quota"> { return call(this.env, this.ctx, "quota", input, options); }
  quotaCheck(input: RpcInput<"quotaCheck">, options?: RpcOptions): Answer<"quotaCheck"> { return call(this.env, this.ctx, "quotaCheck", input, options); }
  requestBurst(input: RpcInput<"requestBurst">, options?: RpcOptions): Answer<"requestBurst"> { return call(this.env, this.ctx, "requestBurst", input, options); }
  burst(input: RpcInput<"burst">, options?: RpcOptions): Answer<"burst"> { return call(this.env, this.ctx, "burst", input, options); }
  endBurst(input: RpcInput<"endBurst">, options?: RpcOptions): Answer<"endBurst"> { return call(this.env, this.ctx, "endBurst", input, options); }
  // Allocations
  allocationQuotas(input: RpcInput<"allocationQuotas">, options?: RpcOptions): Answer<"allocationQuotas"> { return call(this.env, this.ctx, "allocationQuotas", input, options); }
  allocate(input: RpcInput<"allocate">, options?: RpcOptions): Answer<"allocate"> { return call(this.env, this.ctx, "allocate", input, options); }
  releaseAllocation(input: RpcInput<"releaseAllocation">, options?: RpcOptions): Answer<"releaseAllocation"> { return call(this.env, this.ctx, "releaseAllocation", input, options); }
  allocationUsage(input: RpcInput<"allocationUsage">, options?: RpcOptions): Answer<"allocationUsage"> { return call(this.env, this.ctx, "allocationUsage", input, options); }
  capacity(input: RpcInput<"capacity">, options?: RpcOptions): Answer<"capacity"> { return call(this.env, this.ctx, "capacity", input, options); }
  allocations(input: RpcInput<"allocations">, options?: RpcOptions): Answer<"allocations"> { return call(this.env, this.ctx, "allocations", input, options); }
  allocation(input: RpcInput<"allocation">, options?: RpcOptions): Answer<"allocation"> { return call(this.env, this.ctx, "allocation", input, options); }
  // Optimizer
  analyze(input: RpcInput<"analyze">, options?: RpcOptions): Answer<"analyze"> { return call(this.env, this.ctx, "analyze", input, options); }
  optimizerStats(input: RpcInput<"optimizerStats">, options?: RpcOptions): Answer<"optimizerStats"> { return call(this.env, this.ctx, "optimizerStats", input, options); }
  recommendations(input: RpcInput<"recommendations">, options?: RpcOptions): Answer<"recommendations"> { return call(this.env, this.ctx, "recommendations", input, options); }
  // Spending (the internal token's /internal/*)
  consume(input: RpcInput<"consume">, options?: RpcOptions): Answer<"consume"> { return call(this.env, this.ctx, "consume", input, options); }
  reserve(input: RpcInput<"reserve">, options?: RpcOptions): Answer<"reserve"> { return call(this.env, this.ctx, "reserve", input, options); }
  release(input: RpcInput<"release">, options?: RpcOptions): Answer<"release"> { return call(this.env, this.ctx, "release", input, options); }
}

/** Outside the class: what is on its prototype is callable over the binding. */
async function call<N extends OperationName>(env: Env, ctx: ExecutionContext, name: N, input: unknown, options: RpcOptions | undefined): Answer<N> {
  const started = Date.now();
  const traceId = traceIdOf(options?.trace_id);
  const fields = isRecord(input) ? input : null;
  const clientId = typeof fields?.client_id === "string" && CLIENT_ID.test(fields.client_id) ? fields.client_id : null;
  let result: RpcResult<RpcOutput<N>>;
  try {
    if (!fields) throw new AppError("validation_failed", "the input must be an object", { fields: [{ path: "", message: "expected an object" }] });
    const identity = OPERATIONS[name].as === "internal" ? INTERNAL : await actingFor(env, fields.client_id);
    result = await callRoute<RpcOutput<N>>((app ??= createApp()).fetch, env, ctx, identity, routeCall(name, fields), traceId);
  } catch (err) {
    result = failureOf(err, traceId, { via: "rpc", method: name });
  }
  callEnded("rpc", name, clientId, result, started, traceId);
  return result;
}

/** The client a call acts for, as its API key with every scope would. */
async function actingFor(env: Env, clientId: unknown): Promise<Identity> {
  if (typeof clientId !== "string" || !CLIENT_ID.test(clientId)) {
    throw new AppError("validation_failed", "invalid input", { fields: [{ path: "client_id", message: "the client this call acts for: letters, digits, _ and -, at most 64" }] });
  }
  const client = await clientTier(env, clientId);
  if (!client) throw new AppError("client_not_found", `no client ${clientId}`, { client_id: clientId });
  return {
    principal: { kind: "client", clientId, tier: client.tier, scopes: [...SCOPES], keyId: "rpc" },
    suspended: client.status === "suspended",
  };
}

const INTERNAL: Identity = { principal: { kind: "internal" }, suspended: false };

/** The route call of an operation: path parameters from their fields, the rest as query or body. */
function routeCall(name: OperationName, input: Record<string, unknown>): RouteCall {
  const op = OPERATIONS[name];
  const rest: Record<string, unknown> = { ...input };
  // A client operation's client is its credential's (as with a key); internal ones name it in the body.
  if (op.as === "client") delete rest.client_id;
  const path = op.path.replace(/:([A-Za-z]+)/g, (_, param: string) => {
    const field = fieldOf(param);
    const value = input[field];
    delete rest[field];
    if (typeof value !== "string" || value === "") throw new AppError("validation_failed", "invalid input", { fields: [{ path: field, message: "Required: a string" }] });
    return encodeURIComponent(value);
  });
  return op.method === "GET" ? { method: op.method, path, query: rest } : { method: op.method, path, body: op.method === "DELETE" && Object.keys(rest).length === 0 ? undefined : rest };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
