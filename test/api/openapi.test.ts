import { describe, expect, it } from "vitest";
import { exports } from "cloudflare:workers";
import { createApp } from "../../src/app";
import { DOCS_FILES } from "../../src/routes/docs-files";
import { ERRORS, type ErrorCode } from "../../src/errors";
import { checkResponse, ContractError } from "../support/contract";
import { call } from "../support/helpers";

const METHODS = ["get", "put", "post", "delete", "patch"] as const;

interface Op {
  operationId?: string;
  summary?: string;
  tags?: string[];
  security?: Array<Record<string, string[]>>;
  responses: Record<string, { content?: Record<string, { schema?: { $ref?: string }; examples?: Record<string, { $ref: string }> }> }>;
}

async function fetchDocument() {
  const r = await call("GET", "/openapi.json");
  expect(r.status).toBe(200);
  return r.body as {
    openapi: string; tags: Array<{ name: string }>; paths: Record<string, Partial<Record<(typeof METHODS)[number], Op>>>;
    components: { examples: Record<string, { value: { error: { code: string } } }>; responses: Record<string, Op["responses"][string]> };
  };
}

function operationsOf(doc: Awaited<ReturnType<typeof fetchDocument>>) {
  return Object.entries(doc.paths).flatMap(([path, item]) =>
    METHODS.flatMap((method) => (item[method] ? [{ method, path, op: item[method]! }] : [])),
  );
}

/** Operations whose credential is a body field, not a header: the dashboard's login form (400 without it). */
const CREDENTIAL_IN_BODY = new Set(["post /admin/dashboard/session"]);

/** Error statuses that answer with their own documented body, not the error envelope. */
const NOT_ENVELOPES = new Set(["get /health 503"]);

