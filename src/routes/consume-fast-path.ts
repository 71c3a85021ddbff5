import { AppError } from "../errors";
import { createLogger } from "../log";
import type { z } from "@hono/zod-openapi";
import { ConsumeRequest, consumeNow, idempotencyKey } from "./internal";
import { CLIENT_ID, MAX_REF_LENGTH, MAX_UNITS, POOL_ID } from "./schemas";
import { bearer, identify, knownSecret } from "../http/auth";
import type { Principal } from "../http/context";
import { errorEnvelope, INTERNAL_ERROR } from "../http/errors";
import { JSON_MEDIA, maxBodyBytes, readBody, readRest } from "../http/limits";
import { requestEnded, traceIdFor } from "../http/trace";

/**
 * The hot path: `POST /internal/consume`, the call platform workers make before every spend, served
 * without the router. Under wrangler dev the app's generic path (router, middleware chain, validator,
 * context) cost about 200 us of CPU per request more than reading the body and answering; a consume
 * is about 1.3 ms in all.
 *
 * It serves only what it is sure of: a JSON body that the route's own schema accepts, from an internal
 * or admin token. Everything else — no or another credential, another content type, malformed JSON, a
 * field that fails validation — is handed to the app untouched (the body it read is passed on), which
 * answers as it always does. Nothing has been changed by then. From the decision on, the answer is this
 * path's: the same body, the same error envelope and Retry-After, the same request log line and latency
 * metric, from the same functions the app uses. The route stays in the app for the OpenAPI document.
 */
export async function hotConsume(request: Request, env: Env, ctx: ExecutionContext, app: (request: Request) => Response | Promise<Response>): Promise<Response> {
  const started = Date.now();
  const contentType = request.headers.get("content-type");
  const token = bearer(request.headers.get("authorization") ?? undefined);
  if (!contentType || !(contentType === "application/json" || JSON_MEDIA.test(contentType.split(";")[0]!.trim())) || !token) return app(request);
  // A token already proved to be a secret needs no await; a lookup that fails (an API key's, in D1) is
  // the app's to answer, with its envelope.
  const identified = knownSecret(env, token) ?? (await identify(env, token).catch(() => null));
  const principal = identified?.principal;
  if (!principal || (principal.kind !== "internal" && principal.kind !== "admin")) return app(request);
  let text: string;
  try {
    // The app's body limit, enforced here too: this path never reaches the app's middleware.
    const bytes = await readConsumeBody(request, maxBodyBytes(env));
    text = bytes ? utf8.decode(bytes) : "";
  } catch (err) {
    if (err instanceof AppError) return answerError(env, err, request, started, principal);
    return app(request);
  }
  let input: unknown;
  try {
    input = JSON.parse(text);
  } catch {
    input = undefined;
  }
  const plain = plainConsume(input);
  const parsed = plain ? { success: true as const, data: plain } : input === undefined ? null : ConsumeRequest.safeParse(input);
  let key: string | undefined;
  try {
    if (!parsed?.success) throw new Error("not valid");
    key = idempotencyKey(parsed.data.idempotency_key, request.headers.get("idempotency-key") ?? undefined);
  } catch {
    // The body it read goes on (none when there was none: the app tells a missing body from a malformed one).
    return app(new Request(request, { body: text === "" ? null : text }));
  }

  const traceId = traceIdFor(request.headers.get("x-trace-id") ?? undefined);
  const logger = createLogger({ trace_id: traceId });
  let status = 200;
  let response: Response;
  try {
    const body = await consumeNow(env, ctx, principal, parsed.data, key, traceId);
    response = new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", "x-trace-id": traceId } });
  } catch (err) {
    if (!(err instanceof AppError)) logger.error("unhandled_error", { error: err instanceof Error ? err.message : String(err), stack: err instanceof Error ? err.stack : undefined });
    const appError = err instanceof AppError ? err : INTERNAL_ERROR();
    const { body, retryAfter } = errorEnvelope(appError, traceId);
    status = appError.status;
    const headers: Record<string, string> = { "content-type": "application/json", "x-trace-id": traceId };
    if (retryAfter !== undefined) headers["retry-after"] = String(retryAfter);
    response = new Response(JSON.stringify(body), { status, headers });
  }
  requestEnded(env, logger, { method: "POST", path: HOT_PATH, route: HOT_PATH, status, durationMs: Date.now() - started, principal });
  return response;
}

