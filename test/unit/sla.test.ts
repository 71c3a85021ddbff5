import { describe, expect, it } from "vitest";
import { attainment, defaultTarget, requestSla, type SlaRecord, type SlaTarget } from "../../src/domain/sla";

const T = 1_800_000_000_000;
const target: SlaTarget = { tier: "premium", queue: "fast", max_wait_ms: 1000, max_exec_ms: 5000, target_percent: 90 };
const rec = (over: Partial<SlaRecord>): SlaRecord => ({ id: "r", client_id: "c", tier: "premium", queue: "fast", status: "completed", ready_at: T, first_started_at: null, finished_at: null, ...over });

describe("a request's service level", () => {
  it("met: dispatched within the wait and finished within the execution time, both limits included", () => {
    expect(requestSla(rec({ first_started_at: T + 1000, finished_at: T + 6000 }), target, T + 9999)).toMatchObject({
      wait_ms: 1000, exec_ms: 5000, wait: "met", execution: "met", status: "met", decided_at: T + 6000,
    });
  });
  it("breached by one millisecond of waiting, decided at its dispatch", () => {
    expect(requestSla(rec({ first_started_at: T + 1001, finished_at: T + 1500 }), target, T + 9999)).toMatchObject({ wait: "breached", execution: "met", status: "breached", decided_at: T + 1001 });
  });
  it("breached by running too long, decided the moment the limit passed (even while still running)", () => {
    expect(requestSla(rec({ first_started_at: T + 100, finished_at: T + 5101 }), target, T + 9999)).toMatchObject({ exec_ms: 5001, execution: "breached", decided_at: T + 5101 });
    expect(requestSla(rec({ status: "running", first_started_at: T + 100 }), target, T + 5101)).toMatchObject({ execution: "breached", status: "breached", decided_at: T + 5101 });
    expect(requestSla(rec({ status: "running", first_started_at: T + 100 }), target, T + 5100)).toMatchObject({ execution: "pending", status: "pending", decided_at: null });
  });
  it("still queued: pending until the wait limit passes, then breached", () => {
    expect(requestSla(rec({ status: "queued" }), target, T + 1000)).toMatchObject({ wait: "pending", status: "pending", wait_ms: 1000 });
    expect(requestSla(rec({ status: "queued" }), target, T + 1002)).toMatchObject({ wait: "breached", status: "breached", decided_at: T + 1001 });
  });
  it("failed requests breach; cancelled ones before any breach are excluded", () => {
    expect(requestSla(rec({ status: "failed", first_started_at: T + 10, finished_at: T + 20 }), target, T + 99)).toMatchObject({ status: "breached", decided_at: T + 20 });
    expect(requestSla(rec({ status: "failed", finished_at: T + 300 }), target, T + 999)).toMatchObject({ status: "breached", decided_at: T + 300 });
    expect(requestSla(rec({ status: "cancelled", finished_at: T + 500 }), target, T + 999)).toMatchObject({ status: "excluded", decided_at: null });
    // cancelled only after its wait had already been breached: that breach stands
    expect(requestSla(rec({ status: "cancelled", finished_at: T + 5000 }), target, T + 9999)).toMatchObject({ status: "breached", decided_at: T + 1001 });
  });
  it("defaults scale waits by tier and set attainment targets", () => {
    expect(defaultTarget("enterprise", "fast")).toEqual({ tier: "enterprise", queue: "fast", max_wait_ms: 10_000, max_exec_ms: 60_000, target_percent: 99 });
    expect(defaultTarget("basic", "normal")).toMatchObject({ max_wait_ms: 480_000, target_percent: 90 });
  });
});

describe("attainment", () => {
  it("counts decided requests only, to two decimals", () => {
    const v = (status: "met" | "breached" | "pending" | "excluded") => ({ status });
    expect(attainment([v("met"), v("met"), v("breached"), v("pending"), v("excluded")], 90)).toEqual({
      total: 3, met: 2, breached: 1, attainment_percent: 66.67, target_percent: 90, meets_target: false,
    });
    expect(attainment([v("pending")], 90)).toMatchObject({ total: 0, attainment_percent: null, meets_target: null });
    expect(attainment(Array.from({ length: 99 }, () => v("met")).concat([v("breached")]), 99)).toMatchObject({ attainment_percent: 99, meets_target: true });
  });
});
