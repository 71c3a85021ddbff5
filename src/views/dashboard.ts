import { html, raw } from "hono/html";
import type { DashboardState } from "../services/dashboard";
import { panelsBody, REFRESH_MS, summary } from "./panels";

export { dashboardPanels, REFRESH_MS } from "./panels";

/**
 * The operator's dashboard as server-rendered HTML: the page's frame (header, style, script) and the
 * login form; the panels are in views/panels.ts, the charts in views/charts.ts. The page's one script
 * refreshes the header's summary and the panels, and calls the admin API.
 */

type Html = ReturnType<typeof html>;

const STYLE = `
  :root { color-scheme: light; font: 14px/1.4 system-ui, sans-serif; }
  * { box-sizing: border-box; }
  body { margin: 0; background: #f4f5f7; color: #1d2330; }
  header { display: flex; flex-wrap: wrap; align-items: center; gap: .5rem 1rem; padding: .6rem 1rem; background: #1d2330; color: #fff; }
  @media (min-width: 50rem) { header { position: sticky; top: 0; z-index: 1; } section { scroll-margin-top: 4rem; } }
  header h1 { font-size: 1.05rem; margin: 0; }
  .summary { display: flex; flex-wrap: wrap; gap: .4rem; align-items: center; flex: 1; }
  .summary a { color: #fff; text-decoration: none; padding: .1rem .5rem; border-radius: 999px; border: 1px solid #fff4; font-size: .85rem; white-space: nowrap; }
  .summary a.count.hot.sev-critical { background: #d0021b; border-color: #ff8a8a; font-weight: 700; }
  .summary a.count.hot.sev-warning { background: #9a6700; border-color: #e0b44a; }
  .summary a.count.hot.sev-info { background: #0b5cad; }
  .summary a.sched.state-stopped { background: #d0021b; }
  main { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 34rem), 1fr)); gap: 1rem; padding: 1rem; }
  section { background: #fff; border-radius: 6px; padding: .75rem 1rem; box-shadow: 0 1px 2px #0002; min-width: 0; }
  section.wide, .meta { grid-column: 1 / -1; }
  section h2 { font-size: 1rem; margin: 0 0 .5rem; }
  .meta { margin: 0; color: #555; }
  .scroll { overflow-x: auto; max-width: 100%; }
  .scroll.tall { max-height: 32rem; overflow-y: auto; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .25rem .4rem; border-bottom: 1px solid #e3e5e8; vertical-align: top; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
  td.failure { min-width: 14rem; overflow-wrap: anywhere; }
  td.id { max-width: 9rem; overflow-wrap: anywhere; }
  td.failure code { background: #fdecee; color: #8a0015; padding: 0 .3rem; border-radius: 3px; }
  td.projection.over { color: #b00020; font-weight: 600; }
  .badge { display: inline-block; font-size: .7rem; text-transform: uppercase; background: #b00020; color: #fff; padding: 0 .35rem; border-radius: 3px; }
  meter { width: 7rem; height: 1rem; }
  small, .muted { color: #667; }
  ul.alerts { list-style: none; margin: 0; padding: 0; }
  ul.alerts li { display: flex; gap: .75rem; align-items: baseline; padding: .4rem 0; border-bottom: 1px solid #e3e5e8; }
  ul.alerts li div { flex: 1; min-width: 0; overflow-wrap: anywhere; }
  details summary { cursor: pointer; color: #0b5cad; padding: .3rem 0; }
  .sev { font-weight: 600; text-transform: uppercase; font-size: .75rem; }
  .sev-critical { color: #b00020; } .sev-warning { color: #9a6700; } .sev-info { color: #0b5cad; }
  .state-running { color: #1a7f37; } .state-stopped { color: #b00020; }
  .error { color: #b00020; }
  button { font: inherit; padding: .2rem .7rem; cursor: pointer; }
  #status { color: #ffd479; }
  .charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 20rem), 1fr)); gap: 1rem; }
  figure.chart { margin: 0; min-width: 0; }
  figure.chart figcaption { font-weight: 600; margin-bottom: .2rem; }
  figure.chart svg { width: 100%; height: auto; display: block; }
  svg .grid { stroke: #e3e5e8; stroke-width: 1; }
  svg .axis { stroke: #889; stroke-width: 1; }
  svg .tick, svg .axis-title, svg .empty { font: 9px system-ui, sans-serif; fill: #556; }
  svg .axis-title { font-weight: 600; }
  svg .line { fill: none; stroke-width: 1.6; stroke-linejoin: round; }
  svg.spark { width: 7.5rem; height: 1.75rem; display: block; }
  svg.spark .line { stroke-width: 1.2; vector-effect: non-scaling-stroke; }
  .line.s0 { stroke: #0b5cad; } .line.s1 { stroke: #d0021b; } .line.s2 { stroke: #1a7f37; } .line.s3 { stroke: #9a6700; } .line.s4 { stroke: #7b3fb4; } .line.s5 { stroke: #00838f; }
  .dot.s0, .sw.s0 { fill: #0b5cad; background: #0b5cad; } .dot.s1, .sw.s1 { fill: #d0021b; background: #d0021b; } .dot.s2, .sw.s2 { fill: #1a7f37; background: #1a7f37; }
  .dot.s3, .sw.s3 { fill: #9a6700; background: #9a6700; } .dot.s4, .sw.s4 { fill: #7b3fb4; background: #7b3fb4; } .dot.s5, .sw.s5 { fill: #00838f; background: #00838f; }
  ul.legend { list-style: none; margin: .2rem 0 0; padding: 0; display: flex; flex-wrap: wrap; gap: .1rem .8rem; font-size: .8rem; }
  ul.legend .sw { display: inline-block; width: .7rem; height: .7rem; border-radius: 2px; margin-right: .3rem; vertical-align: -.05rem; }
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
      // The answer is the header's summary, then the panels; folded sections stay as the operator left them.
      const next = document.createElement("template");
      next.innerHTML = text;
      const open = new Set([...panels.querySelectorAll("details[id][open]")].map((d) => d.id));
      const line = next.content.getElementById("summary");
      if (line) document.getElementById("summary").replaceWith(line);
      for (const d of next.content.querySelectorAll("details[id]")) d.open = open.has(d.id);
      panels.replaceChildren(next.content);
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

/** `nonce`: the one in the response's content security policy (http/page-headers.ts). */
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
  <h1>Resource Manager</h1>
  ${summary(state)}
  <span id="status" role="status" aria-live="polite"></span>
  <button type="button" data-action="logout">Log out</button>
</header>
<main id="panels">${panelsBody(state)}</main>`, true);
}