/**
 * The body, as readBody reads it (the app's limit, counted while streaming), but for the usual consume
 * (a Content-Length of a few dozen bytes, all in the first chunk) in one read: the stream's end is not
 * awaited, the bytes the header announced are the body. Waiting for the end took a second read per
 * request, and the loop of readBody about 15% of the isolate's time under load (V8 profile, bench (c)).
 * Anything else (no or a larger length, or a first chunk of another size) goes on as readBody does.
 */
async function readConsumeBody(request: Request, max: number): Promise<Uint8Array | null> {
  const declared = Number(request.headers.get("content-length") ?? NaN);
  if (!request.body || !(declared > 0 && declared <= Math.min(max, SMALL_BODY))) return readBody(request, max);
  const reader = request.body.getReader();
  const first = await reader.read();
  if (first.done) return new Uint8Array(0);
  if (first.value.byteLength === declared) {
    reader.releaseLock();
    return first.value;
  }
  return readRest(reader, [first.value], max);
}

/** One decoder for every request (decode() without a stream option keeps no state between calls). */
const utf8 = new TextDecoder();

/** Bodies up to this many bytes may be read in one go (a consume's is under 200). */
const SMALL_BODY = 4096;

/** A refusal before the spend (the body limit): the envelope, its request log line and latency metric. */
function answerError(env: Env, err: AppError, request: Request, started: number, principal: Principal): Response {
  const traceId = traceIdFor(request.headers.get("x-trace-id") ?? undefined);
  const { body } = errorEnvelope(err, traceId);
  requestEnded(env, createLogger({ trace_id: traceId }), { method: "POST", path: HOT_PATH, route: HOT_PATH, status: err.status, durationMs: Date.now() - started, principal });
  return new Response(JSON.stringify(body), { status: err.status, headers: { "content-type": "application/json", "x-trace-id": traceId } });
}

type ConsumeInput = z.infer<typeof ConsumeRequest>;
const CONSUME_KEYS = new Set(["client_id", "pool", "amount", "request_id", "idempotency_key"]);

/**
 * The usual body, checked without zod: an object of only ConsumeRequest's keys, each of its type and
 * pattern, from the same constants. It accepts a subset of what the schema accepts (never more; see
 * test/api/consume-fast-path.test.ts) and returns the same data; anything else is left to ConsumeRequest, which decides
 * and words any failure.
 */
export function plainConsume(input: unknown): ConsumeInput | null {
  if (typeof input !== "object" || input === null || Array.isArray(input)) return null;
  for (const k in input) if (!Object.hasOwn(input, k) || !CONSUME_KEYS.has(k)) return null;
  const { client_id, pool, amount, request_id, idempotency_key } = input as Record<string, unknown>;
  if (typeof client_id !== "string" || !CLIENT_ID.test(client_id)) return null;
  if (typeof pool !== "string" || !POOL_ID.test(pool)) return null;
  if (typeof amount !== "number" || !Number.isSafeInteger(amount) || amount <= 0 || amount > MAX_UNITS) return null;
  const ref = (v: unknown) => v === undefined || (typeof v === "string" && v.length >= 1 && v.length <= MAX_REF_LENGTH);
  if (!ref(request_id) || !ref(idempotency_key)) return null;
  const out: ConsumeInput = { client_id, pool, amount };
  if (request_id !== undefined) out.request_id = request_id as string;
  if (idempotency_key !== undefined) out.idempotency_key = idempotency_key as string;
  return out;
}

/** Whether `request` is one hotConsume takes (it may still hand it to the app). */
export function isHotConsume(request: Request): boolean {
  if (request.method !== "POST") return false;
  const url = request.url;
  const start = url.indexOf("/", url.indexOf("//") + 2);
  return start >= 0 && url.length - start === HOT_PATH.length && url.endsWith(HOT_PATH);
}

const HOT_PATH = "/internal/consume";
