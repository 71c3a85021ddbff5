declare namespace Cloudflare {
  interface Env {
    /** JSON of D1 migrations built from schema.sql and seed.sql by vitest.config.ts. */
    TEST_SQL: string;
  }
}
declare namespace Cloudflare {
  interface Env {
    /** The KAM stand-in auxiliary worker (test/fixtures/kam-worker.js). */
    KAM: Fetcher;
  }
}
