import { html, raw } from "hono/html";
import { formatUsd } from "../domain/money";
import type { Panel, DashboardState } from "../services/dashboard";

/**
 * The operator's dashboard as server-rendered HTML. Every value goes through hono's `html` template,
 * which escapes what it interpolates, so ids, names, messages and errors chosen by clients or workers
 * cannot become markup. The page's one script refreshes the panels and calls the admin API.
 */

/** How often the page fetches fresh panels. */
export const REFRESH_MS = 5000;

type Html = ReturnType<typeof html>;

const STYLE = `
  :root { color-scheme: light; font: 14px/1.4 system-ui, sans-serif; }
  body { margin: 0; background: #f4f5f7; color: #1d2330; }
  header { display: flex; align-items: center; gap: 1rem; padding: .75rem 1.5rem; background: #1d2330; color: #fff; }
  header h1 { font-size: 1.1rem; margin: 0; flex: 1; }
  main { display: grid; grid-template-columns: repeat(auto-fit, minmax(36rem, 1fr)); gap: 1rem; padding: 1rem 1.5rem; }
  section { background: #fff; border-radius: 6px; padding: .75rem 1rem; box-shadow: 0 1px 2px #0002; overflow-x: auto; }
  section h2 { font-size: 1rem; margin: 0 0 .5rem; }
  .meta { grid-column: 1 / -1; margin: 0; color: #555; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .25rem .4rem; border-bottom: 1px solid #e3e5e8; vertical-align: top; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  meter { width: 8rem; height: 1rem; }
  small, .muted { color: #667; }
  ul.alerts { list-style: none; margin: 0; padding: 0; }
  ul.alerts li { display: flex; gap: .75rem; align-items: baseline; padding: .4rem 0; border-bottom: 1px solid #e3e5e8; }
  ul.alerts li div { flex: 1; }
  .sev { font-weight: 600; text-transform: uppercase; font-size: .75rem; }
  .sev-critical { color: #b00020; } .sev-warning { color: #9a6700; } .sev-info { color: #0b5cad; }
  .state-running { color: #1a7f37; } .state-stopped { color: #b00020; }
  .error { color: #b00020; }
  button { font: inherit; padding: .2rem .7rem; cursor: pointer; }
  #status { color: #ffd479; }
  form.login { max-width: 22rem; margin: 4rem auto; background: #fff; padding: 1.5rem; border-radius: 6px; box-shadow: 0 1px 2px #0002; display: grid; gap: .75rem; }
  form.login input { font: inherit; padding: .35rem; }
`;

/** The page's script (constant text, inserted unescaped): refresh the panels every REFRESH_MS without reloading, and send the buttons' calls to the admin API. */
const SCRIPT = `
(() => {
  const panels = document.getElementById("panels");
  const status = document.getElementById("status");
  const headers = { "X-Requested-With": "rm-dashboard" };
  let generation = 0;
  async function refresh() {
    const mine = ++generation;
    try {
      const res = await fetch("/admin/dashboard/panels", { headers, credentials: "same-origin", cache: "no-store" });
      if (res.status === 401) { location.reload(); return; }
      if (!res.ok) throw new Error("the server answered " + res.status);
      const text = await res.text();
      if (mine !== generation) return;
      panels.innerHTML = text;
      status.textContent = "";
    } catch (err) {
      if (mine === generation) status.textContent = "Refresh failed (" + err.message + "); retrying";
    }
  }
  const actions = {
    ack: (b) => "/admin/alerts/" + encodeURIComponent(b.dataset.alertId) + "/ack",
    start: () => "/admin/scheduler/start",
    stop: () => "/admin/scheduler/stop",
    logout: () => "/admin/dashboard/logout",
  };
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button || !Object.hasOwn(actions, button.dataset.action)) return;
    button.disabled = true;
    try {
      const res = await fetch(actions[button.dataset.action](button), { method: "POST", headers, credentials: "same-origin" });
      if (button.dataset.action === "logout") { location.reload(); return; }
      if (!res.ok) {
        const body = await res.json().catch(() => null);
        status.textContent = (body && body.error ? body.error.message : "the server answered " + res.status);
      }
    } catch (err) {
      status.textContent = "Call failed: " + err.message;
    }
    await refresh();
  });
  setInterval(refresh, ${REFRESH_MS});
})();
`;

