import { z } from "zod";

/**
 * The worker's settings from its environment ([vars] in wrangler.toml): one zod schema, parsed once per
 * env object, with every default in one place. A value that does not parse falls back to its default
 * (a setting never takes the service down); the optimizer warns about its two (services/optimizer.ts).
 */
const int = (min: number, max: number, fallback: number) => z.coerce.number().int().min(min).max(max).catch(fallback);

const Settings = z.object({
  ENVIRONMENT: z.string().catch("development"),
  /** How long pool configuration and API-key lookups are cached in an isolate. */
  CONFIG_TTL_MS: int(1, 3_600_000, 5000),
  /** How long usage events wait in a pool object's outbox before a flush, and the most a quiet one waits. */
  USAGE_FLUSH_DELAY_MS: int(1, 3_600_000, 1000),
  USAGE_FLUSH_MAX_MS: int(1, 3_600_000, 10_000).optional(),
  /** Extra time a dispatch lease lasts beyond the template's timeout. */
  LEASE_MARGIN_MS: int(1, 3_600_000, 5000),
  ALERT_WEBHOOK_URL: z.string().catch(""),
  /** "all": a line per request; "errors": failures, slow requests and a sample of the rest. */
  REQUEST_LOG: z.enum(["all", "errors"]).catch("errors"),
  /** One in how many requests that need no line is logged anyway (0: none). */
  REQUEST_LOG_SAMPLE: int(0, Number.MAX_SAFE_INTEGER, 100),
  /** Checked, with a warning, by the optimizer (services/optimizer.ts). */
  OFF_PEAK_HOURS: z.string().optional(),
  DOWNGRADE_BUDGET_PERCENT: z.string().optional(),
  /** The largest request body the API reads. */
  MAX_BODY_BYTES: int(1, Number.MAX_SAFE_INTEGER, 1_048_576),
  /** Scheduler shards (1-64). */
  SCHEDULER_SHARDS: int(1, 64, 4),
  /**
   * Requests one scheduler shard keeps queued, at most: each keeps ~1 kB of the shard's heap, and an
   * isolate has 128 MB (docs/operations.md). New work for a full shard is refused with `queue_full`.
   */
  SCHEDULER_MAX_QUEUED: int(1, 10_000_000, 50_000),
  /**
   * "on": a single enqueue's money is admitted by its scheduler shard against a hold lent by the client's
   * object (decision 008), one call and one commit fewer per enqueue; "off": by the client's object.
   */
  ENQUEUE_MONEY_LEASES: z.enum(["on", "off"]).catch("on"),
});

export type Settings = z.infer<typeof Settings>;

/** Parsed once per env object (an isolate keeps one; tests make their own). */
const parsed = new WeakMap<object, Settings>();

export function settings(env: Env): Settings {
  let s = parsed.get(env);
  if (!s) {
    const raw = env as unknown as Record<string, unknown>;
    // Unset or empty: the default, as an empty [vars] entry means "not configured".
    const given = Object.fromEntries(Object.keys(Settings.shape).map((k) => [k, raw[k] === "" ? undefined : raw[k]]));
    s = Settings.parse(given);
    parsed.set(env, s);
  }
  return s;
}
