import { Histogram, type HistogramSnapshot } from "../domain/histogram";
import { LATENCY_BUCKETS_S } from "./latency";

/**
 * RPC and MCP tool calls, counted in this isolate since it started (as src/services/latency.ts counts
 * HTTP). Labels are bounded: `via` is rpc or mcp, `method` a method of the entrypoint or a tool name
 * (only known ones are counted), `outcome` ok or an error code of src/errors.ts.
 */
type Via = "rpc" | "mcp";

const durations = new Map<string, { labels: { via: Via; method: string }; histogram: Histogram }>();
const outcomes = new Map<string, { labels: { via: Via; method: string; outcome: string }; count: number }>();

export function recordCall(via: Via, method: string, outcome: string, durationMs: number): void {
  const key = `${via} ${method}`;
  let d = durations.get(key);
  if (!d) durations.set(key, (d = { labels: { via, method }, histogram: new Histogram(LATENCY_BUCKETS_S) }));
  d.histogram.observe(durationMs / 1000);
  const okey = `${key} ${outcome}`;
  const o = outcomes.get(okey);
  if (o) o.count += 1;
  else outcomes.set(okey, { labels: { via, method, outcome }, count: 1 });
}

export function callDurations(): Array<{ labels: { via: Via; method: string }; value: HistogramSnapshot }> {
  return [...durations.values()].map(({ labels, histogram }) => ({ labels, value: histogram.snapshot() }));
}

export function callOutcomes(): Array<{ labels: { via: Via; method: string; outcome: string }; value: number }> {
  return [...outcomes.values()].map(({ labels, count }) => ({ labels, value: count }));
}
