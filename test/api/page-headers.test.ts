import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { checkResponse } from "../support/contract";
import { ADMIN, call, type Call } from "../support/helpers";

/** The dashboard's policy with its nonce cut out, and the nonce. */
function policyOf(r: Call): { policy: string; nonce: string } {
  const header = r.headers.get("content-security-policy") ?? "";
  const nonce = /script-src 'nonce-([^']+)'/.exec(header)?.[1] ?? "";
  return { policy: header.replaceAll(nonce, "N"), nonce };
}

const DASHBOARD_POLICY =
  "default-src 'none'; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; script-src 'nonce-N'; style-src 'nonce-N'; img-src data:; form-action 'self'";

/** Headers every HTML page of the service carries (hono/secure-headers), beside its own policy. */
function expectPageHeaders(r: Call, frame: string, referrer: string): void {
  expect(r.headers.get("x-content-type-options")).toBe("nosniff");
  expect(r.headers.get("x-frame-options")).toBe(frame);
  expect(r.headers.get("referrer-policy")).toBe(referrer);
  expect(r.headers.get("cross-origin-opener-policy")).toBe("same-origin");
  expect(r.headers.get("strict-transport-security")).toBe("max-age=15552000; includeSubDomains");
}

describe("the dashboard's headers (src/http/page-headers.ts)", () => {
  it("the login form: a self-only policy whose fresh nonce is on the page's one style, never cached", async () => {
    const [a, b] = [await call("GET", "/admin/dashboard"), await call("GET", "/admin/dashboard")];
    const [pa, pb] = [policyOf(a), policyOf(b)];
    expect(pa.policy).toBe(DASHBOARD_POLICY);
    expect(pa.nonce).toMatch(/^[A-Za-z0-9+/]{22}==$/); // 16 random bytes
    expect(pb.nonce).not.toBe(pa.nonce);
    expect(a.body).toContain(`<style nonce="${pa.nonce}">`);
    expect(a.body).not.toContain("<script");
    expectPageHeaders(a, "DENY", "same-origin");
    expect(a.headers.get("cache-control")).toBe("no-store");
  });

  it("the dashboard: its style and its one script carry the policy's nonce; the panels it fetches have the same headers", async () => {
    const page = await call("GET", "/admin/dashboard", { token: ADMIN });
    expect(page.status).toBe(200);
    const { policy, nonce } = policyOf(page);
    expect(policy).toBe(DASHBOARD_POLICY);
    expect(page.body.match(/<(script|style)\b[^>]*>/g)).toEqual([`<style nonce="${nonce}">`, `<script nonce="${nonce}">`]);
    expectPageHeaders(page, "DENY", "same-origin");

    const panels = await call("GET", "/admin/dashboard/panels", { token: ADMIN });
    expect(panels.status).toBe(200);
    expect(policyOf(panels).policy).toBe(DASHBOARD_POLICY);
    expect(panels.headers.get("cache-control")).toBe("no-store");
  });

  it("a refused login: the form again under its own response's nonce; the error envelope for other clients carries the headers too", async () => {
    const post = async (accept: string) => {
      const res = await exports.default.fetch(new Request("https://rm.test/admin/dashboard/session", {
        method: "POST", redirect: "manual", body: new URLSearchParams({ token: "not-the-token" }).toString(),
        headers: { "content-type": "application/x-www-form-urlencoded", accept },
      }));
      const text = await res.text();
      checkResponse("POST", "/admin/dashboard/session", res.status, res.headers, text);
      return { status: res.status, body: text, headers: res.headers } as Call;
    };
    const browser = await post("text/html");
    expect(browser.status).toBe(401);
    const { policy, nonce } = policyOf(browser);
    expect(policy).toBe(DASHBOARD_POLICY);
    expect(browser.body).toContain(`<style nonce="${nonce}">`);
    expect(browser.body).toContain("That is not the admin token.");

    const client = await post("application/json");
    expect(client.status).toBe(401);
    expect(JSON.parse(client.body).error.code).toBe("unauthorized");
    expect(policyOf(client).policy).toBe(DASHBOARD_POLICY);
    expect(client.headers.get("cache-control")).toBe("no-store");
  });

  it("/docs: the same header set with its own policy (files of this origin, no nonce), and cacheable", async () => {
    const r = await call("GET", "/docs");
    expect(r.headers.get("content-security-policy")).not.toContain("nonce");
    expectPageHeaders(r, "DENY", "no-referrer");
    expect(r.headers.get("cache-control")).toBeNull();
  });
});
