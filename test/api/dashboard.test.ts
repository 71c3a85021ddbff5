import { env, exports } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { dayKey } from "../../src/domain/calendar";
import { SESSION_TTL_MS, signSession } from "../../src/http/session";
import { raiseAlert } from "../../src/storage/alerts";
import { insertRequestLog } from "../../src/storage/request-log";
import { checkResponse } from "../support/contract";
import { ADMIN, call, expectError, KEYS, type Call } from "../support/helpers";

const XSS = `<script>alert("x")</script>`;

let aid = 0;
/** An open alert whose subject and message carry markup, as a worker's error text could. */
async function openAlert(label: string): Promise<string> {
  aid += 1;
  const raised = await raiseAlert(env.DB, {
    kind: "worker_failures", subject: `tpl-${label}-${aid}<b>`, severity: "critical", message: `${label}: ${XSS} & more`,
    details: {}, dedupeKey: `worker_failures:dash-${label}-${aid}`, oncePerKey: false,
  }, Date.now());
  return raised!.alert.id;
}

/** Post the login form as a browser does, but without following the redirect (helpers' call() follows it). */
async function form(body: Record<string, string>, headers: Record<string, string> = {}): Promise<Call> {
  const res = await exports.default.fetch(new Request("https://rm.test/admin/dashboard/session", {
    method: "POST", redirect: "manual", body: new URLSearchParams(body).toString(),
    headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
  }));
  const text = await res.text();
  checkResponse("POST", "/admin/dashboard/session", res.status, res.headers, text);
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // The HTML login form.
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

/** Log in through the form; answers the Cookie header to send back. */
async function login(): Promise<string> {
  const r = await form({ token: ADMIN });
  expect(r.status).toBe(303);
  return r.headers.get("set-cookie")!.split(";")[0]!;
}

const withCookie = (cookie: string, headers: Record<string, string> = {}) => ({ headers: { cookie, ...headers } });
const CSRF = { "x-requested-with": "rm-dashboard" };

beforeAll(async () => {
  await env.DB.prepare("INSERT INTO usage_daily (client_id, pool_id, day, units, cost_nano, events) VALUES ('globex', 'openai-gpt4', ?1, 1000, 30000000, 4)")
    .bind(dayKey(Date.now())).run();
  await insertRequestLog(env.DB, [{
    id: "req_dashfail", client_id: "initech", template: "notify-sms", queue: "fast", status: "failed", estimate_nano: 7_500_000,
    actual_nano: null, attempts: 3, created_at: Date.now() - 5000, finished_at: Date.now() - 1000, error: "worker answered 500: <b>boom</b>",
  }]);
});

describe("the dashboard page", () => {
  it("without a credential is the login form, with no secret in it", async () => {
    const r = await call("GET", "/admin/dashboard");
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toMatch(/^text\/html/);
    expect(r.body).toContain('<form class="login" method="post" action="/admin/dashboard/session">');
    expect(r.body).not.toContain(ADMIN);
    expect(r.headers.get("content-security-policy")).toContain("default-src 'none'");
    expect(r.headers.get("cache-control")).toBe("no-store");
  });

  it("with the admin token renders pools, queues, budgets, open alerts, failures and scaling events, escaped", async () => {
    const id = await openAlert("page");
    const r = await call("GET", "/admin/dashboard", { token: ADMIN });
    expect(r.status).toBe(200);
    const page: string = r.body;
    for (const pool of ["openai-gpt4", "openai-gpt35", "email-sendgrid", "sms-twilio", "d1-queries", "kv-storage"]) {
      expect(page).toContain(`<tr data-pool="${pool}">`);
    }
    expect(page).toMatch(/<meter min="0" max="10000" value="10000"/); // openai-gpt4, full
    for (const queue of ["immediate", "fast", "normal", "batch", "deferred"]) expect(page).toContain(`<tr data-queue="${queue}">`);
    expect(page).toContain('<tr data-client="globex">'); // spent this month; budget from its object
    expect(page).toContain(`<li data-alert-id="${id}">`);
    expect(page).toContain(`<button type="button" data-action="ack" data-alert-id="${id}">Ack</button>`);
    expect(page).toContain("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more");
    expect(page).toContain(`tpl-page-${aid}&lt;b&gt;`);
    expect(page).toContain('<tr data-request="req_dashfail">');
    expect(page).toContain("worker answered 500: &lt;b&gt;boom&lt;/b&gt;");
    expect(page).toContain("No scaling events.");
    expect(page).toContain('data-action="stop"');
    expect(page).not.toContain(XSS);
    expect(page).not.toContain(ADMIN);
    // One script, carrying the nonce the policy names.
    const nonce = /script-src 'nonce-([^']+)'/.exec(r.headers.get("content-security-policy")!)![1]!;
    expect(page.match(/<script/g)).toHaveLength(1);
    expect(page).toContain(`<script nonce="${nonce}">`);
  });

  it("is for operators: a wrong token is 401, an API key 403", async () => {
    expectError(await call("GET", "/admin/dashboard", { token: "not-the-token" }), 401, "unauthorized");
    expectError(await call("GET", "/admin/dashboard", { token: KEYS.acme }), 403, "forbidden");
    expectError(await call("GET", "/admin/dashboard/panels"), 401, "unauthorized");
  });
});

