import { Histogram, type HistogramSnapshot } from "../domain/histogram";

/**
 * Request latency per route, counted in this isolate since it started (module state: each isolate of
 * the worker keeps its own, and /metrics answers from whichever isolate serves the scrape). Labels are
 * bounded: the route PATTERN (never the concrete path), a known method, and the status class.
 */
export const LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

const METHODS = new Set(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]);
/** What Hono reports as the route of a request no route matched (only the catch-all middleware did). */
const CATCH_ALL = new Set(["*", "/*", ""]);

const byRoute = new Map<string, { labels: { method: string; route: string; status_class: string }; histogram: Histogram }>();

export function recordLatency(method: string, routePattern: string, status: number, durationMs: number): void {
  const labels = {
    method: METHODS.has(method) ? method : "other",
    route: CATCH_ALL.has(routePattern) ? "unmatched" : routePattern,
    status_class: `${Math.min(5, Math.max(1, Math.floor(status / 100)))}xx`,
  };
  const key = `${labels.method} ${labels.route} ${labels.status_class}`;
  let entry = byRoute.get(key);
  if (!entry) {
    entry = { labels, histogram: new Histogram(LATENCY_BUCKETS_S) };
    byRoute.set(key, entry);
  }
  entry.histogram.observe(durationMs / 1000);
}

export function latencySnapshots(): Array<{ labels: { method: string; route: string; status_class: string }; value: HistogramSnapshot }> {
  return [...byRoute.values()].map(({ labels, histogram }) => ({ labels, value: histogram.snapshot() }));
}
