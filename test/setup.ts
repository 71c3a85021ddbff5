import { applyD1Migrations } from "cloudflare:test";
import { env } from "cloudflare:workers";

// Each test file gets its own storage; give its D1 the real schema and demo data.
await applyD1Migrations(env.DB, JSON.parse(env.TEST_SQL));
