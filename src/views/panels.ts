import { html } from "hono/html";
import { ALERT_SEVERITIES } from "../domain/alerts";
import { describeFailure } from "../domain/display";
import type { Alert } from "../storage/alerts";
import type { DashboardState, Panel } from "../services/dashboard";
import { sparkline } from "./charts";
import { duration, int, money, percent, when } from "./figures";
import { trendsSection } from "./trends";

/**
 * The dashboard's panels: what the page shows below its header and what it fetches to refresh itself.
 * Every value goes through hono's `html` template, which escapes what it interpolates, so ids, names,
 * messages and errors chosen by clients or workers cannot become markup.
 */

type Html = ReturnType<typeof html>;

/** How often the page fetches fresh panels. */
export const REFRESH_MS = 5000;

function section<T>(id: string, title: string, panel: Panel<T>, render: (value: T) => Html): Html {
  return html`<section id="${id}"><h2>${title}</h2>${panel.ok ? render(panel.value) : html`<p class="error">Could not read: ${panel.error}</p>`}</section>`;
}

/** A table that scrolls sideways inside its panel instead of widening the page. */
const scroll = (table: Html, tall = false) => html`<div class="scroll${tall ? " tall" : ""}">${table}</div>`;

/** Whether any open alert is critical: then the alerts panel comes first. */
export function hasCritical(s: DashboardState): boolean {
  if (s.alert_counts.ok) return s.alert_counts.value.critical > 0;
  return s.alerts.ok && s.alerts.value.some((a) => a.severity === "critical");
}

/** The header's line: open alerts by severity (each a link to the alerts panel) and the scheduler's state. */
export function summary(s: DashboardState): Html {
  const counts = s.alert_counts;
  return html`<div id="summary" class="summary">
${counts.ok
    ? ALERT_SEVERITIES.slice().reverse().map((sev) => html`<a href="#alerts" class="count sev-${sev}${counts.value[sev] > 0 ? " hot" : ""}" data-severity="${sev}" data-count="${counts.value[sev]}"><b>${int(counts.value[sev])}</b> ${sev}</a>`)
    : html`<span class="error">alerts unreadable</span>`}
${s.scheduler.ok
    ? html`<a href="#scheduler" class="sched state-${s.scheduler.value.running ? "running" : "stopped"}">scheduler ${s.scheduler.value.running ? "running" : "stopped"}</a>`
    : html`<span class="error">scheduler unreadable</span>`}
</div>`;
}

function alertItem(a: Alert, now: number): Html {
  return html`<li data-alert-id="${a.id}">
  <span class="sev sev-${a.severity}">${a.severity}</span>
  <div><strong>${a.kind}</strong> · ${a.subject}<br>${a.message}<br><small>raised ${when(a.raised_at, now)}${a.count > 1 ? ` · ${a.count} times` : ""}</small></div>
  <button type="button" data-action="ack" data-alert-id="${a.id}">Ack</button>
</li>`;
}

/** Critical and warning alerts in full; info alerts (mostly noise) folded away, counted. */
function alertsSection(s: DashboardState): Html {
  return section("alerts", "Open alerts", s.alerts, (alerts) => {
    if (alerts.length === 0) return html`<p class="muted">No open alerts.</p>`;
    const urgent = alerts.filter((a) => a.severity !== "info");
    const info = alerts.filter((a) => a.severity === "info");
    return html`${urgent.length ? html`<ul class="alerts">${urgent.map((a) => alertItem(a, s.at))}</ul>` : ""}
${info.length ? html`<details id="info-alerts"><summary>${info.length} info alert${info.length > 1 ? "s" : ""}</summary><ul class="alerts">${info.map((a) => alertItem(a, s.at))}</ul></details>` : ""}`;
  });
}

function schedulerSection(s: DashboardState): Html {
  return section("scheduler", "Scheduler", s.scheduler, (v) => html`
<p>State: <strong class="state-${v.running ? "running" : "stopped"}" data-running="${String(v.running)}">${v.running ? "running" : "stopped"}</strong>
 · queued ${int(v.queued)} · in flight ${int(v.in_flight)} of ${int(v.max_in_flight)} · dispatched ${int(v.dispatched_total)} · last pass ${when(v.last_pass_at, s.at)}</p>
<p>${v.running
    ? html`<button type="button" data-action="stop">Stop scheduler</button>`
    : html`<button type="button" data-action="start">Start scheduler</button>`}</p>`);
}

function poolsSection(s: DashboardState): Html {
  const trend = new Map((s.trends.ok ? s.trends.value.pools : []).map((p) => [p.pool, p]));
  const axes = { t0: s.at - 3_600_000, t1: s.at, max: 1 };
  return section("pools", "Pools, most used first", s.pools, (pools) => pools.length === 0 ? html`<p class="muted">No pools.</p>` : scroll(html`
<table><thead><tr><th>Pool</th><th>Level</th><th>Last hour</th><th class="num">Utilization</th><th class="num">Reserved</th><th>Status</th></tr></thead><tbody>
${pools.map((p) => html`<tr data-pool="${p.id}">
  <td>${p.id}<br><small>${p.name}</small></td>
  <td><meter min="0" max="${p.capacity}" value="${p.level}" low="${p.capacity * 0.1}" high="${p.capacity * 0.5}" optimum="${p.capacity}" title="${int(p.level)} of ${int(p.capacity)} ${p.unit}"></meter>
      <br><small>${int(p.level)} / ${int(p.capacity)} ${p.unit}</small></td>
  <td>${sparkline(p.id, (trend.get(p.id)?.samples ?? []).map((x) => ({ t: x.at, v: x.utilization })), axes, `${p.id}: utilization over the last hour`)}</td>
  <td class="num">${percent(p.utilization)}</td>
  <td class="num">${int(p.reserved)}</td>
  <td>${p.status}</td>
</tr>`)}
</tbody></table>`, true));
}

