import { describe, expect, it } from "vitest";
import { settings } from "../../src/settings";

const envOf = (vars: Record<string, string>) => vars as unknown as Env;

describe("settings: the environment parsed once, with its defaults", () => {
  it("gives every default when nothing is set, or a value is empty", () => {
    expect(settings(envOf({ REQUEST_LOG: "", CONFIG_TTL_MS: "" }))).toEqual({
      ENVIRONMENT: "development", CONFIG_TTL_MS: 5000, USAGE_FLUSH_DELAY_MS: 1000, USAGE_FLUSH_MAX_MS: undefined, LEASE_MARGIN_MS: 5000,
      ALERT_WEBHOOK_URL: "", REQUEST_LOG: "errors", REQUEST_LOG_SAMPLE: 100, OFF_PEAK_HOURS: undefined, DOWNGRADE_BUDGET_PERCENT: undefined,
      MAX_BODY_BYTES: 1_048_576, SCHEDULER_SHARDS: 4, SCHEDULER_MAX_QUEUED: 50_000, ENQUEUE_MONEY_LEASES: "on",
    });
  });

  it("parses given values and falls back to the default for each one that does not parse", () => {
    const s = settings(envOf({
      CONFIG_TTL_MS: "250", USAGE_FLUSH_MAX_MS: "2000", REQUEST_LOG: "all", REQUEST_LOG_SAMPLE: "0", MAX_BODY_BYTES: "4096",
      SCHEDULER_SHARDS: "1", SCHEDULER_MAX_QUEUED: "3", OFF_PEAK_HOURS: "23-5", ALERT_WEBHOOK_URL: "https://hooks.example/x", ENQUEUE_MONEY_LEASES: "off",
    }));
    expect(s).toMatchObject({
      CONFIG_TTL_MS: 250, USAGE_FLUSH_MAX_MS: 2000, REQUEST_LOG: "all", REQUEST_LOG_SAMPLE: 0, MAX_BODY_BYTES: 4096, SCHEDULER_SHARDS: 1, SCHEDULER_MAX_QUEUED: 3,
      OFF_PEAK_HOURS: "23-5", ALERT_WEBHOOK_URL: "https://hooks.example/x", ENQUEUE_MONEY_LEASES: "off",
    });
    const bad = settings(envOf({ CONFIG_TTL_MS: "soon", REQUEST_LOG: "everything", REQUEST_LOG_SAMPLE: "-1", MAX_BODY_BYTES: "1.5", SCHEDULER_SHARDS: "65", SCHEDULER_MAX_QUEUED: "0", LEASE_MARGIN_MS: "0", ENQUEUE_MONEY_LEASES: "yes" }));
    expect(bad).toMatchObject({ CONFIG_TTL_MS: 5000, REQUEST_LOG: "errors", REQUEST_LOG_SAMPLE: 100, MAX_BODY_BYTES: 1_048_576, SCHEDULER_SHARDS: 4, SCHEDULER_MAX_QUEUED: 50_000, LEASE_MARGIN_MS: 5000, ENQUEUE_MONEY_LEASES: "on" });
  });

  it("parses an env object once", () => {
    const env = envOf({ CONFIG_TTL_MS: "42" });
    expect(settings(env)).toBe(settings(env));
    expect(settings(envOf({ CONFIG_TTL_MS: "42" }))).not.toBe(settings(env));
  });
});
