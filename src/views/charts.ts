import { html } from "hono/html";
import { FRAME, minutesAgoLabel, polylinePoints, xOf, xTicks, yOf, yTicks, type Axes, type ChartPoint, type Frame } from "../domain/chart";

/**
 * Small time-series charts as inline SVG, drawn on the server from the samples the service keeps: no
 * script, font or stylesheet from anywhere else, so the page's content policy stays self-only. Colours
 * come from the page's stylesheet (classes s0..s5): a `style` attribute would be refused by that policy.
 * Every series is one polyline with one point per sample (`data-points` says how many).
 */

type Html = ReturnType<typeof html>;

export interface Series {
  id: string;
  label: string;
  points: ChartPoint[];
  /** The current value as text, shown in the legend (as `currentHtml` when given, e.g. money with its tooltip). */
  current: string;
  currentHtml?: Html;
}

export interface LineChart {
  id: string;
  title: string;
  /** What the y axis measures, e.g. "% of capacity in use". */
  yTitle: string;
  axes: Axes;
  yLabel: (v: number) => string;
  /** Keep only these y labels (e.g. whole numbers for counts). */
  yTick?: (v: number) => boolean;
  series: Series[];
}

export const SERIES_COLOURS = 6;
const X_TICK_MS = 15 * 60_000;

export function lineChart(c: LineChart, f: Frame = FRAME): Html {
  const plotted = c.series.filter((s) => s.points.length > 0);
  const bottom = f.height - f.bottom;
  return html`<figure class="chart" id="${c.id}">
<figcaption>${c.title}</figcaption>
<svg viewBox="0 0 ${f.width} ${f.height}" role="img" aria-label="${c.title}: ${c.series.map((s) => `${s.label} ${s.current}`).join(", ")}">
${yTicks(c.axes.max).filter(c.yTick ?? (() => true)).map((v) => html`<line class="grid" x1="${f.left}" x2="${f.width - f.right}" y1="${yOf(v, c.axes, f)}" y2="${yOf(v, c.axes, f)}"></line><text class="tick" x="${f.left - 4}" y="${yOf(v, c.axes, f) + 3}" text-anchor="end">${c.yLabel(v)}</text>`)}
<line class="axis" x1="${f.left}" x2="${f.left}" y1="${f.top}" y2="${bottom}"></line>
<line class="axis" x1="${f.left}" x2="${f.width - f.right}" y1="${bottom}" y2="${bottom}"></line>
${xTicks(c.axes, X_TICK_MS).map((t) => html`<text class="tick" x="${xOf(t, c.axes, f)}" y="${bottom + 12}" text-anchor="middle">${minutesAgoLabel(t, c.axes.t1)}</text>`)}
<text class="axis-title" x="${f.left + 4}" y="${f.top + 8}">${c.yTitle}</text>
${plotted.length === 0 ? html`<text class="empty" x="${(f.left + f.width - f.right) / 2}" y="${(f.top + bottom) / 2}" text-anchor="middle">no samples in the last hour</text>` : ""}
${c.series.map((s, i) => s.points.length === 0 ? "" : html`<polyline class="line s${i % SERIES_COLOURS}" data-series="${s.id}" data-points="${s.points.length}" points="${polylinePoints(s.points, c.axes, f)}"></polyline>${lastDot(s.points, c.axes, f, i)}`)}
</svg>
<ul class="legend">${c.series.map((s, i) => html`<li data-series="${s.id}"><span class="sw s${i % SERIES_COLOURS}"></span>${s.label} <strong>${s.currentHtml ?? s.current}</strong></li>`)}</ul>
</figure>`;
}

function lastDot(points: ChartPoint[], axes: Axes, f: Frame, i: number): Html {
  const last = points.reduce((a, b) => (b.t > a.t ? b : a));
  return html`<circle class="dot s${i % SERIES_COLOURS}" cx="${xOf(last.t, axes, f)}" cy="${yOf(last.v, axes, f)}" r="2.5"></circle>`;
}

const SPARK: Frame = { width: 120, height: 28, left: 1, right: 1, top: 2, bottom: 2 };

/** A pool's utilization over the last hour in a table cell: no axes (the table row is its label). */
export function sparkline(id: string, points: ChartPoint[], axes: Axes, label: string): Html {
  if (points.length === 0) return html`<span class="muted">no samples</span>`;
  return html`<svg class="spark" viewBox="0 0 ${SPARK.width} ${SPARK.height}" preserveAspectRatio="none" role="img" aria-label="${label}"><polyline class="line s0" data-series="${id}" data-points="${points.length}" points="${polylinePoints(points, axes, SPARK)}"></polyline></svg>`;
}
