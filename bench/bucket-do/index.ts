/**
 * Benchmark reference: the least a rate-limit decision can cost under wrangler dev. The worker parses a
 * small JSON body and makes one RPC call into one hot Durable Object, which refills its bucket lazily by
 * elapsed time, takes the amount and persists the new level with one SQL UPDATE. Nothing else: no auth,
 * no validation library, no configuration lookup, no usage record.
 */
import { DurableObject } from "cloudflare:workers";

interface BucketEnv {
  BUCKET: DurableObjectNamespace<Bucket>;
  /** "1" (set by run.mjs for the optional log probe): write one JSON log line per request, as the product does. */
  LOG_EACH_REQUEST?: string;
}

interface Take {
  ok: boolean;
  remaining: number;
}

// Large enough that a benchmark run never empties the bucket.
const CAPACITY = 1e12;
const REFILL_PER_SEC = 1e9;

export class Bucket extends DurableObject<BucketEnv> {
  private level = CAPACITY;
  private updatedAt = Date.now();

  constructor(ctx: DurableObjectState, env: BucketEnv) {
    super(ctx, env);
    const sql = ctx.storage.sql;
    sql.exec("CREATE TABLE IF NOT EXISTS bucket (id INTEGER PRIMARY KEY CHECK (id = 1), level REAL NOT NULL, updated_at INTEGER NOT NULL)");
    sql.exec("INSERT INTO bucket (id, level, updated_at) VALUES (1, ?, ?) ON CONFLICT (id) DO NOTHING", CAPACITY, this.updatedAt);
    const row = sql.exec<{ level: number; updated_at: number }>("SELECT level, updated_at FROM bucket WHERE id = 1").one();
    this.level = row.level;
    this.updatedAt = row.updated_at;
  }

  take(amount: number): Take {
    const now = Date.now();
    const elapsedSec = Math.max(0, now - this.updatedAt) / 1000;
    const level = Math.min(CAPACITY, this.level + elapsedSec * REFILL_PER_SEC);
    const ok = amount <= level;
    this.level = ok ? level - amount : level;
    this.updatedAt = now;
    this.ctx.storage.sql.exec("UPDATE bucket SET level = ?, updated_at = ? WHERE id = 1", this.level, now);
    return { ok, remaining: this.level };
  }
}

export default {
  async fetch(request: Request, env: BucketEnv): Promise<Response> {
    if (request.method !== "POST") return new Response("ok");
    const body = await request.json<{ pool?: unknown; amount?: unknown }>();
    const pool = typeof body.pool === "string" ? body.pool : "bench-hot";
    const amount = typeof body.amount === "number" ? body.amount : 1;
    const stub = env.BUCKET.get(env.BUCKET.idFromName(pool));
    const started = Date.now();
    const r = await stub.take(amount);
    const status = r.ok ? 200 : 429;
    if (env.LOG_EACH_REQUEST === "1") {
      console.log(JSON.stringify({ level: "info", msg: "request", time: Date.now(), trace_id: crypto.randomUUID(), method: request.method, path: new URL(request.url).pathname, status, duration_ms: Date.now() - started }));
    }
    return Response.json(r, { status });
  },
} satisfies ExportedHandler<BucketEnv>;
