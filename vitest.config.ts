import { readFileSync } from "node:fs";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-pool-workers";
import { unstable_splitSqlQuery } from "wrangler";
import { defineConfig } from "vitest/config";

/** Each test file's fresh D1 gets the migrations, then the demo clients and keys of seed.sql (test/support/setup.ts). */
const migrations = await readD1Migrations(new URL("./migrations", import.meta.url).pathname);
const sqlFile = (file: string) => unstable_splitSqlQuery(readFileSync(new URL(file, import.meta.url), "utf8"));

/** The pool names the worker under test after the project: "vitest-pool-workers-runner-<name>". */
const PROJECT = "resource-manager";
/** Files that also run with 4 scheduler shards (issue 20), and the file that runs only there. */
const SHARDED = ["test/objects/dispatch-order.test.ts", "test/objects/shards.test.ts"];

/** The worker under test with its bindings; `shards`: SCHEDULER_SHARDS for this project. */
const workers = (project: string, shards: string) => {
  const RUNNER = `vitest-pool-workers-runner-${project}`;
  return cloudflareTest({
      wrangler: { configPath: "./wrangler.toml" },
      miniflare: {
        bindings: {
          ADMIN_TOKEN: "test-admin-token",
          INTERNAL_TOKEN: "test-internal-token",
          METRICS_TOKEN: "test-metrics-token",
          CONFIG_TTL_MS: "5000",
          USAGE_FLUSH_DELAY_MS: "1000",
          // Tests wait for deliveries of quiet outboxes too: no stretching (src/domain/flush.ts).
          USAGE_FLUSH_MAX_MS: "1000",
          LEASE_MARGIN_MS: "1000",
          // One shard for the suite (its tests call the "scheduler" object directly); 4 in the sharded project.
          SCHEDULER_SHARDS: shards,
          TEST_MIGRATIONS: JSON.stringify(migrations),
          TEST_SEED: JSON.stringify(sqlFile("./seed.sql")),
          // schema.sql and the schema of the last version before migrations, for test/api/schema.test.ts.
          TEST_SCHEMA: JSON.stringify(sqlFile("./schema.sql")),
          TEST_LEGACY_SCHEMA: JSON.stringify(sqlFile("./test/support/fixtures/legacy-d1.sql")),
        },
        // The sample workers from examples/ stand behind the service bindings, as under `npm start`,
        // plus a KAM stand-in that binds to the RPC entrypoint.
        workers: [
          { name: "rm-content-generator", modules: true, modulesRules: [{ type: "ESModule", include: ["**/*.js"] }], scriptPath: "./examples/content-generator/index.js", compatibilityDate: "2026-04-20", bindings: { LATENCY_MS: "5", FAILURE_RATE: "0", JOB_LOG: "off" } },
          { name: "rm-notifier", modules: true, modulesRules: [{ type: "ESModule", include: ["**/*.js"] }], scriptPath: "./examples/notifier/index.js", compatibilityDate: "2026-04-20", bindings: { LATENCY_MS: "5", FAILURE_RATE: "0", JOB_LOG: "off" } },
          // The content generator in its hold-friendly mode: runMany answers at once, reports each job later.
          { name: "rm-holder", modules: true, modulesRules: [{ type: "ESModule", include: ["**/*.js"] }], scriptPath: "./examples/content-generator/index.js", compatibilityDate: "2026-04-20", bindings: { LATENCY_MS: "5", FAILURE_RATE: "0", JOB_LOG: "off", ACCEPT_MANY: "1" } },
          { name: "kam", modules: true, modulesRules: [{ type: "ESModule", include: ["**/*.js"] }], scriptPath: "./test/support/fixtures/kam-worker.js", compatibilityDate: "2026-04-20", serviceBindings: { RM: { name: RUNNER, entrypoint: "ResourceManagerRpc" } } },
          { name: "kam-caller", modules: true, modulesRules: [{ type: "ESModule", include: ["**/*.js"] }], scriptPath: "./examples/kam-caller/index.js", compatibilityDate: "2026-04-20", bindings: { MAX_WAIT_MS: "2000" }, serviceBindings: { RM: { name: RUNNER, entrypoint: "ResourceManagerRpc" } } },
          { name: "alert-sink", modules: true, modulesRules: [{ type: "ESModule", include: ["**/*.js"] }], scriptPath: "./test/support/fixtures/alert-sink.js", compatibilityDate: "2026-04-20" },
          { name: "bad-many", modules: true, modulesRules: [{ type: "ESModule", include: ["**/*.js"] }], scriptPath: "./test/support/fixtures/bad-many-worker.js", compatibilityDate: "2026-04-20" },
          { name: "trace-worker", modules: true, modulesRules: [{ type: "ESModule", include: ["**/*.js"] }], scriptPath: "./test/support/fixtures/trace-worker.js", compatibilityDate: "2026-04-20" },
        ],
        // Empty databases for test/api/schema.test.ts (migrations against schema.sql, upgrades of older D1s).
        d1Databases: ["SCHEMA_A", "SCHEMA_B"],
        serviceBindings: { KAM: "kam", KAM_CALLER: "kam-caller", ALERT_WEBHOOK: "alert-sink", BAD_MANY: "bad-many", HOLD_WORKER: "rm-holder", TRACE_WORKER: "trace-worker" },
      },
    });
};

const common = { setupFiles: ["./test/support/setup.ts"], testTimeout: 30_000 };

export default defineConfig({
  test: {
    // Request lines are noise in test output; warnings and errors still show.
    onConsoleLog: (line: string) => !line.includes('"level":"info"'),
    // A line as each file starts (scripts/vitest-progress.mjs): a hung run's log names the files it was in.
    reporters: ["default", "./scripts/vitest-progress.mjs"],
    projects: [
      { plugins: [workers(PROJECT, "1")], test: { name: PROJECT, include: ["test/{unit,api,objects}/**/*.test.ts"], exclude: ["test/objects/shards.test.ts"], ...common } },
      { plugins: [workers(`${PROJECT}-shards`, "4")], test: { name: `${PROJECT}-shards`, include: SHARDED, ...common } },
    ],
  },
});
