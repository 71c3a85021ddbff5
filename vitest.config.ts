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

/** The pool names the worker under test after the project: "vitest-pool-workers-runner-<name>". */
const PROJECT = "resource-manager";
const RUNNER = `vitest-pool-workers-runner-${PROJECT}`;

export default defineConfig({
  plugins: [
    cloudflareTest({
      wrangler: { configPath: "./wrangler.toml" },
      miniflare: {
        bindings: {
          ADMIN_TOKEN: "test-admin-token",
          INTERNAL_TOKEN: "test-internal-token",
          METRICS_TOKEN: "test-metrics-token",
          CONFIG_TTL_MS: "5000",
          USAGE_FLUSH_DELAY_MS: "1000",
          LEASE_MARGIN_MS: "1000",
          TEST_SQL: JSON.stringify([
            { name: "schema.sql", queries: statements("./schema.sql") },
            { name: "seed.sql", queries: statements("./seed.sql") },
          ]),
        },
        // The sample workers from examples/ stand behind the service bindings, as under `npm start`,
        // plus a KAM stand-in that binds to the RPC entrypoint.
        workers: [
          { name: "rm-content-generator", modules: true, modulesRules: [{ type: "ESModule", include: ["**/*.js"] }], scriptPath: "./examples/content-generator/index.js", compatibilityDate: "2026-04-20", bindings: { LATENCY_MS: "5", FAILURE_RATE: "0" } },
          { name: "rm-notifier", modules: true, modulesRules: [{ type: "ESModule", include: ["**/*.js"] }], scriptPath: "./examples/notifier/index.js", compatibilityDate: "2026-04-20", bindings: { LATENCY_MS: "5", FAILURE_RATE: "0" } },
          { name: "kam", modules: true, modulesRules: [{ type: "ESModule", include: ["**/*.js"] }], scriptPath: "./test/fixtures/kam-worker.js", compatibilityDate: "2026-04-20", serviceBindings: { RM: { name: RUNNER, entrypoint: "ResourceManagerRpc" } } },
          { name: "alert-sink", modules: true, modulesRules: [{ type: "ESModule", include: ["**/*.js"] }], scriptPath: "./test/fixtures/alert-sink.js", compatibilityDate: "2026-04-20" },
          { name: "bad-many", modules: true, modulesRules: [{ type: "ESModule", include: ["**/*.js"] }], scriptPath: "./test/fixtures/bad-many-worker.js", compatibilityDate: "2026-04-20" },
        ],
        serviceBindings: { KAM: "kam", ALERT_WEBHOOK: "alert-sink", BAD_MANY: "bad-many" },
      },
    }),
  ],
  test: {
    name: PROJECT,
    include: ["test/**/*.test.ts"],
    setupFiles: ["./test/setup.ts"],
    testTimeout: 30_000,
    // Request lines are noise in test output; warnings and errors still show.
    onConsoleLog: (line) => !line.includes('"level":"info"'),
  },
});