describe("the OpenAPI document", () => {
  it("is OpenAPI 3.1 and is the committed openapi.json (after changing a route: npm run openapi)", async () => {
    const doc = await fetchDocument();
    expect(doc.openapi).toBe("3.1.0");
    await expect(`${JSON.stringify(doc, null, 2)}\n`, "openapi.json is out of date: run npm run openapi").toMatchFileSnapshot("../../openapi.json");
  });

  it("declares every route the app serves, and no other", async () => {
    const doc = await fetchDocument();
    // The app-wide middleware ("*") is not a route; every handler of a route is. The reference page's
    // files (Swagger UI, its licences) are parts of /docs, not API: tested below.
    const served = new Set(
      createApp().routes
        .filter((r) => r.path !== "*" && r.path !== "/*" && !(r.path in DOCS_FILES))
        .map((r) => `${r.method.toLowerCase()} ${r.path.replace(/:([^/]+)/g, "{$1}")}`),
    );
    const documented = new Set(operationsOf(doc).map((o) => `${o.method} ${o.path}`));
    expect([...served].sort()).toEqual([...documented].sort());
  });

  it("gives every operation a summary, a tag the document describes and a unique operationId", async () => {
    const doc = await fetchDocument();
    const tags = new Set(doc.tags.map((t) => t.name));
    const ops = operationsOf(doc);
    for (const { method, path, op } of ops) {
      expect(op.summary, `${method} ${path}`).toBeTruthy();
      expect(op.tags?.length, `${method} ${path}`).toBeGreaterThan(0);
      for (const tag of op.tags!) expect(tags.has(tag), `${method} ${path}: tag ${tag}`).toBe(true);
    }
    const ids = ops.map((o) => o.op.operationId);
    expect(ids.every(Boolean)).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("declares the bearer credential on exactly the operations that refuse a call without one", async () => {
    const doc = await fetchDocument();
    for (const { method, path, op } of operationsOf(doc)) {
      if (CREDENTIAL_IN_BODY.has(`${method} ${path}`)) {
        expect(op.security, `${method} ${path} takes no header credential: declare security: []`).toEqual([]);
        continue;
      }
      const r = await call(method.toUpperCase(), path.replace(/\{[^}]+\}/g, "x"));
      if (r.status === 401) {
        expect(r.body.error.code).toBe("unauthorized");
        expect(op.security?.some((requirement) => "bearer" in requirement), `${method} ${path} refuses anonymous calls: declare security`).toBe(true);
      } else {
        expect(r.status, `${method} ${path}`).toBeLessThan(400);
        expect(op.security, `${method} ${path} is public: declare security: []`).toEqual([]);
      }
    }
  });

  it("answers every error with the Error schema and examples named by codes of that status from ERRORS", async () => {
    const doc = await fetchDocument();
    let checked = 0;
    for (const { method, path, op } of operationsOf(doc)) {
      for (const [status, declared] of Object.entries(op.responses)) {
        if (Number(status) < 400 || NOT_ENVELOPES.has(`${method} ${path} ${status}`)) continue;
        // Error responses several operations share live once in components.responses.
        const ref = (declared as { $ref?: string }).$ref;
        const response = ref ? doc.components.responses[ref.replace("#/components/responses/", "")]! : declared;
        const media = response.content?.["application/json"];
        const where = `${method} ${path} ${status}`;
        expect(media?.schema, where).toEqual({ $ref: "#/components/schemas/Error" });
        const examples = Object.entries(media?.examples ?? {});
        expect(examples.length, `${where}: no codes`).toBeGreaterThan(0);
        for (const [code, example] of examples) {
          expect(ERRORS[code as ErrorCode]?.status, `${where}: ${code}`).toBe(Number(status));
          // Each example is the code's one shared example in components.
          expect(example, `${where}: ${code}`).toEqual({ $ref: `#/components/examples/${code}` });
          expect(doc.components.examples[code]!.value.error.code).toBe(code);
          checked += 1;
        }
      }
    }
    expect(checked).toBeGreaterThan(50);
    const declared429 = doc.paths["/internal/consume"]!.post!.responses["429"] as { $ref?: string };
    const doc429 = (declared429.$ref ? doc.components.responses[declared429.$ref.replace("#/components/responses/", "")] : declared429) as { headers?: Record<string, unknown> };
    expect(doc429.headers).toHaveProperty("Retry-After");
  });

  it("serves /docs: Swagger UI from this origin's static assets, pointed at /openapi.json, under a self-only policy", async () => {
    const r = await call("GET", "/docs");
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toMatch(/^text\/html/);
    const page: string = r.body;
    // Two script files of this origin, no inline script; nothing from another origin.
    expect(page.match(/<script\b[^>]*>[^<]*<\/script>/g)).toEqual([
      '<script src="/docs/swagger-ui/swagger-ui-bundle.js"></script>',
      '<script src="/docs/init.js"></script>',
    ]);
    expect(page).toContain('<link rel="stylesheet" href="/docs/swagger-ui/swagger-ui.css">');
    expect(page).not.toMatch(/(src|href)=["']?(https?:)?\/\//);
    expect(r.headers.get("content-security-policy")).toBe(
      "default-src 'none'; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'none'",
    );
    expect(r.headers.get("x-content-type-options")).toBe("nosniff");
    expect(r.headers.get("x-frame-options")).toBe("DENY");
    expect(r.headers.get("referrer-policy")).toBe("no-referrer");

    // test/browser/dashboard.browser.mjs checks against wrangler dev that Swagger UI renders every
    // operation under this policy.
  });

  it("serves the files /docs names from the worker: Swagger UI's bundle and stylesheet, init.js, the licences", async () => {
    const expected: Array<[string, RegExp, string]> = [
      ["/docs/init.js", /^text\/javascript/, 'url: "/openapi.json"'],
      ["/docs/swagger-ui/swagger-ui-bundle.js", /^text\/javascript/, "SwaggerUIBundle"],
      ["/docs/swagger-ui/swagger-ui.css", /^text\/css/, ".swagger-ui"],
      ["/docs/swagger-ui/swagger-ui-bundle.js.LICENSE.txt", /^text\/plain/, "@license"],
      ["/docs/swagger-ui/LICENSE", /^text\/plain/, "Apache License"],
      ["/docs/swagger-ui/NOTICE", /^text\/plain/, "swagger-ui"],
    ];
    expect(expected.map(([path]) => path).sort()).toEqual(Object.keys(DOCS_FILES).sort());
    for (const [path, type, content] of expected) {
      const r = await exports.default.fetch(new Request(`http://rm.test${path}`));
      const body = await r.text();
      expect(r.status, path).toBe(200);
      expect(r.headers.get("content-type"), path).toMatch(type);
      expect(r.headers.get("x-content-type-options"), path).toBe("nosniff");
      expect(r.headers.get("cross-origin-resource-policy"), path).toBe("same-origin");
      expect(r.headers.get("cache-control"), path).toBe("public, max-age=3600");
      expect(body, path).toContain(content);
      expect(body.length, path).toBe(DOCS_FILES[path]!.body.length);
      // Revalidation by ETag: the same file answers 304 without a body.
      const again = await exports.default.fetch(new Request(`http://rm.test${path}`, { headers: { "if-none-match": r.headers.get("etag")! } }));
      expect(again.status, path).toBe(304);
      expect(await again.text(), path).toBe("");
    }
    expect(DOCS_FILES["/docs/swagger-ui/swagger-ui-bundle.js"]!.body.length).toBeGreaterThan(1_000_000);
    // Any other path under /docs is the API's 404 envelope.
    const missing = await exports.default.fetch(new Request("http://rm.test/docs/swagger-ui/nope.js"));
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe("not_found");
  });
});

describe("the response check every test's call() goes through", () => {
  const json = new Headers({ "content-type": "application/json" });
  const envelope = (code: string) => JSON.stringify({ error: { code, message: "m" }, trace_id: "t" });

  it("accepts responses as declared", () => {
    checkResponse("GET", "/", 200, json, JSON.stringify({ service: "rm", status: "ok", time: 1, trace_id: "t" }));
    checkResponse("GET", "/status", 401, json, envelope("unauthorized"));
    checkResponse("POST", "/internal/consume", 429, new Headers({ "content-type": "application/json", "retry-after": "2" }), envelope("rate_limited"));
    checkResponse("GET", "/no/such/route", 404, json, envelope("not_found"));
  });

  it("rejects an undeclared status, field, code, header, content type or route", () => {
    const drift = (fn: () => void, message: RegExp) => expect(fn).toThrow(expect.objectContaining({ name: ContractError.name, message: expect.stringMatching(message) }));
    drift(() => checkResponse("GET", "/", 418, json, "{}"), /status 418 is not declared/);
    drift(() => checkResponse("GET", "/", 200, json, JSON.stringify({ service: "rm", status: "ok", time: 1, trace_id: "t", secret: 1 })), /fields not in the declared schema: secret/);
    drift(() => checkResponse("GET", "/", 200, json, JSON.stringify({ service: "rm", status: "fine", time: 1, trace_id: "t" })), /does not match the declared schema: status/);
    drift(() => checkResponse("GET", "/status", 403, json, envelope("pool_forbidden")), /error code pool_forbidden is not declared/);
    drift(() => checkResponse("POST", "/internal/consume", 429, json, envelope("rate_limited")), /header Retry-After is missing/);
    drift(() => checkResponse("GET", "/", 200, new Headers({ "content-type": "text/plain" }), "ok"), /content type "text\/plain" is not declared/);
    drift(() => checkResponse("GET", "/undocumented", 200, json, "{}"), /no operation in the OpenAPI document/);
  });

});
