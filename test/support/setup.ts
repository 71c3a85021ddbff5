import { applyD1Migrations } from "cloudflare:test";
import { env } from "cloudflare:workers";

// Each test file gets its own storage: build its D1 from the migrations, as a deployment is, then add
// the demo clients and keys of seed.sql.
await applyD1Migrations(env.DB, JSON.parse(env.TEST_MIGRATIONS));
await env.DB.batch((JSON.parse(env.TEST_SEED) as string[]).map((sql) => env.DB.prepare(sql)));