function queuesSection(s: DashboardState): Html {
  return section("queues", "Queues", s.queues, (queues) => scroll(html`
<table><thead><tr><th>Queue</th><th class="num">Depth</th><th class="num">Ready</th><th class="num">Oldest wait</th><th class="num">p95 wait</th><th class="num">Dispatched/min</th></tr></thead><tbody>
${queues.map((q) => html`<tr data-queue="${q.queue}">
  <td>${q.queue}</td><td class="num depth">${int(q.depth)}</td><td class="num">${int(q.ready)}</td>
  <td class="num">${duration(q.oldest_wait_ms)}</td><td class="num">${duration(q.wait_p95_ms)}</td><td class="num">${int(q.dispatch_rate_per_s * 60)}</td>
</tr>`)}
</tbody></table>`));
}

function budgetsSection(s: DashboardState): Html {
  return section("budgets", "Budgets, closest to the limit first", s.budgets, (b) => b.rows.length === 0 ? html`<p class="muted">No client has a budget.</p>` : html`
<p class="muted"><small>${int(b.rows.length)} of ${int(b.clients_with_budget)} clients with a budget in ${b.month}${b.clients_without_limit ? ` (${int(b.clients_without_limit)} without a limit)` : ""}; spend from the usage ledger; projection: this month's rate to month end; resets ${when(b.resets_at, s.at)}.</small></p>
${scroll(html`<table><thead><tr><th>Client</th><th>Used</th><th class="num">Spent</th><th class="num">In flight</th><th class="num">Remaining</th><th class="num">Month-end projection</th></tr></thead><tbody>
${b.rows.map((r) => html`<tr data-client="${r.client_id}">
  <td>${r.client_id}</td>
  <td class="used" data-permille="${r.used_permille ?? ""}"><meter min="0" max="${Math.max(1, r.budget_nano)}" value="${r.spent_nano}" low="${r.budget_nano * 0.8}" high="${r.budget_nano * 0.95}" optimum="0"></meter>
    <br><small>${r.used_permille === null ? (r.spent_nano > 0 ? "over" : "-") : `${(r.used_permille / 10).toFixed(1)}%`} of ${money(r.budget_nano)}</small></td>
  <td class="num">${money(r.spent_nano)}</td>
  <td class="num">${money(r.in_flight_nano)}</td>
  <td class="num">${money(r.remaining_nano)}</td>
  <td class="num projection${r.projected_overrun ? " over" : ""}" data-overrun="${String(r.projected_overrun)}">${money(r.projected_nano)}${r.projected_overrun ? html`<br><span class="badge">over budget</span>` : ""}</td>
</tr>`)}
</tbody></table>`)}`);
}

function failuresSection(s: DashboardState): Html {
  return section("failures", "Recent failures", s.failures, (failures) => failures.length === 0 ? html`<p class="muted">No failed requests.</p>` : scroll(html`
<table><thead><tr><th>Finished</th><th>Request</th><th>Client</th><th>Template</th><th class="num">Attempts</th><th>Error</th></tr></thead><tbody>
${failures.map((f) => {
    const failure = describeFailure(f.error);
    return html`<tr data-request="${f.id}">
  <td>${when(f.finished_at, s.at)}</td><td class="id"><small>${f.id}</small></td><td>${f.client_id}</td><td>${f.template}</td>
  <td class="num">${f.attempts}</td><td class="failure" title="${f.error ?? ""}"><code>${failure.code}</code> ${failure.message}</td>
</tr>`;
  })}
</tbody></table>`));
}

function scalingSection(s: DashboardState): Html {
  return section("scaling", "Scaling events", s.scaling, (events) => events.length === 0 ? html`<p class="muted">No scaling events.</p>` : scroll(html`
<table><thead><tr><th>When</th><th>Pool</th><th class="num">From</th><th class="num">To</th><th>Why</th></tr></thead><tbody>
${events.map((e) => html`<tr><td>${when(e.at, s.at)}</td><td>${e.pool}</td><td class="num">${int(e.from_capacity)}</td><td class="num">${int(e.to_capacity)}</td><td>${e.reason}</td></tr>`)}
</tbody></table>`));
}

const REPORTS = html`<section id="reports"><h2>Reports (CSV)</h2><ul>
  <li><a href="/admin/reports/cost?group_by=client&amp;period=day&amp;format=csv">Cost by client, per day, this month</a></li>
  <li><a href="/admin/reports/cost?group_by=template&amp;period=week&amp;format=csv">Cost by template, per week, this month</a></li>
  <li><a href="/admin/reports/usage?step=day&amp;format=csv">Usage by pool and tier, per day, this month</a></li>
</ul></section>`;

/** The panels, in triage order: the alerts first when any is critical, else after the scheduler. */
export function panelsBody(s: DashboardState): Html {
  const critical = hasCritical(s);
  return html`<p class="meta">Updated ${when(s.at, s.at)} · refreshes every ${REFRESH_MS / 1000} s</p>
${critical ? alertsSection(s) : ""}
${schedulerSection(s)}
${critical ? "" : alertsSection(s)}
${trendsSection(s)}
${poolsSection(s)}
${queuesSection(s)}
${budgetsSection(s)}
${failuresSection(s)}
${scalingSection(s)}
${REPORTS}`;
}

/** What GET /admin/dashboard/panels answers: the header's summary line, then the panels; the page's script puts each in its place. */
export function dashboardPanels(s: DashboardState): Html {
  return html`${summary(s)}${panelsBody(s)}`;
}
