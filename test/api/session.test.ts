import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { sourceAddress } from "../../src/domain/source-address";
import { SESSION_TTL_MS, signSession } from "../../src/http/session";
import { LOGIN_MAX_FAILURES, LOGIN_WINDOW_MS } from "../../src/services/login-limit";
import { PRUNE_LIMIT } from "../../src/storage/admin-sessions";
import { checkResponse } from "../support/contract";
import { ADMIN, call, expectError, type Call } from "../support/helpers";

const CSRF = { "x-requested-with": "rm-dashboard" };
const HTML = { accept: "text/html,application/xhtml+xml,*/*;q=0.8" };
const withCookie = (cookie: string, headers: Record<string, string> = {}) => ({ headers: { cookie, ...headers } });

let ipSeq = 0;
/** A fresh source address per test: the login limit counts per address. */
const freshIp = () => `198.51.100.${++ipSeq}`;

/** Post the login form without following the redirect, as from `ip`. */
async function form(token: string, ip: string, headers: Record<string, string> = {}): Promise<Call> {
  const res = await exports.default.fetch(new Request("https://rm.test/admin/dashboard/session", {
    method: "POST", redirect: "manual", body: new URLSearchParams({ token }).toString(),
    headers: { "content-type": "application/x-www-form-urlencoded", "cf-connecting-ip": ip, ...headers },
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

/** Log in from a fresh address; answers the Cookie header to send back. */
async function login(ip = freshIp()): Promise<string> {
  const r = await form(ADMIN, ip);
  expect(r.status).toBe(303);
  return r.headers.get("set-cookie")!.split(";")[0]!;
}

const sessionId = (cookie: string) => cookie.split(".")[2]!;
const sessionRows = async () => (await env.DB.prepare("SELECT COUNT(*) AS n FROM admin_sessions").first<{ n: number }>())!.n;

describe("dashboard sessions are revocable on the server", () => {
  it("logout revokes the session: the old cookie is 401 on every /admin/* call from then on", async () => {
    const cookie = await login();
    expect((await call("GET", "/admin/alerts", withCookie(cookie))).status).toBe(200);
    const out = await call("POST", "/admin/dashboard/logout", withCookie(cookie, CSRF));
    expect(out.status).toBe(204);
    expect(out.headers.get("set-cookie")).toMatch(/^rm_admin_session=; Max-Age=0; Path=\/admin/);

    // The copied cookie, sent again as it was: refused with the envelope, reads and writes alike.
    const refused = await call("GET", "/admin/alerts", withCookie(cookie));
    expectError(refused, 401, "unauthorized");
    expect(refused.body.error.message).toContain("logged out");
    expectError(await call("GET", "/admin/dashboard/panels", withCookie(cookie)), 401, "unauthorized");
    expectError(await call("GET", "/admin/dashboard", withCookie(cookie)), 401, "unauthorized");
    expectError(await call("POST", "/admin/scheduler/stop", withCookie(cookie, CSRF)), 401, "unauthorized");
    expectError(await call("POST", "/admin/dashboard/logout", withCookie(cookie, CSRF)), 401, "unauthorized");

    const row = await env.DB.prepare("SELECT created_at, expires_at, revoked_at FROM admin_sessions WHERE id = ?1").bind(sessionId(cookie)).first<{ created_at: number; expires_at: number; revoked_at: number | null }>();
    expect(row!.expires_at - row!.created_at).toBe(SESSION_TTL_MS);
    expect(row!.revoked_at).toBeGreaterThanOrEqual(row!.created_at);
    // The scheduler was never stopped by the refused call.
    expect((await call("GET", "/admin/scheduler/status", { token: ADMIN })).body.running).toBe(true);
  });

  it("a second session survives the first's logout", async () => {
    const first = await login();
    const second = await login();
    expect(sessionId(first)).not.toBe(sessionId(second));
    expect((await call("POST", "/admin/dashboard/logout", withCookie(first, CSRF))).status).toBe(204);
    expectError(await call("GET", "/admin/alerts", withCookie(first)), 401, "unauthorized");
    expect((await call("GET", "/admin/alerts", withCookie(second))).status).toBe(200);
    expect((await call("GET", "/admin/dashboard/panels", withCookie(second))).status).toBe(200);
  });

  it("a correctly signed cookie for a session D1 does not know is 401", async () => {
    const unknown = await signSession(env, Date.now());
    expect(unknown).toMatch(/^v1\.\d{13}\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}$/);
    expectError(await call("GET", "/admin/alerts", withCookie(`rm_admin_session=${unknown}`)), 401, "unauthorized");
  });

  it("logging out with the admin token header and no cookie revokes nothing and answers 204", async () => {
    const cookie = await login();
    const r = await call("POST", "/admin/dashboard/logout", { token: ADMIN });
    expect(r.status).toBe(204);
    expect((await call("GET", "/admin/alerts", withCookie(cookie))).status).toBe(200);
  });

  it("each login deletes at most PRUNE_LIMIT expired sessions; live and revoked-but-unexpired ones stay", async () => {
    const live = await login();
    const revoked = await login();
    await call("POST", "/admin/dashboard/logout", withCookie(revoked, CSRF));
    const now = Date.now();
    const expired = PRUNE_LIMIT + 50;
    await env.DB.prepare(
      `INSERT INTO admin_sessions (id, created_at, expires_at, revoked_at)
       WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?3)
       SELECT 'old-' || i, ?1 - ?2, ?1 - 1000, CASE WHEN i % 2 = 0 THEN ?1 - 5000 ELSE NULL END FROM n`,
    ).bind(now, SESSION_TTL_MS, expired).run();
    const before = await sessionRows();

    await login();
    expect(await sessionRows()).toBe(before + 1 - PRUNE_LIMIT);
    await login();
    expect(await sessionRows()).toBe(before + 2 - expired);
    expect((await env.DB.prepare("SELECT COUNT(*) AS n FROM admin_sessions WHERE id LIKE 'old-%'").first<{ n: number }>())!.n).toBe(0);
    expect((await call("GET", "/admin/alerts", withCookie(live))).status).toBe(200);
    expect((await env.DB.prepare("SELECT revoked_at FROM admin_sessions WHERE id = ?1").bind(sessionId(revoked)).first<{ revoked_at: number }>())!.revoked_at).toBeGreaterThan(0);
  });
});

describe("dashboard logins are limited per source address", () => {
  it(`after ${LOGIN_MAX_FAILURES} failed logins the next is 429 with Retry-After; the right token is 429 too; another source is not limited`, async () => {
    const ip = freshIp();
    for (let i = 0; i < LOGIN_MAX_FAILURES; i += 1) expectError(await form(`guess-${i}`, ip), 401, "unauthorized");

    const sixth = await form("guess-6", ip);
    expectError(sixth, 429, "rate_limited");
    const retryMs: number = sixth.body.error.details.retry_after_ms;
    expect(retryMs).toBeGreaterThan(LOGIN_WINDOW_MS - 30_000);
    expect(retryMs).toBeLessThanOrEqual(LOGIN_WINDOW_MS);
    expect(sixth.body.error.details).toEqual({ retry_after_ms: retryMs, max_failures: LOGIN_MAX_FAILURES, window_ms: LOGIN_WINDOW_MS });
    expect(Number(sixth.headers.get("retry-after"))).toBe(Math.ceil(retryMs / 1000));

    const right = await form(ADMIN, ip);
    expectError(right, 429, "rate_limited");
    expect(right.headers.get("set-cookie")).toBeNull();
    expect(Number(right.headers.get("retry-after"))).toBeGreaterThan(0);

    // A browser gets the form again, with the wait, and the same status and header.
    const browser = await form(ADMIN, ip, HTML);
    expect(browser.status).toBe(429);
    expect(browser.headers.get("content-type")).toMatch(/^text\/html/);
    expect(browser.body).toContain("Too many failed logins from this address: try again in 5 min.");
    expect(Number(browser.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(browser.headers.get("set-cookie")).toBeNull();

    // Another address logs in at once.
    expect((await form(ADMIN, freshIp())).status).toBe(303);
  });

  it("counts an IPv6 source by its /64: a fresh address in the same /64 is still limited", async () => {
    for (let i = 0; i < LOGIN_MAX_FAILURES; i += 1) expectError(await form("guess", `2001:db8:aa:1::${i + 1}`), 401, "unauthorized");
    expectError(await form(ADMIN, "2001:0db8:00aa:0001:ffff:1:2:3"), 429, "rate_limited");
    expect((await form(ADMIN, "2001:db8:aa:2::1")).status).toBe(303);
  });

  it("a successful login resets the count", async () => {
    const ip = freshIp();
    for (let i = 0; i < LOGIN_MAX_FAILURES - 1; i += 1) expectError(await form("guess", ip), 401, "unauthorized");
    expect((await form(ADMIN, ip)).status).toBe(303);
    expect(await env.DB.prepare("SELECT * FROM login_attempts WHERE source = ?1").bind(ip).first()).toBeNull();
    for (let i = 0; i < LOGIN_MAX_FAILURES; i += 1) expectError(await form("guess", ip), 401, "unauthorized");
    expectError(await form("guess", ip), 429, "rate_limited");
  });

  it("is exact under concurrency: of 12 guesses at once, exactly 5 are checked (401) and 7 refused (429)", async () => {
    const ip = freshIp();
    const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => form(`guess-${i}`, ip)));
    expect(answers.filter((a) => a.status === 401)).toHaveLength(LOGIN_MAX_FAILURES);
    expect(answers.filter((a) => a.status === 429)).toHaveLength(12 - LOGIN_MAX_FAILURES);
    for (const a of answers) expect(a.body.error.code).toBe(a.status === 401 ? "unauthorized" : "rate_limited");
  });

  it("the lock ends with its window: Retry-After counts down to the window's end, then a new window starts", async () => {
    const now = Date.now();
    const ending = "192.0.2.10";
    await env.DB.prepare("INSERT INTO login_attempts (source, window_start, attempts) VALUES (?1, ?2, ?3)")
      .bind(ending, now - LOGIN_WINDOW_MS + 3000, LOGIN_MAX_FAILURES).run();
    const limited = await form(ADMIN, ending);
    expectError(limited, 429, "rate_limited");
    expect(limited.body.error.details.retry_after_ms).toBeLessThanOrEqual(3000);
    expect(limited.headers.get("retry-after")).toMatch(/^[1-3]$/);

    const ended = "192.0.2.11";
    await env.DB.prepare("INSERT INTO login_attempts (source, window_start, attempts) VALUES (?1, ?2, ?3)")
      .bind(ended, now - LOGIN_WINDOW_MS - 1, LOGIN_MAX_FAILURES + 10).run();
    expectError(await form("guess", ended), 401, "unauthorized");
    const row = await env.DB.prepare("SELECT window_start, attempts FROM login_attempts WHERE source = ?1").bind(ended).first<{ window_start: number; attempts: number }>();
    expect(row!.attempts).toBe(1);
    expect(row!.window_start).toBeGreaterThanOrEqual(now);
  });

  it("refused logins (bad form, other origin) are not counted", async () => {
    const ip = freshIp();
    for (let i = 0; i < LOGIN_MAX_FAILURES + 2; i += 1) {
      expectError(await form(ADMIN, ip, { origin: "https://evil.example" }), 403, "forbidden");
    }
    expect(await env.DB.prepare("SELECT * FROM login_attempts WHERE source = ?1").bind(ip).first()).toBeNull();
    expect((await form(ADMIN, ip)).status).toBe(303);
  });
});

describe("sourceAddress", () => {
  it("is the IPv4 address, an IPv6 /64, or 'local' without one", () => {
    expect(sourceAddress("203.0.113.9")).toBe("203.0.113.9");
    expect(sourceAddress(" 203.0.113.9 ")).toBe("203.0.113.9");
    expect(sourceAddress("::ffff:203.0.113.9")).toBe("203.0.113.9");
    expect(sourceAddress("2001:db8::1")).toBe("2001:db8:0:0::/64");
    expect(sourceAddress("2001:0DB8:0000:0000:abcd:1:2:3")).toBe("2001:db8:0:0::/64");
    expect(sourceAddress("fe80::1%eth0")).toBe("fe80:0:0:0::/64");
    expect(sourceAddress("::1")).toBe("0:0:0:0::/64");
    expect(sourceAddress(undefined)).toBe("local");
    expect(sourceAddress("")).toBe("local");
    expect(sourceAddress("not an address")).toBe("other:not an address");
    expect(sourceAddress("1:2:3:4:5:6:7:8:9")).toBe("other:1:2:3:4:5:6:7:8:9");
    expect(sourceAddress("1::2::3")).toBe("other:1::2::3");
  });
});