describe("the dashboard session", () => {
  it("a wrong token is 401: the form again for a browser, the envelope otherwise; no cookie either way", async () => {
    const browser = await form({ token: "guess" }, { accept: "text/html,application/xhtml+xml,*/*;q=0.8" });
    expect(browser.status).toBe(401);
    expect(browser.headers.get("content-type")).toMatch(/^text\/html/);
    expect(browser.body).toContain("That is not the admin token.");
    expect(browser.headers.get("set-cookie")).toBeNull();
    const script = await form({ token: "guess" });
    expectError(script, 401, "unauthorized");
    expect(script.headers.get("set-cookie")).toBeNull();
    expectError(await form({}), 400, "validation_failed");
  });

  it("the admin token starts a signed, HttpOnly, Secure, SameSite=Strict session of 12 hours holding no token", async () => {
    const r = await form({ token: ADMIN });
    expect(r.status).toBe(303);
    expect(r.headers.get("location")).toBe("/admin/dashboard");
    const cookie = r.headers.get("set-cookie")!;
    expect(cookie).toMatch(/^rm_admin_session=v1\.\d{13}\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}; /);
    expect(cookie).toContain(`Max-Age=${SESSION_TTL_MS / 1000}`);
    expect(cookie).toContain("Path=/admin");
    expect(cookie).toContain("HttpOnly");
    expect(cookie).toContain("Secure");
    expect(cookie).toContain("SameSite=Strict");
    expect(cookie).not.toContain(ADMIN);
  });

  it("a login posted from another site is refused", async () => {
    expectError(await form({ token: ADMIN }, { origin: "https://evil.example" }), 403, "forbidden");
    expect((await form({ token: ADMIN }, { origin: "https://rm.test" })).status).toBe(303);
  });

  it("the cookie authenticates reads of /admin/*: the page, its panels, the alerts, a CSV report", async () => {
    const cookie = await login();
    const page = await call("GET", "/admin/dashboard", withCookie(cookie));
    expect(page.status).toBe(200);
    expect(page.body).toContain('<main id="panels">');
    const panels = await call("GET", "/admin/dashboard/panels", withCookie(cookie));
    expect(panels.status).toBe(200);
    expect(panels.body).toContain('<section id="pools">');
    expect(panels.body).not.toContain("<script");
    expect((await call("GET", "/admin/alerts?state=open", withCookie(cookie))).status).toBe(200);
    const csv = await call("GET", "/admin/reports/cost?format=csv", withCookie(cookie));
    expect(csv.status).toBe(200);
    expect(csv.body).toMatch(/^period,period_start,client,events,cost_nano,cost_usd\r\n/);
  });

  it("a state-changing call with the cookie needs X-Requested-With (403 without); with it, ack and stop/start work", async () => {
    const cookie = await login();
    const id = await openAlert("ack");
    expectError(await call("POST", `/admin/alerts/${id}/ack`, withCookie(cookie)), 403, "forbidden");
    expectError(await call("POST", "/admin/scheduler/stop", withCookie(cookie)), 403, "forbidden");
    expect((await call("GET", `/admin/alerts/${id}`, { token: ADMIN })).body.alert.state).toBe("open");

    const acked = await call("POST", `/admin/alerts/${id}/ack`, withCookie(cookie, CSRF));
    expect(acked.status).toBe(200);
    expect(acked.body.alert.state).toBe("acknowledged");
    const panels = await call("GET", "/admin/dashboard/panels", withCookie(cookie));
    expect(panels.body).not.toContain(id);

    const stopped = await call("POST", "/admin/scheduler/stop", withCookie(cookie, CSRF));
    expect(stopped.body.running).toBe(false);
    expect((await call("GET", "/admin/dashboard/panels", withCookie(cookie))).body).toContain('data-action="start"');
    const started = await call("POST", "/admin/scheduler/start", withCookie(cookie, CSRF));
    expect(started.body.running).toBe(true);
  });

  it("a tampered, expired or foreign-path cookie does not authenticate", async () => {
    const cookie = await login();
    const tampered = cookie.replace(/\.(\d{13})\./, (_, exp: string) => `.${Number(exp) + 1000}.`);
    expectError(await call("GET", "/admin/alerts", withCookie(tampered)), 401, "unauthorized");
    const expired = await signSession(env, Date.now() - SESSION_TTL_MS - 1000);
    expectError(await call("GET", "/admin/alerts", withCookie(`rm_admin_session=${expired}`)), 401, "unauthorized");
    expectError(await call("GET", "/admin/alerts", withCookie("rm_admin_session=test-admin-token")), 401, "unauthorized");
    // Only /admin/* takes it: elsewhere it is no credential at all.
    expectError(await call("GET", "/api/queue/status", withCookie(cookie)), 401, "unauthorized");
    // A header, when sent, is what counts.
    expectError(await call("GET", "/admin/alerts", withCookie(cookie, { authorization: `Bearer ${KEYS.acme}` })), 403, "forbidden");
  });

  it("logging out clears the cookie and revokes the session (test/api/session.test.ts has the rest)", async () => {
    const cookie = await login();
    expectError(await call("POST", "/admin/dashboard/logout", withCookie(cookie)), 403, "forbidden");
    const r = await call("POST", "/admin/dashboard/logout", withCookie(cookie, CSRF));
    expect(r.status).toBe(204);
    expect(r.headers.get("set-cookie")).toMatch(/^rm_admin_session=; Max-Age=0; Path=\/admin/);
    expectError(await call("GET", "/admin/dashboard/panels", withCookie(cookie)), 401, "unauthorized");
  });
});
