declare namespace Cloudflare {
  interface Env {
    /** JSON of D1 migrations built from schema.sql and seed.sql by vitest.config.ts. */
    TEST_SQL: string;
  }
}
