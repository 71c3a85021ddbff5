declare namespace Cloudflare {
  interface Env {
    /** JSON of migrations/ as readD1Migrations read it (vitest.config.ts). */
    TEST_MIGRATIONS: string;
    /** JSON arrays of SQL statements: seed.sql, schema.sql, and a D1 of the last version before migrations. */
    TEST_SEED: string;
    TEST_SCHEMA: string;
    TEST_LEGACY_SCHEMA: string;
    /** Empty databases for test/schema.test.ts. */
    SCHEMA_A: D1Database;
    SCHEMA_B: D1Database;
  }
}
declare namespace Cloudflare {
  interface Env {
    /** The KAM stand-in auxiliary worker (test/support/fixtures/kam-worker.js). */
    KAM: Fetcher;
    /** examples/kam-caller/index.js, bound to the RPC entrypoint as RM. */
    KAM_CALLER: Fetcher;
  }
}
