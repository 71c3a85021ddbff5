import { html } from "hono/html";
import { niceCeil, type Axes } from "../domain/chart";
import { formatCents } from "../domain/display";
import type { DashboardState, PoolPanel, Trends } from "../services/dashboard";
import { lineChart, type Series } from "./charts";
import { int, money, percent } from "./figures";

/** The "Last hour" panel: pools, queues and spend as small charts (views/charts.ts draws them). */

type Html = ReturnType<typeof html>;

/** The pools charted: the most used ones (the pools table has every pool's own sparkline). */
export const TREND_POOLS = 6;
const HOUR_MS = 3_600_000;
const NANO_PER_CENT = 10_000_000;

const whole = (v: number) => Number.isInteger(v);

function poolSeries(t: Trends, live: PoolPanel[] | null): Series[] {
  const byId = new Map(t.pools.map((p) => [p.pool, p]));
  const lastUse = (id: string) => byId.get(id)?.samples.at(-1)?.utilization ?? 0;
  const order = live ? live.map((p) => p.id).filter((id) => byId.has(id)) : [...byId.keys()].sort((a, b) => lastUse(b) - lastUse(a));
  const now = new Map((live ?? []).map((p) => [p.id, p]));
  return order.slice(0, TREND_POOLS).map((id) => {
    const p = now.get(id);
    const last = byId.get(id)!.samples.at(-1)!;
    return {
      id, label: id,
      points: byId.get(id)!.samples.map((s) => ({ t: s.at, v: s.utilization })),
      current: p ? `${percent(p.utilization)} used · ${int(p.level)}/${int(p.capacity)} ${p.unit}` : `${percent(last.utilization)} used`,
    };
  });
}

export function trendsSection(s: DashboardState): Html {
  if (!s.trends.ok) return html`<section id="trends" class="wide"><h2>Last hour</h2><p class="error">Could not read: ${s.trends.error}</p></section>`;
  const t = s.trends.value;
  const axes = (max: number): Axes => ({ t0: t.from, t1: t.to, max });
  const liveQueues = new Map((s.queues.ok ? s.queues.value : []).map((q) => [q.queue, q]));

  const maxDepth = Math.max(0, ...t.queues.flatMap((q) => q.samples.map((x) => x.depth)));
  const maxDispatched = Math.max(0, ...t.queues.flatMap((q) => q.samples.map((x) => x.dispatched)));
  const rate = (nano: number) => nano * (HOUR_MS / t.spend.step_ms);
  const maxRateCents = Math.ceil(Math.max(0, ...t.spend.steps.map((x) => rate(x.cost_nano))) / NANO_PER_CENT);

  return html`<section id="trends" class="wide"><h2>Last hour</h2><div class="charts">
${lineChart({
    id: "trend-pools", title: "Pool utilization", yTitle: "% of capacity in use", axes: axes(1),
    yLabel: (v) => `${Math.round(v * 100)}%`, series: poolSeries(t, s.pools.ok ? s.pools.value : null),
  })}
${lineChart({
    id: "trend-queue-depth", title: "Queue depth", yTitle: "requests queued", axes: axes(niceCeil(maxDepth)),
    yLabel: int, yTick: whole,
    series: t.queues.map((q) => ({
      id: q.queue, label: q.queue, points: q.samples.map((x) => ({ t: x.at, v: x.depth })),
      current: liveQueues.has(q.queue) ? `${int(liveQueues.get(q.queue)!.depth)} now` : `${int(q.samples.at(-1)?.depth ?? 0)}`,
    })),
  })}
${lineChart({
    id: "trend-dispatch", title: "Dispatch rate", yTitle: "dispatched per minute", axes: axes(niceCeil(maxDispatched)),
    yLabel: int, yTick: whole,
    series: t.queues.map((q) => ({
      id: q.queue, label: q.queue, points: q.samples.map((x) => ({ t: x.at, v: x.dispatched })),
      current: liveQueues.has(q.queue) ? `${int(liveQueues.get(q.queue)!.dispatch_rate_per_s * 60)}/min now` : `${int(q.samples.at(-1)?.dispatched ?? 0)}/min`,
    })),
  })}
${lineChart({
    id: "trend-spend", title: `Spend per hour (${t.spend.step_ms / 60_000}-minute steps)`, yTitle: "$ per hour", axes: axes(niceCeil(maxRateCents) * NANO_PER_CENT),
    yLabel: formatCents, yTick: (v) => v % NANO_PER_CENT === 0,
    series: [{
      id: "spend", label: "last 60 min", points: t.spend.steps.map((x) => ({ t: x.from + t.spend.step_ms, v: rate(x.cost_nano) })),
      current: formatCents(t.spend.total_nano), currentHtml: money(t.spend.total_nano),
    }],
  })}
</div></section>`;
}
