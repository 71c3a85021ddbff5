// SharedTexts (src/objects/scheduler/shared-texts.ts): live requests with the same plan share one parsed
// plan object, and the tables are bounded. (That equal texts share one string is not observable from
// JavaScript; bench/experiments/queued-heap.mjs measures it: the heap with 10,000 requests queued.)
import { describe, expect, it } from "vitest";
import type { Row } from "../../src/objects/scheduler/rows";
import { SharedTexts } from "../../src/objects/scheduler/shared-texts";
import type { StoredPlan } from "../../src/objects/scheduler/types";

const planOf = (template: string, cacheKey: string | null = null): StoredPlan => ({
  requested_template: template, downgraded_from: null, downgrade_reason: null, strategies: [], cache_key: cacheKey, cache_ttl_ms: 0,
  batchable: false, batch_size: 1, compress_threshold_bytes: null, bytes_saved: 0, cached: false, batched: null,
});

describe("SharedTexts", () => {
  it("gives every request of one plan text the same plan object: the first one given, or the text parsed", () => {
    const shared = new SharedTexts();
    const first = planOf("summarize");
    const text = JSON.stringify(first);
    expect(shared.plan(text, first)).toBe(first);
    // A later request's own copy of the same plan is not kept: it gets the first.
    expect(shared.plan(JSON.stringify(planOf("summarize")), planOf("summarize"))).toBe(first);
    // Read back from the table (no object given): the same.
    expect(shared.plan(text)).toBe(first);
    // Another text: its own object, parsed from the text when none is given.
    const other = shared.plan(JSON.stringify(planOf("translate")));
    expect(other).not.toBe(first);
    expect(other).toEqual(planOf("translate"));
    expect(shared.plan(JSON.stringify(planOf("translate")))).toBe(other);
  });

  it("texts come back equal, null stays null", () => {
    const shared = new SharedTexts();
    expect(shared.text("[{\"pool\":\"p\",\"units\":1,\"cost_nano\":1}]")).toBe("[{\"pool\":\"p\",\"units\":1,\"cost_nano\":1}]");
    expect(shared.text(["acme", "corp"].join("-"))).toBe("acme-corp");
    expect(shared.text(null)).toBeNull();
  });

  it("a row read back keeps every value: its repeated texts equal, the rest untouched", () => {
    const shared = new SharedTexts();
    const row = {
      id: "req_1", client_id: "acme", tier: "enterprise", template: "summarize", queue: "fast", status: "queued", plan: JSON.stringify(planOf("summarize")),
      estimate_detail: "[]", params: "{\"a\":1}", created_at: 1_765_000_000_000, trace_id: null,
    } as unknown as Row;
    const before = { ...row };
    expect(shared.row(row)).toBe(row);
    expect(row).toEqual(before);
  });

  it("is bounded: past 2,048 distinct plans (one cache key each) the table starts over", () => {
    const shared = new SharedTexts();
    const first = shared.plan(JSON.stringify(planOf("t", "key-0")));
    expect(shared.plan(JSON.stringify(planOf("t", "key-0")))).toBe(first);
    for (let i = 1; i < 2048; i++) shared.plan(JSON.stringify(planOf("t", `key-${i}`)));
    // 2,048 kept: the first is still shared.
    expect(shared.plan(JSON.stringify(planOf("t", "key-0")))).toBe(first);
    // One more distinct plan starts the table over: the first text now gets a new object, equal to it.
    shared.plan(JSON.stringify(planOf("t", "key-2048")));
    const again = shared.plan(JSON.stringify(planOf("t", "key-0")));
    expect(again).not.toBe(first);
    expect(again).toEqual(first);
  });
});
