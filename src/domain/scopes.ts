/**
 * The scopes an API key may carry. Every route a key can reach requires one of them (requireScope in
 * src/http/auth.ts); the admin token passes every scope check.
 */
export const SCOPES = ["resources:read", "execute", "usage:read", "quota:read", "burst", "allocations"] as const;
export type Scope = (typeof SCOPES)[number];

/** What each scope opens, for the API document and docs/api-guide.md. */
export const SCOPE_DESCRIPTIONS: Record<Scope, string> = {
  "resources:read": "pool availability, checks and cost estimates; /status",
  execute: "enqueue and execute requests, read and cancel them, queue status",
  "usage:read": "usage history, this month's spend, a request's cost",
  "quota:read": "the client's quota and quota checks",
  burst: "request, read and end burst sessions",
  allocations: "hierarchical allocations: allocate, release, list",
};
