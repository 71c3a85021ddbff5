import { readFileSync } from "node:fs";
import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

/** schema.sql and seed.sql split into statements, applied to each test file's fresh D1 by test/setup.ts. */
function statements(file: string): string[] {
  const text = readFileSync(new URL(file, import.meta.url), "utf8")
    .split("\n")
    .filter((line) => !line.trim().startsWith("--"))
    .join("\n");
  return text.split(/;\s*$/m).map((s) => s.trim()).filter(Boolean);
}

export default defineConfig({
  plugins: [
    cloudflareTest({
      wrangler: { configPath: "./wrangler.toml" },
      miniflare: {
        bindings: {
          ADMIN_TOKEN: "test-admin-token",
          INTERNAL_TOKEN: "test-internal-token",
          CONFIG_TTL_MS: "5000",
          USAGE_FLUSH_DELAY_MS: "1000",
          TEST_SQL: JSON.stringify([
            { name: "schema.sql", queries: statements("./schema.sql") },
            { name: "seed.sql", queries: statements("./seed.sql") },
          ]),
        },
      },
    }),
  ],
  test: {
    include: ["test/**/*.test.ts"],
    setupFiles: ["./test/setup.ts"],
    testTimeout: 30_000,
    // Request lines are noise in test output; warnings and errors still show.
    onConsoleLog: (line) => !line.includes('"level":"info"'),
  },
});
