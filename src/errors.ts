/**
 * The one table of error codes. HTTP statuses, the error envelope and the OpenAPI error responses are
 * all derived from it, so documented and actual errors cannot drift apart.
 */
export const ERRORS = {
  bad_request: { status: 400, description: "The request is malformed (JSON, content type, missing body)." },
  validation_failed: { status: 400, description: "A field failed validation; details name each failing field." },
  amount_exceeds_capacity: { status: 400, description: "More units than the pool can ever hold for this caller." },
  payload_too_large: { status: 413, description: "The request body is over the limit (MAX_BODY_BYTES, 1 MiB by default); refused before it is read further. Details name max_bytes." },
  unauthorized: { status: 401, description: "No credential, or one that is not valid." },
  budget_exceeded: { status: 402, description: "The client's monthly budget cannot cover this request; details name budget, spent, in flight, remaining, reset time and a cheaper alternative." },
  forbidden: { status: 403, description: "A valid credential that may not do this." },
  pool_forbidden: { status: 403, description: "The pool is dedicated to another client." },
  not_found: { status: 404, description: "No such route or resource." },
  pool_not_found: { status: 404, description: "No such pool." },
  method_not_allowed: { status: 405, description: "The path does not take this method; the Allow header names those it takes." },
  template_not_found: { status: 404, description: "No such template." },
  template_exists: { status: 409, description: "A template with this id already exists." },
  template_in_use: { status: 409, description: "Another template names this one as its cheaper alternative." },
  client_not_found: { status: 404, description: "No such client." },
  client_exists: { status: 409, description: "A client with this id already exists." },
  client_id_retired: { status: 409, description: "This id belonged to a deleted client; ids are never used again, so choose another." },
  client_busy: { status: 409, description: "The client has queued or running work; delete with force=true to cancel it." },
  client_suspended: { status: 403, description: "The client is suspended: new work is refused, queued work waits." },
  key_not_found: { status: 404, description: "No such API key for this client." },
  quota_exceeded: { status: 429, description: "The client's quota (concurrent jobs, CPU, memory or a pool's daily units) cannot admit this; details name the limit, its use and the shortfall." },
  burst_not_allowed: { status: 403, description: "The client's tier policy does not allow this burst (not allowed, too often, or above the policy's maximum)." },
  burst_not_found: { status: 404, description: "No such burst session." },
  burst_state: { status: 409, description: "The burst session is not in a state that allows this." },
  allocation_not_found: { status: 404, description: "No such allocation." },
  allocation_state: { status: 409, description: "The allocation is not in a state that allows this." },
  depth_quota_exceeded: { status: 429, description: "The depth's worker quota cannot admit this allocation; details name the depth, its limit and its use." },
  capacity_exceeded: { status: 429, description: "Not enough compute capacity (CPU, memory or workers) for this allocation." },
  pool_exists: { status: 409, description: "A pool with this id already exists." },
  pool_busy: { status: 409, description: "The pool has active reservations." },
  pool_not_dynamic: { status: 409, description: "The pool is statically sized: scaling policies, cooldowns and evaluations apply only to dynamic pools." },
  scaling_policy_not_found: { status: 404, description: "The pool has no scaling policy." },
  request_not_found: { status: 404, description: "No such request for this client." },
  request_state: { status: 409, description: "The request is not in a state that allows this." },
  reservation_not_found: { status: 404, description: "No such reservation in this pool." },
  reservation_closed: { status: 409, description: "The reservation was already released or has expired." },
  idempotency_conflict: { status: 409, description: "The idempotency key was used with different parameters." },
  alert_not_found: { status: 404, description: "No such alert." },
  alert_state: { status: 409, description: "The alert is resolved and can no longer be acknowledged." },
  pool_inactive: { status: 409, description: "The pool is draining or disabled and takes no new spending." },
  rate_limited: { status: 429, description: "A rate limit refuses this now (a pool's units, or failed dashboard logins from this address); Retry-After says when to try again." },
  worker_failed: { status: 502, description: "The template's worker failed on every attempt; details carry the request." },
  internal: { status: 500, description: "Unexpected failure; the trace id finds it in the logs." },
  unavailable: { status: 503, description: "A dependency is down." },
  queue_full: { status: 503, description: "The scheduler shard that keeps this client's work has as many requests queued as it may hold (SCHEDULER_MAX_QUEUED); nothing was queued. Details name the shard, its queued count and the limit; Retry-After says when to try again." },
} as const satisfies Record<string, { status: number; description: string }>;

export type ErrorCode = keyof typeof ERRORS;

export interface ErrorBody {
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown>;
}

/** The one error type the app throws; turned into the envelope by the error handler. */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly details?: Record<string, unknown>;
  /** Seconds for a Retry-After header (429 and some 503s). */
  readonly retryAfterSec?: number;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, retryAfterSec?: number) {
    super(message);
    this.name = "AppError";
    this.code = code;
    this.details = details;
    this.retryAfterSec = retryAfterSec;
  }

  get status(): number {
    return ERRORS[this.code].status;
  }

  static from(body: ErrorBody, retryAfterSec?: number): AppError {
    return new AppError(body.code, body.message, body.details, retryAfterSec);
  }
}
