import type { z } from "@hono/zod-openapi";
import type { ExtractSchema } from "hono/types";
import type { JSONValue } from "hono/utils/types";
import type { ErrorCode } from "../errors";
import type { allocationRoutes } from "../routes/allocations";
import type { costRoutes } from "../routes/cost";
import type { healthRoutes } from "../routes/health";
import type { internalRoutes } from "../routes/internal";
import type { optimizeRoutes } from "../routes/optimize";
import type { queueRoutes, RequestSpec } from "../routes/queue";
import type { quotaRoutes } from "../routes/quotas";
import type { resourceRoutes } from "../routes/resources";
import type { slaRoutes } from "../routes/sla";
import type { usageRoutes } from "../routes/usage";
import type { OPERATIONS, OperationName } from "./operations";

/**
 * The RPC methods' types, read from the REST routes' own zod schemas (through Hono's route types):
 * an RPC input is the route's body, query and path fields; an RPC answer is the route's 2xx body.
 * Nothing here is written twice, so RPC and REST cannot drift apart.
 */
type Routes = ExtractSchema<typeof queueRoutes> & ExtractSchema<typeof internalRoutes> & ExtractSchema<typeof resourceRoutes>
  & ExtractSchema<typeof costRoutes> & ExtractSchema<typeof usageRoutes> & ExtractSchema<typeof quotaRoutes>
  & ExtractSchema<typeof allocationRoutes> & ExtractSchema<typeof optimizeRoutes> & ExtractSchema<typeof slaRoutes>
  & ExtractSchema<typeof healthRoutes>;

type Op<N extends OperationName> = (typeof OPERATIONS)[N];
type Endpoint<N extends OperationName> = Routes[Op<N>["path"]] extends infer R ? (R extends Record<`$${Lowercase<Op<N>["method"]>}`, infer E> ? E : never) : never;

type Snake<S extends string> = S extends `${infer H}${infer T}` ? `${H extends Lowercase<H> ? H : `_${Lowercase<H>}`}${Snake<T>}` : S;
type Snaked<T> = { [K in keyof T as K extends string ? Snake<K> : K]: T[K] };
type Simplify<T> = { [K in keyof T]: T[K] } & {};
type Part<I, K extends string> = I extends Record<K, infer P> ? P : unknown;

type Inputs<N extends OperationName> = Endpoint<N> extends { input: infer I } ? I : never;
/** The enqueue route's body is declared loosely (one spec or a batch): its two real shapes. */
type Body<N extends OperationName> = N extends "enqueue"
  ? z.input<typeof RequestSpec> | { requests: Array<Omit<z.input<typeof RequestSpec>, "client_id">> }
  : Inputs<N> extends { json: infer J } ? J : unknown;

/** An RPC method's input: the REST body (or query) and path fields, and the client it acts for. */
export type RpcInput<N extends OperationName> = Simplify<
  Body<N>
  & Part<Inputs<N>, "query">
  & Snaked<Part<Inputs<N>, "param">>
  & { client_id: string }
>;

/**
 * Free-form JSON (a request's params and result, an error's details' values) as it crosses the
 * binding; narrow it where you read it. Neither `unknown` nor a recursive JSON type: a caller's
 * `Service<ResourceManagerRpc>` keeps only answers that its types prove serializable, and proving a
 * recursive type is too deep for TypeScript.
 */
export type Json = string | number | boolean | null | object;

/** REST's answer type as it crosses the binding: free-form parts as Json, the rest as is. */
type Wire<T> = 0 extends 1 & T ? Json
  : unknown extends T ? Json
  : [JSONValue] extends [T] ? Json
  : T extends ReadonlyArray<infer U> ? Wire<U>[]
  : T extends object ? { [K in keyof T]: Wire<T[K]> }
  : T;

/** An RPC method's answer when it succeeds: the REST 2xx body (with its trace_id). */
export type RpcOutput<N extends OperationName> = Wire<Endpoint<N> extends infer E ? (E extends { status: 200 | 201 | 202; output: infer O } ? O : never) : never>;

/** An error as REST's envelope carries it. */
export interface RpcError {
  code: ErrorCode;
  message: string;
  details?: Record<string, Json>;
}

/** A refusal: REST's error envelope, plus `retry_after_s` where REST would send Retry-After. */
export interface RpcFailure {
  ok: false;
  error: RpcError;
  trace_id: string;
  retry_after_s?: number;
}

/** Every RPC method answers this: the REST body with `ok: true`, or the error with `ok: false`. */
export type RpcResult<T> = ({ ok: true } & T) | RpcFailure;

/** The optional last argument of every method. */
export interface RpcOptions {
  /** Used as the call's trace id (on its log lines, its answer, and the work it starts) when well formed: [A-Za-z0-9._:-]{1,128}. */
  trace_id?: string;
}
