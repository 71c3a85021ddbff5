/**
 * Fixed-bucket histograms in the Prometheus shape: cumulative counts per upper bound (`le`), the last
 * bucket +Inf, plus the sum and the count of the observations. Pure.
 */
export interface HistogramSnapshot {
  /** Finite upper bounds, ascending; the +Inf bucket is implied. */
  bounds: readonly number[];
  /** Observations at or below each bound, then the +Inf bucket (= count): length bounds.length + 1. */
  cumulative: number[];
  sum: number;
  count: number;
}

/** The snapshot of a set of values (e.g. the waits of the requests queued now). */
export function histogramOf(values: Iterable<number>, bounds: readonly number[]): HistogramSnapshot {
  const h = new Histogram(bounds);
  for (const v of values) h.observe(v);
  return h.snapshot();
}

/** A histogram that accumulates observations (e.g. request latencies since the isolate started). */
export class Histogram {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(value: number): void {
    let i = 0;
    while (i < this.bounds.length && value > this.bounds[i]!) i += 1;
    this.counts[i]! += 1;
    this.sum += value;
    this.count += 1;
  }

  snapshot(): HistogramSnapshot {
    let running = 0;
    const cumulative = this.counts.map((n) => (running += n));
    return { bounds: this.bounds, cumulative, sum: this.sum, count: this.count };
  }
}
