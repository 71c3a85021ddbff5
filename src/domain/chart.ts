/**
 * Scaling for the dashboard's small time-series charts. Pure: times and values in, SVG user-space
 * coordinates out. A chart's x axis is a fixed window of time ending now; its y axis runs from 0 to a
 * "nice" maximum at or above the largest value, so the axis labels are round numbers.
 */

export interface ChartPoint {
  /** Epoch ms. */
  t: number;
  v: number;
}

/** The drawing area inside the SVG's viewBox: room on the left for y labels, below for x labels. */
export interface Frame {
  width: number;
  height: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
}

export const FRAME: Frame = { width: 360, height: 132, left: 44, right: 10, top: 10, bottom: 24 };

export interface Axes {
  /** The window of time shown: [t0, t1]. */
  t0: number;
  t1: number;
  /** The top of the y axis (its bottom is 0). */
  max: number;
}

/** The smallest 1, 2 or 5 × 10^k that is at least `value` and at least `floor` (the axis of a flat-zero series). */
export function niceCeil(value: number, floor = 1): number {
  const v = Math.max(value, floor);
  const power = 10 ** Math.floor(Math.log10(v));
  for (const step of [1, 2, 5, 10]) {
    // A hair of tolerance: floating-point error in `power` (10 ** -2 and the like) must not skip the exact step.
    if (step * power >= v * (1 - 1e-12)) return step * power;
  }
  return 10 * power;
}

/** y labels: 0, half and the top. */
export function yTicks(max: number): number[] {
  return [0, max / 2, max];
}

/** x labels every `stepMs` back from t1 (t1 itself included), oldest first. */
export function xTicks(axes: Axes, stepMs: number): number[] {
  const out: number[] = [];
  for (let t = axes.t1; t >= axes.t0; t -= stepMs) out.unshift(t);
  return out;
}

const round1 = (n: number) => Math.round(n * 10) / 10;

export function xOf(t: number, axes: Axes, f: Frame = FRAME): number {
  const span = Math.max(1, axes.t1 - axes.t0);
  const clamped = Math.min(axes.t1, Math.max(axes.t0, t));
  return round1(f.left + ((clamped - axes.t0) / span) * (f.width - f.left - f.right));
}

export function yOf(v: number, axes: Axes, f: Frame = FRAME): number {
  const clamped = Math.min(axes.max, Math.max(0, v));
  return round1(f.height - f.bottom - (clamped / (axes.max || 1)) * (f.height - f.top - f.bottom));
}

/** The `points` attribute of an SVG polyline: one "x,y" per point, in time order. */
export function polylinePoints(points: ChartPoint[], axes: Axes, f: Frame = FRAME): string {
  return [...points].sort((a, b) => a.t - b.t).map((p) => `${xOf(p.t, axes, f)},${yOf(p.v, axes, f)}`).join(" ");
}

/** "-45 min" for a tick 45 minutes before t1; "now" for t1. */
export function minutesAgoLabel(t: number, t1: number): string {
  const min = Math.round((t1 - t) / 60_000);
  return min === 0 ? "now" : `-${min} min`;
}