/** Content-Security-Policy for these pages: only this page's own script and style, calls to this origin only. */
export function contentSecurityPolicy(nonce: string): string {
  return [
    "default-src 'none'", `script-src 'nonce-${nonce}'`, `style-src 'nonce-${nonce}'`, "connect-src 'self'",
    "img-src data:", "form-action 'self'", "frame-ancestors 'none'", "base-uri 'none'",
  ].join("; ");
}

function layout(title: string, nonce: string, body: Html, script: boolean): Html {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>${title}</title>
<style nonce="${nonce}">${raw(STYLE)}</style>
</head>
<body>
${body}
${script ? html`<script nonce="${nonce}">${raw(SCRIPT)}</script>` : ""}
</body>
</html>`;
}

export function loginPage(nonce: string, error: string | null): Html {
  return layout("Resource Manager: operator login", nonce, html`
<form class="login" method="post" action="/admin/dashboard/session">
  <h1>Resource Manager</h1>
  <label for="token">Admin token</label>
  <input id="token" type="password" name="token" required autocomplete="current-password" autofocus>
  <button type="submit">Log in</button>
  ${error ? html`<p class="error" role="alert">${error}</p>` : ""}
  <p class="muted"><small>Starts a 12-hour session in this browser (an HttpOnly cookie). The token itself is not stored.</small></p>
</form>`, false);
}

export function dashboardPage(state: DashboardState, nonce: string): Html {
  return layout("Resource Manager: operator dashboard", nonce, html`
<header>
  <h1>Resource Manager · operator dashboard</h1>
  <span id="status" role="status" aria-live="polite"></span>
  <button type="button" data-action="logout">Log out</button>
</header>
<main id="panels">${dashboardPanels(state)}</main>`, true);
}

const int = (n: number) => Math.round(n).toLocaleString("en-US");
const percent = (x: number) => `${(x * 100).toFixed(1)}%`;

function time(ms: number | null): Html | string {
  if (ms === null) return "never";
  const iso = new Date(ms).toISOString();
  return html`<time datetime="${iso}">${iso.slice(0, 19).replace("T", " ")} UTC</time>`;
}

/** A wait or age for humans: "45 s", "3 min 20 s", "2 h 5 min". */
export function duration(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function section<T>(id: string, title: string, panel: Panel<T>, render: (value: T) => Html): Html {
  return html`<section id="${id}"><h2>${title}</h2>${panel.ok ? render(panel.value) : html`<p class="error">Could not read: ${panel.error}</p>`}</section>`;
}

/** The panels alone: the page's body, and what the page fetches to refresh itself. */
export function dashboardPanels(s: DashboardState): Html {
  return html`<p class="meta">Updated ${time(s.at)} · refreshes every ${REFRESH_MS / 1000} s</p>
${section("scheduler", "Scheduler", s.scheduler, (v) => html`
<p>State: <strong class="state-${v.running ? "running" : "stopped"}" data-running="${String(v.running)}">${v.running ? "running" : "stopped"}</strong>
 · queued ${int(v.queued)} · in flight ${int(v.in_flight)} of ${int(v.max_in_flight)} · dispatched ${int(v.dispatched_total)} · last pass ${time(v.last_pass_at)}</p>
<p>${v.running
    ? html`<button type="button" data-action="stop">Stop scheduler</button>`
    : html`<button type="button" data-action="start">Start scheduler</button>`}</p>`)}
${section("pools", "Pools", s.pools, (pools) => pools.length === 0 ? html`<p class="muted">No pools.</p>` : html`
<table><thead><tr><th>Pool</th><th>Level</th><th class="num">Utilization</th><th class="num">Reserved</th><th>Status</th></tr></thead><tbody>
${pools.map((p) => html`<tr data-pool="${p.id}">
  <td>${p.id}<br><small>${p.name}</small></td>
  <td><meter min="0" max="${p.capacity}" value="${p.level}" low="${p.capacity * 0.1}" high="${p.capacity * 0.5}" optimum="${p.capacity}" title="${int(p.level)} of ${int(p.capacity)} ${p.unit}"></meter>
      <br><small>${int(p.level)} / ${int(p.capacity)} ${p.unit}</small></td>
  <td class="num">${percent(p.utilization)}</td>
  <td class="num">${int(p.reserved)}</td>
  <td>${p.status}</td>
</tr>`)}
</tbody></table>`)}
${section("queues", "Queues", s.queues, (queues) => html`
<table><thead><tr><th>Queue</th><th class="num">Depth</th><th class="num">Ready</th><th class="num">Oldest wait</th><th class="num">p95 wait</th><th class="num">Dispatched/s</th></tr></thead><tbody>
${queues.map((q) => html`<tr data-queue="${q.queue}">
  <td>${q.queue}</td><td class="num depth">${int(q.depth)}</td><td class="num">${int(q.ready)}</td>
  <td class="num">${duration(q.oldest_wait_ms)}</td><td class="num">${duration(q.wait_p95_ms)}</td><td class="num">${q.dispatch_rate_per_s}</td>
</tr>`)}
</tbody></table>`)}
${section("budgets", "Budgets of the top spenders this month", s.budgets, (budgets) => budgets.length === 0 ? html`<p class="muted">No spending this month.</p>` : html`
<table><thead><tr><th>Client</th><th>Spent of budget</th><th class="num">Spent</th><th class="num">In flight</th><th class="num">Remaining</th></tr></thead><tbody>
${budgets.map((b) => html`<tr data-client="${b.client_id}">
  <td>${b.client_id}</td>
  <td>${b.budget_nano === null
    ? html`<span class="muted">no limit</span>`
    : html`<meter min="0" max="${Math.max(1, b.budget_nano)}" value="${b.spent_nano}" low="${b.budget_nano * 0.8}" high="${b.budget_nano * 0.95}" optimum="0"></meter>
      <br><small>${b.budget_nano > 0 ? percent(b.spent_nano / b.budget_nano) : "-"} of ${formatUsd(b.budget_nano)}</small>`}</td>
  <td class="num">${formatUsd(b.spent_nano)}</td>
  <td class="num">${formatUsd(b.in_flight_nano)}</td>
  <td class="num">${b.remaining_nano === null ? "-" : formatUsd(b.remaining_nano)}</td>
</tr>`)}
</tbody></table>`)}
${section("alerts", "Open alerts", s.alerts, (alerts) => alerts.length === 0 ? html`<p class="muted">No open alerts.</p>` : html`
<ul class="alerts">
${alerts.map((a) => html`<li data-alert-id="${a.id}">
  <span class="sev sev-${a.severity}">${a.severity}</span>
  <div><strong>${a.kind}</strong> · ${a.subject}<br>${a.message}<br><small>raised ${time(a.raised_at)}${a.count > 1 ? ` · ${a.count} times` : ""}</small></div>
  <button type="button" data-action="ack" data-alert-id="${a.id}">Ack</button>
</li>`)}
</ul>`)}
${section("failures", "Recent failures", s.failures, (failures) => failures.length === 0 ? html`<p class="muted">No failed requests.</p>` : html`
<table><thead><tr><th>Finished</th><th>Request</th><th>Client</th><th>Template</th><th class="num">Attempts</th><th>Error</th></tr></thead><tbody>
${failures.map((f) => html`<tr data-request="${f.id}">
  <td>${time(f.finished_at)}</td><td><small>${f.id}</small></td><td>${f.client_id}</td><td>${f.template}</td>
  <td class="num">${f.attempts}</td><td>${f.error ?? ""}</td>
</tr>`)}
</tbody></table>`)}
${section("scaling", "Scaling events", s.scaling, (events) => events.length === 0 ? html`<p class="muted">No scaling events.</p>` : html`
<table><thead><tr><th>When</th><th>Pool</th><th class="num">From</th><th class="num">To</th><th>Why</th></tr></thead><tbody>
${events.map((e) => html`<tr><td>${time(e.at)}</td><td>${e.pool}</td><td class="num">${int(e.from_capacity)}</td><td class="num">${int(e.to_capacity)}</td><td>${e.reason}</td></tr>`)}
</tbody></table>`)}
<section id="reports"><h2>Reports (CSV)</h2><ul>
  <li><a href="/admin/reports/cost?group_by=client&amp;period=day&amp;format=csv">Cost by client, per day, this month</a></li>
  <li><a href="/admin/reports/cost?group_by=template&amp;period=week&amp;format=csv">Cost by template, per week, this month</a></li>
  <li><a href="/admin/reports/usage?step=day&amp;format=csv">Usage by pool and tier, per day, this month</a></li>
</ul></section>`;
}
