import { applyD1Migrations } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterAll } from "vitest";

// Each test file gets its own storage: build its D1 from the migrations, as a deployment is, then add
// the demo clients and keys of seed.sql.
await applyD1Migrations(env.DB, JSON.parse(env.TEST_MIGRATIONS));
await env.DB.batch((JSON.parse(env.TEST_SEED) as string[]).map((sql) => env.DB.prepare(sql)));

// Work a file's tests leave running (a settlement, an alarm's pass, an outbox flush) may still log
// while vitest closes the file's environment: the line would go over a closed channel, and vitest
// fails the whole run on it ("Closing rpc while onUserConsoleLog was pending"). Nothing reads the
// service's log lines after a file's last test; every line goes through console.log (src/log.ts).
// Registered first, this hook runs after the file's own afterAll hooks.
afterAll(() => {
  console.log = () => {};
});
