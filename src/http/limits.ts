import type { OpenAPIHono } from "@hono/zod-openapi";
import type { MiddlewareHandler } from "hono";
import { jsonTooDeep, MAX_JSON_DEPTH } from "../domain/json";
import { AppError, type ErrorCode } from "../errors";
import type { AppEnv } from "./context";
import { errorDescription, errorResponses } from "./errors";
import { settings } from "../settings";

/** What JSON body parsers take (hono/validator's test). */
export const JSON_MEDIA = /^application\/([\w.-]+\+)?json$/i;

export function maxBodyBytes(env: Env): number {
  return settings(env).MAX_BODY_BYTES;
}

function tooLarge(max: number): AppError {
  return new AppError("payload_too_large", `the request body is over ${max} bytes`, { max_bytes: max });
}

/**
 * Read a request's body, refusing (413) once it is over `max` bytes: at once when Content-Length says
 * so, else while streaming. The bytes are counted either way, because the header is the caller's
 * claim (an in-process caller such as a service binding can send any). Null when there is no body.
 */
export async function readBody(request: Request, max: number): Promise<Uint8Array | null> {
  if (!request.body) return null;
  const declared = request.headers.get("content-length");
  if (declared !== null && /^\s*\d+\s*$/.test(declared) && Number(declared) > max) {
    await request.body.cancel().catch(() => undefined);
    throw tooLarge(max);
  }
  return readRest(request.body.getReader(), [], max);
}

/**
 * The rest of a body whose first chunks were already read (`chunks`, added to), counted while
 * streaming: 413 once the total is over `max`.
 */
export async function readRest(reader: ReadableStreamDefaultReader<Uint8Array>, chunks: Uint8Array[], max: number): Promise<Uint8Array> {
  let size = chunks.reduce((n, c) => n + c.byteLength, 0);
  for (;;) {
    if (size > max) {
      await reader.cancel().catch(() => undefined);
      throw tooLarge(max);
    }
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.byteLength;
  }
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.byteLength;
  }
  return out;
}

/** 400 for a JSON body nested deeper than MAX_JSON_DEPTH (before it is parsed), else null. */
export function depthError(bytes: Uint8Array, contentType: string | null | undefined): AppError | null {
  if (!contentType || !JSON_MEDIA.test(contentType.split(";")[0]!.trim())) return null;
  const deep = jsonTooDeep(bytes, MAX_JSON_DEPTH);
  if (!deep) return null;
  return new AppError("validation_failed", `the request body nests deeper than ${MAX_JSON_DEPTH} levels`, {
    fields: [{ path: deep.path, message: `at most ${MAX_JSON_DEPTH} levels of objects and arrays, counting the body itself` }],
    max_depth: MAX_JSON_DEPTH,
  });
}

/**
 * Every body the app receives passes here first, before any route reads it: over MAX_BODY_BYTES is
 * 413, JSON nested deeper than MAX_JSON_DEPTH is 400. What passes is handed on buffered: a JSON body
 * as the request's text (hono's body cache, which `c.req.json()` and the validators read), any other as
 * a new Request over the bytes read. A new Request per JSON call, and reading its body again, were ~5%
 * of the worker's CPU per single enqueue (docs/benchmarks.md).
 */
export const limitInput: MiddlewareHandler<AppEnv> = async (c, next) => {
  const raw = c.req.raw;
  if (!raw.body) return next();
  const bytes = await readBody(raw, maxBodyBytes(c.env));
  const type = raw.headers.get("content-type");
  const deep = bytes && depthError(bytes, type);
  if (deep) throw deep;
  if (bytes && bytes.byteLength > 0 && type && JSON_MEDIA.test(type.split(";")[0]!.trim())) {
    // The cache holds promises (hono's HonoRequest#cachedBody), though its type says values.
    (c.req.bodyCache as Record<string, unknown>).text = Promise.resolve(UTF8.decode(bytes));
    return next();
  }
  c.req.raw = new Request(raw, { body: bytes && bytes.byteLength > 0 ? bytes : null });
  return next();
};

const UTF8 = new TextDecoder();

const BODY_METHODS = new Set(["post", "put", "patch", "delete"]);
const LIMIT_ERRORS: ErrorCode[] = ["payload_too_large", "validation_failed"];

type Responses = Record<string, { description?: string; content?: Record<string, { examples?: Record<string, unknown> }> }>;

/**
 * Declare limitInput's answers (413, and 400 validation_failed) on every operation that may carry a
 * body, in the registry the OpenAPI document and the tests' contract check are read from. Idempotent.
 */
export function declareInputLimits(app: OpenAPIHono<AppEnv>): void {
  const extra = errorResponses(...LIMIT_ERRORS) as unknown as Responses;
  for (const def of app.openAPIRegistry.definitions) {
    if (def.type !== "route" || !BODY_METHODS.has(def.route.method)) continue;
    const responses = { ...(def.route.responses as unknown as Responses) };
    for (const [status, add] of Object.entries(extra)) {
      const have = responses[status];
      const examples = have?.content?.["application/json"]?.examples;
      if (!have) {
        responses[status] = add;
        continue;
      }
      if (!examples) continue;
      const missing = Object.keys(add.content!["application/json"]!.examples!).filter((code) => !(code in examples)) as ErrorCode[];
      if (missing.length === 0) continue;
      // A copy: other operations may share this response object.
      responses[status] = {
        ...have,
        description: errorDescription([...Object.keys(examples), ...missing]),
        content: {
          ...have.content,
          "application/json": { ...have.content!["application/json"], examples: { ...examples, ...Object.fromEntries(missing.map((code) => [code, add.content!["application/json"]!.examples![code]])) } },
        },
      };
    }
    (def.route as { responses: unknown }).responses = responses;
  }
}
