import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../http/context";
import { errorExamples } from "../http/errors";

/** The document's own fields; paths and schemas come from the routes' createRoute declarations. */
const DOCUMENT = {
  openapi: "3.1.0",
  info: {
    title: "Resource Manager",
    version: "0.1.0",
    description:
      "Rate limits, quotas, capacity and money for the AI platform. Money is integer nano-dollars; times are epoch ms UTC. " +
      "Every error is one envelope, `{ error: { code, message, details? }, trace_id }`; the examples of each error response name the codes it may carry. " +
      "Paths: `/api/...` is what clients call with an API key (acting for their own client, with the route's scope; the admin token may act for any client); " +
      "`/admin/...` is operators' management and configuration (admin token); `/internal/...` is platform workers' spending (internal token).",
  },
  servers: [{ url: "/", description: "The worker serving this document" }],
  tags: [
    { name: "health", description: "Liveness, readiness and the state of every pool" },
    { name: "resources", description: "What a client may take now, and what it would cost (API key scope resources:read)" },
    { name: "queue", description: "Executing templates now or through the five queues (API key scope execute)" },
    { name: "usage", description: "The usage ledger, budgets and costs (API key scope usage:read or resources:read)" },
    { name: "internal", description: "Spending for the platform's workers that cannot use RPC (internal token)" },
    { name: "admin", description: "Operators: scheduler, alerts, clients' budgets (admin token)" },
    { name: "clients", description: "Clients (tenants), their API keys, quotas and burst sessions. Reads under /api/clients/{id}/... (API key of that client, scopes quota:read or burst; or the admin token); management under /admin/... (admin token)" },
    { name: "allocations", description: "Hierarchical compute allocations: quotas per depth, TTLs, subtree release (API key scope allocations)" },
    { name: "pools", description: "Pool management, lifecycle and auto-scaling (admin token)" },
    { name: "sla", description: "Service levels per tier and queue: targets (admin token), a request's verdict (scope execute), attainment over a window (scope usage:read)" },
    { name: "optimizer", description: "The cost optimizer: model downgrade, batching, result caching, compression, off-peak scheduling; analysis, savings stats and recommendations (API key scopes resources:read, usage:read), per-client switches (admin token)" },
    { name: "docs", description: "This document and its interactive reference" },
  ],
};

type Document = ReturnType<OpenAPIHono["getOpenAPI31Document"]>;

const METHODS = ["get", "put", "post", "delete", "patch", "head", "options"] as const;

/** `post /api/queue/enqueue` → `postApiQueueEnqueue`; `{requestId}` → `ByRequestId`. */
function operationIdOf(method: string, path: string): string {
  const words = path.split("/").filter(Boolean).flatMap((seg) => {
    const param = /^\{(.+)\}$/.exec(seg);
    return (param ? ["by", ...param[1]!.split(/[^A-Za-z0-9]+/)] : seg.split(/[^A-Za-z0-9]+/)).filter(Boolean);
  });
  const tail = words.length ? words.map((w) => w[0]!.toUpperCase() + w.slice(1)).join("") : "Root";
  return method + tail;
}

/** Give every operation a stable operationId (the linter asks for one; clients generate names from it). */
function withOperationIds(doc: Document): Document {
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (op && !op.operationId) op.operationId = operationIdOf(method, path);
    }
  }
  return doc;
}

/**
 * Error responses that several operations declare alike (same status, same codes) are kept once in
 * components.responses, named by status and codes, and referenced: most operations share 401/403 and
 * the 400s. Success responses are left where they are.
 */
function withSharedErrorResponses(doc: Document): Document {
  const seen = new Map<string, { name: string; response: unknown; uses: Array<Record<string, unknown>> }>();
  for (const item of Object.values(doc.paths ?? {})) {
    for (const method of METHODS) {
      const responses = item[method]?.responses as Record<string, unknown> | undefined;
      if (!responses) continue;
      for (const [status, response] of Object.entries(responses)) {
        const examples = (response as { content?: Record<string, { examples?: object }> }).content?.["application/json"]?.examples;
        if (Number(status) < 400 || !examples) continue;
        const key = `${status} ${JSON.stringify(response)}`;
        const name = `Error${status}_${Object.keys(examples).join("_")}`;
        const entry = seen.get(key) ?? { name, response, uses: [] };
        entry.uses.push(responses);
        seen.set(key, entry);
      }
    }
  }
  const shared: Record<string, unknown> = {};
  for (const [key, { name, response, uses }] of seen) {
    if (uses.length < 2 || name in shared) continue;
    shared[name] = response;
    const status = key.slice(0, key.indexOf(" "));
    for (const responses of uses) responses[status] = { $ref: `#/components/responses/${name}` };
  }
  // Only the examples some response names (no operation declares a 500, say).
  const used = new Set([...seen.values()].flatMap(({ response }) => Object.keys((response as { content: Record<string, { examples: object }> }).content["application/json"]!.examples)));
  const examples = Object.fromEntries(Object.entries(doc.components?.examples ?? {}).filter(([code]) => used.has(code)));
  doc.components = { ...doc.components, examples, responses: { ...doc.components?.responses, ...(shared as object) } };
  return doc;
}

const OpenApiDocument = z
  .looseObject({ openapi: z.string(), info: z.looseObject({ title: z.string(), version: z.string() }), paths: z.record(z.string(), z.unknown()) })
  .openapi("OpenApiDocument", { description: "This OpenAPI 3.1 document" });

const CSP = (nonce: string) =>
  [
    "default-src 'none'", `script-src 'nonce-${nonce}'`, `style-src 'nonce-${nonce}'`, "connect-src 'self'",
    "img-src 'self' data:", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
  ].join("; ");

/**
 * The document at /openapi.json and its interactive reference at /docs. `app` is the composed app: its
 * registry holds every route, so the document is built from it (once per isolate, on first request).
 */
export function docsRoutes(app: OpenAPIHono<AppEnv>) {
  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", {
    type: "http",
    scheme: "bearer",
    description: "An API key (rmk_...) on /api, the internal token on /internal, the admin token on /admin, the metrics or admin token on /metrics",
  });
  for (const { code, example } of errorExamples()) app.openAPIRegistry.registerComponent("examples", code, example);
  let document: Document | undefined;
  return new OpenAPIHono<AppEnv>()
    .openapi(
      createRoute({
        method: "get", path: "/openapi.json", tags: ["docs"], security: [], summary: "This OpenAPI 3.1 document",
        responses: { 200: { description: "The document.", content: { "application/json": { schema: OpenApiDocument } } } },
      }),
      (c) => {
        document ??= withSharedErrorResponses(withOperationIds(app.getOpenAPI31Document(DOCUMENT)));
        return c.json(document as z.infer<typeof OpenApiDocument>, 200);
      },
    )
    .openapi(
      createRoute({
        method: "get", path: "/docs", tags: ["docs"], security: [], summary: "Interactive API reference (HTML; reads /openapi.json)",
        responses: { 200: { description: "A self-contained page: operations by tag, schemas, and a form to try each operation.", content: { "text/html": { schema: z.string() } } } },
      }),
      (c) => {
        // A fresh nonce per response: only this page's own script and style may run.
        const nonce = crypto.randomUUID().replaceAll("-", "");
        c.header("Content-Security-Policy", CSP(nonce));
        c.header("X-Content-Type-Options", "nosniff");
        c.header("Referrer-Policy", "no-referrer");
        return c.html(PAGE.replaceAll(NONCE, nonce), 200);
      },
    );
}

const NONCE = "__NONCE__";

/**
 * The reference page: plain DOM code, no framework and nothing fetched but /openapi.json and the
 * operations it tries. Text from the document is set with textContent, never parsed as HTML.
 */
const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>API reference</title>
<link rel="icon" href="data:,">
<style nonce="${NONCE}">
:root { --fg: #1d2330; --muted: #5b6475; --line: #dde1e8; --bg: #f6f7f9; --accent: #2457c5; font: 14px/1.45 system-ui, sans-serif; color: var(--fg); }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); }
header { position: sticky; top: 0; z-index: 2; display: flex; gap: 16px; align-items: center; flex-wrap: wrap; padding: 10px 20px; background: #fff; border-bottom: 1px solid var(--line); }
header h1 { font-size: 18px; margin: 0; }
header .version { color: var(--muted); }
header .spacer { flex: 1; }
header input { font: inherit; padding: 5px 8px; border: 1px solid var(--line); border-radius: 4px; }
#token { width: 260px; }
.layout { display: grid; grid-template-columns: 330px 1fr; }
nav { position: sticky; top: 53px; height: calc(100vh - 53px); overflow: auto; padding: 12px; border-right: 1px solid var(--line); background: #fff; }
nav h2 { font-size: 12px; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); margin: 14px 0 4px; }
nav a { display: flex; gap: 6px; align-items: baseline; padding: 2px 4px; color: var(--fg); text-decoration: none; border-radius: 3px; font-size: 13px; }
nav a:hover { background: var(--bg); }
main { padding: 16px 24px 80px; min-width: 0; }
.intro { color: var(--muted); max-width: 900px; }
section.tag > h2 { margin: 28px 0 4px; font-size: 20px; }
section.tag > p { margin: 0 0 10px; color: var(--muted); }
details.op { background: #fff; border: 1px solid var(--line); border-radius: 6px; margin: 8px 0; }
details.op > summary { display: flex; gap: 10px; align-items: baseline; padding: 8px 12px; cursor: pointer; list-style: none; }
details.op > summary::-webkit-details-marker { display: none; }
.op-body { padding: 4px 16px 16px; border-top: 1px solid var(--line); }
.method { display: inline-block; min-width: 56px; text-align: center; font: 600 11px/1.8 ui-monospace, monospace; text-transform: uppercase; border-radius: 3px; color: #fff; background: #6b7280; }
.method.get { background: #2f7d32; } .method.post { background: #2457c5; } .method.put { background: #b26a00; } .method.delete { background: #b3261e; } .method.patch { background: #7b3fb8; }
code, pre, textarea { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
.path { font-weight: 600; }
.summary { color: var(--muted); }
.lock { margin-left: auto; color: var(--muted); font-size: 12px; }
h3 { font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); margin: 16px 0 6px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 4px 8px; border-bottom: 1px solid var(--line); }
th { font-weight: 600; color: var(--muted); font-size: 12px; }
.schema { margin: 2px 0 2px 0; padding-left: 14px; border-left: 2px solid var(--line); }
.schema .prop { margin: 3px 0; }
.name { font-family: ui-monospace, monospace; font-weight: 600; }
.req { color: #b3261e; font-size: 11px; margin-left: 2px; }
.type { color: #7b3fb8; font-family: ui-monospace, monospace; font-size: 12px; margin-left: 6px; }
.desc { color: var(--muted); margin-left: 6px; }
.constraint { color: #8a5a00; font-size: 12px; margin-left: 6px; font-family: ui-monospace, monospace; }
details.ref > summary { cursor: pointer; color: var(--accent); font-family: ui-monospace, monospace; font-size: 12px; display: inline; }
.status { font-weight: 600; font-family: ui-monospace, monospace; }
.status.s2 { color: #2f7d32; } .status.s4 { color: #b26a00; } .status.s5 { color: #b3261e; }
.codes { margin: 2px 0 4px; }
.codes code { background: var(--bg); border: 1px solid var(--line); border-radius: 3px; padding: 0 4px; margin-right: 4px; }
.try { margin-top: 14px; padding: 10px 12px; background: var(--bg); border-radius: 6px; }
.try label { display: block; margin: 6px 0 2px; font-size: 12px; color: var(--muted); }
.try input, .try textarea { width: 100%; font: inherit; padding: 5px 8px; border: 1px solid var(--line); border-radius: 4px; background: #fff; }
.try textarea { font-family: ui-monospace, monospace; min-height: 140px; resize: vertical; }
.try button { margin-top: 8px; font: inherit; padding: 5px 14px; border: 0; border-radius: 4px; background: var(--accent); color: #fff; cursor: pointer; }
.try pre { background: #fff; border: 1px solid var(--line); border-radius: 4px; padding: 8px; overflow: auto; max-height: 480px; white-space: pre-wrap; word-break: break-word; }
.result-line { margin-top: 10px; }
.hidden { display: none !important; }
.error { color: #b3261e; }
@media (max-width: 800px) { .layout { grid-template-columns: 1fr; } nav { display: none; } }
</style>
</head>
<body>
<header>
  <h1 id="title">API reference</h1><span class="version" id="version"></span>
  <span class="spacer"></span>
  <input id="filter" type="search" placeholder="Filter operations" aria-label="Filter operations">
  <input id="token" type="password" autocomplete="off" placeholder="Bearer token for Try it" aria-label="Bearer token">
</header>
<div class="layout">
  <nav id="nav"></nav>
  <main id="main"><p>Loading <a href="/openapi.json">/openapi.json</a>&hellip;</p></main>
</div>
<script nonce="${NONCE}">
"use strict";
(function () {
  var DOC_URL = "/openapi.json";
  var METHODS = ["get", "put", "post", "delete", "patch", "head", "options"];
  var TOKEN_KEY = "rm-docs-token";
  var doc = null;

  function h(tag, attrs) {
    var el = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v === undefined || v === null || v === false) return;
      if (k.slice(0, 2) === "on") el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    });
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }
  function append(el, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(el, c); }); return; }
    el.append(child instanceof Node ? child : String(child));
  }

  function add(el) {
    for (var i = 1; i < arguments.length; i++) append(el, arguments[i]);
  }

  function refName(ref) { return ref.split("/").pop(); }
  function resolve(schema) {
    var seen = 0;
    while (schema && schema.$ref && seen++ < 20) schema = (doc.components && doc.components.schemas || {})[refName(schema.$ref)];
    return schema || {};
  }

  function typeLabel(s) {
    if (s.$ref) return refName(s.$ref);
    if (s.const !== undefined) return JSON.stringify(s.const);
    var t = Array.isArray(s.type) ? s.type.join(" | ") : s.type;
    if (t === "array") return "array of " + (s.items ? typeLabel(s.items) : "any");
    if (!t && (s.anyOf || s.oneOf)) return (s.anyOf || s.oneOf).map(typeLabel).join(" | ");
    if (!t && s.enum) return "enum";
    if (t === "object" && s.additionalProperties && typeof s.additionalProperties === "object" && !s.properties) {
      return "map of " + (Object.keys(s.additionalProperties).length ? typeLabel(s.additionalProperties) : "any");
    }
    return (t || "any") + (s.format ? " (" + s.format + ")" : "");
  }

  function constraints(s) {
    var out = [];
    if (s.enum) out.push("one of " + s.enum.map(function (v) { return JSON.stringify(v); }).join(", "));
    [["minimum", ">= "], ["exclusiveMinimum", "> "], ["maximum", "<= "], ["exclusiveMaximum", "< "], ["minLength", "min length "], ["maxLength", "max length "],
     ["minItems", "min items "], ["maxItems", "max items "], ["pattern", "pattern "], ["default", "default "]].forEach(function (c) {
      if (s[c[0]] !== undefined) out.push(c[1] + (typeof s[c[0]] === "string" && c[0] !== "pattern" ? JSON.stringify(s[c[0]]) : s[c[0]]));
    });
    if (s.example !== undefined) out.push("e.g. " + JSON.stringify(s.example));
    return out.length ? h("span", { class: "constraint" }, out.join("; ")) : null;
  }

  /** A schema as a tree; a $ref opens on demand, so recursive schemas stay finite. */
  function schemaView(schema) {
    if (!schema) return null;
    if (schema.$ref) {
      var d = h("details", { class: "ref" }, h("summary", {}, refName(schema.$ref)));
      d.addEventListener("toggle", function () {
        if (d.open && d.childNodes.length === 1) add(d, schemaView(resolve(schema)));
      });
      return d;
    }
    var box = h("div", { class: "schema" });
    if (schema.description) add(box, h("div", { class: "desc" }, schema.description));
    var variants = schema.anyOf || schema.oneOf || schema.allOf;
    if (variants) {
      add(box, h("div", { class: "desc" }, schema.allOf ? "all of:" : "one of:"));
      variants.forEach(function (v) { add(box, h("div", { class: "prop" }, h("span", { class: "type" }, typeLabel(v)), isLeaf(v) ? constraints(v) : schemaView(v))); });
      return box;
    }
    if (schema.type === "array" && schema.items) {
      add(box, h("div", { class: "prop" }, h("span", { class: "type" }, "items: " + typeLabel(schema.items)), isLeaf(schema.items) ? constraints(schema.items) : schemaView(schema.items)));
      return box;
    }
    var props = schema.properties || {};
    var required = schema.required || [];
    Object.keys(props).forEach(function (name) {
      var p = props[name];
      add(box, h("div", { class: "prop" },
        h("span", { class: "name" }, name), required.indexOf(name) >= 0 ? h("span", { class: "req", title: "required" }, "*") : null,
        p.$ref ? null : h("span", { class: "type" }, typeLabel(p)),
        p.description ? h("span", { class: "desc" }, p.description) : null,
        constraints(p),
        isLeaf(p) ? null : schemaView(p.description ? Object.assign({}, p, { description: undefined }) : p)));
    });
    if (schema.additionalProperties && typeof schema.additionalProperties === "object" && Object.keys(schema.additionalProperties).length && !isLeaf(schema.additionalProperties)) {
      add(box, h("div", { class: "prop" }, h("span", { class: "name" }, "{key}"), schemaView(schema.additionalProperties)));
    }
    if (!Object.keys(props).length && isLeaf(schema)) add(box, h("span", { class: "type" }, typeLabel(schema)), constraints(schema));
    return box;
  }
  function isLeaf(s) {
    if (s.$ref || s.properties || s.anyOf || s.oneOf || s.allOf) return false;
    if (s.type === "array") return !s.items || isLeaf(s.items);
    if (s.additionalProperties && typeof s.additionalProperties === "object" && Object.keys(s.additionalProperties).length) return isLeaf(s.additionalProperties);
    return true;
  }

  /** A starting value for a request body: required fields, and optional ones that carry an example. */
  function exampleOf(schema, depth) {
    depth = depth || 0;
    if (!schema || depth > 8) return null;
    if (schema.$ref) return exampleOf(resolve(schema), depth + 1);
    if (schema.example !== undefined) return schema.example;
    if (Array.isArray(schema.examples) && schema.examples.length) return schema.examples[0];
    if (schema.default !== undefined) return schema.default;
    if (schema.const !== undefined) return schema.const;
    if (schema.enum) return schema.enum[0];
    var variants = schema.anyOf || schema.oneOf;
    if (variants) return exampleOf(variants.filter(function (v) { return v.type !== "null"; })[0] || variants[0], depth + 1);
    var type = Array.isArray(schema.type) ? schema.type.filter(function (t) { return t !== "null"; })[0] : schema.type;
    if (type === "object" || schema.properties) {
      var out = {};
      var required = schema.required || [];
      Object.keys(schema.properties || {}).forEach(function (name) {
        var p = schema.properties[name];
        if (required.indexOf(name) >= 0 || resolve(p).example !== undefined) out[name] = exampleOf(p, depth + 1);
      });
      return out;
    }
    if (type === "array") return schema.items ? [exampleOf(schema.items, depth + 1)] : [];
    if (type === "integer" || type === "number") return schema.minimum !== undefined ? schema.minimum : 1;
    if (type === "boolean") return true;
    if (type === "string") return "";
    return null;
  }

  function operations() {
    var ops = [];
    Object.keys(doc.paths || {}).forEach(function (path) {
      var item = doc.paths[path];
      METHODS.forEach(function (method) {
        var op = item[method];
        if (!op) return;
        ops.push({ path: path, method: method, op: op, params: (item.parameters || []).concat(op.parameters || []) });
      });
    });
    return ops;
  }

  function secured(op) {
    var sec = op.security !== undefined ? op.security : doc.security;
    return !!(sec && sec.length && Object.keys(sec[0]).length);
  }

  function paramsTable(params) {
    return h("table", {}, h("tr", {}, h("th", {}, "name"), h("th", {}, "in"), h("th", {}, "type"), h("th", {}, "description")),
      params.map(function (p) {
        var s = p.schema || {};
        return h("tr", {},
          h("td", {}, h("span", { class: "name" }, p.name), p.required ? h("span", { class: "req", title: "required" }, "*") : null),
          h("td", {}, p.in), h("td", {}, h("span", { class: "type" }, typeLabel(s)), constraints(resolve(s))),
          h("td", {}, p.description || resolve(s).description || ""));
      }));
  }

  function responsesView(responses) {
    return Object.keys(responses || {}).map(function (status) {
      var r = responses[status];
      var media = r.content || {};
      return h("div", { class: "prop" },
        h("span", { class: "status s" + status[0] }, status), " ", h("span", { class: "desc" }, r.description || ""),
        Object.keys(r.headers || {}).map(function (name) {
          return h("div", { class: "desc" }, "header ", h("span", { class: "name" }, name), ": " + (r.headers[name].description || ""));
        }),
        Object.keys(media).map(function (type) {
          var m = media[type];
          var codes = Object.keys(m.examples || {});
          return h("div", {},
            h("span", { class: "type" }, type),
            codes.length ? h("div", { class: "codes" }, "codes: ", codes.map(function (c) { return h("code", {}, c); })) : null,
            m.schema && !(m.schema.type === "string" && type.indexOf("json") < 0) ? schemaView(m.schema) : null);
        }));
    });
  }

  function curlOf(method, url, hasToken, body) {
    var parts = ["curl -sS -X " + method.toUpperCase(), "'" + location.origin + url + "'"];
    if (hasToken) parts.push("-H 'authorization: Bearer $TOKEN'");
    if (body !== undefined) parts.push("-H 'content-type: application/json'", "-d '" + body.replace(/'/g, "'\\\\''") + "'");
    return parts.join(" ");
  }

  function tryForm(entry) {
    var op = entry.op;
    var inputs = {};
    var form = h("div", { class: "try" }, h("h3", {}, "Try it"));
    entry.params.filter(function (p) { return p.in === "path" || p.in === "query"; }).forEach(function (p) {
      var s = resolve(p.schema || {});
      var input = h("input", { placeholder: s.example !== undefined ? String(s.example) : (s.enum ? s.enum.join(" | ") : ""), "aria-label": p.name });
      inputs[p.name] = { param: p, input: input };
      add(form, h("label", {}, p.name + " (" + p.in + (p.required ? ", required" : "") + ")"), input);
    });
    var bodyMedia = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
    var editor = null;
    if (bodyMedia) {
      editor = h("textarea", { spellcheck: "false", "aria-label": "request body" });
      editor.value = JSON.stringify(exampleOf(bodyMedia.schema), null, 2);
      add(form, h("label", {}, "body (application/json)"), editor);
    }
    var statusLine = h("div", { class: "result-line" });
    var curl = h("pre", { class: "hidden" });
    var out = h("pre", { class: "hidden" });
    var send = h("button", { type: "button" }, "Send");
    send.addEventListener("click", function () {
      var missing = [];
      var url = entry.path.replace(/\\{([^}]+)\\}/g, function (_, name) {
        var v = inputs[name] ? inputs[name].input.value.trim() : "";
        if (!v) missing.push(name);
        return encodeURIComponent(v);
      });
      var query = new URLSearchParams();
      Object.keys(inputs).forEach(function (name) {
        var i = inputs[name];
        if (i.param.in === "query" && i.input.value.trim() !== "") query.set(name, i.input.value.trim());
      });
      if (missing.length) { statusLine.replaceChildren(h("span", { class: "error" }, "fill in " + missing.join(", "))); return; }
      if (String(query)) url += "?" + query;
      var token = document.getElementById("token").value.trim();
      var headers = {};
      if (token) headers.authorization = "Bearer " + token;
      var body;
      if (editor && editor.value.trim() !== "") { body = editor.value; headers["content-type"] = "application/json"; }
      curl.textContent = curlOf(entry.method, url, !!token, body);
      curl.classList.remove("hidden");
      statusLine.replaceChildren("sending\\u2026");
      var started = performance.now();
      fetch(url, { method: entry.method.toUpperCase(), headers: headers, body: body }).then(function (res) {
        return res.text().then(function (text) {
          var ms = Math.round(performance.now() - started);
          var trace = res.headers.get("x-trace-id");
          var retry = res.headers.get("retry-after");
          statusLine.replaceChildren(h("span", { class: "status s" + String(res.status)[0] }, res.status + " " + res.statusText), " \\u00b7 " + ms + " ms",
            trace ? " \\u00b7 trace " + trace : "", retry ? " \\u00b7 Retry-After " + retry : "");
          var shown = text;
          try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON: show as is */ }
          out.textContent = shown;
          out.classList.remove("hidden");
        });
      }).catch(function (err) {
        statusLine.replaceChildren(h("span", { class: "error" }, "request failed: " + err.message));
      });
    });
    add(form, send, statusLine, curl, out);
    return form;
  }

  /** A path that wraps only after a slash. */
  function breakable(path) {
    return path.split("/").map(function (seg, i) { return i ? [h("wbr"), "/" + seg] : seg; });
  }

  function opId(entry) { return "op-" + (entry.op.operationId || (entry.method + entry.path)).replace(/[^A-Za-z0-9_-]/g, "-"); }

  function operationView(entry) {
    var op = entry.op;
    var body = h("div", { class: "op-body" });
    var rendered = false;
    var details = h("details", { class: "op", id: opId(entry), "data-search": (entry.method + " " + entry.path + " " + (op.summary || "") + " " + (op.operationId || "")).toLowerCase() },
      h("summary", {}, h("span", { class: "method " + entry.method }, entry.method), h("code", { class: "path" }, entry.path),
        h("span", { class: "summary" }, op.summary || ""), h("span", { class: "lock" }, secured(op) ? "bearer token" : "no auth")),
      body);
    // Built when first opened: the page stays light with many operations.
    details.addEventListener("toggle", function () {
      if (!details.open || rendered) return;
      rendered = true;
      if (op.description) add(body, h("p", {}, op.description));
      add(body, h("div", { class: "desc" }, "operationId ", h("code", {}, op.operationId || "")));
      if (entry.params.length) add(body, h("h3", {}, "Parameters"), paramsTable(entry.params));
      var rb = op.requestBody;
      if (rb && rb.content) {
        add(body, h("h3", {}, "Request body" + (rb.required ? " (required)" : "")));
        Object.keys(rb.content).forEach(function (type) { add(body, h("span", { class: "type" }, type), schemaView(rb.content[type].schema)); });
      }
      add(body, h("h3", {}, "Responses"), responsesView(op.responses));
      add(body, tryForm(entry));
    });
    return details;
  }

  function render() {
    document.title = doc.info.title + " API reference";
    document.getElementById("title").textContent = doc.info.title;
    document.getElementById("version").textContent = "v" + doc.info.version + " \\u00b7 OpenAPI " + doc.openapi;
    var main = document.getElementById("main");
    var nav = document.getElementById("nav");
    main.replaceChildren(h("p", { class: "intro" }, doc.info.description || ""), h("p", { class: "intro" }, "Source: ", h("a", { href: DOC_URL }, DOC_URL)));
    nav.replaceChildren();
    var ops = operations();
    var tagNames = (doc.tags || []).map(function (t) { return t.name; });
    ops.forEach(function (e) { (e.op.tags && e.op.tags.length ? e.op.tags : ["other"]).forEach(function (t) { if (tagNames.indexOf(t) < 0) tagNames.push(t); }); });
    tagNames.forEach(function (tag) {
      var inTag = ops.filter(function (e) { return (e.op.tags && e.op.tags.length ? e.op.tags : ["other"]).indexOf(tag) >= 0; });
      if (!inTag.length) return;
      var info = (doc.tags || []).filter(function (t) { return t.name === tag; })[0];
      var section = h("section", { class: "tag", id: "tag-" + tag }, h("h2", {}, tag), info && info.description ? h("p", {}, info.description) : null);
      add(nav, h("h2", {}, tag));
      inTag.forEach(function (e) {
        var view = operationView(e);
        add(section, view);
        var link = h("a", { href: "#" + view.id, "data-search": view.getAttribute("data-search") }, h("span", { class: "method " + e.method }, e.method), h("code", {}, breakable(e.path)));
        link.addEventListener("click", function () { view.open = true; });
        add(nav, link);
      });
      add(main, section);
    });
    var schemas = (doc.components && doc.components.schemas) || {};
    var schemaSection = h("section", { class: "tag", id: "schemas" }, h("h2", {}, "Schemas"));
    Object.keys(schemas).sort().forEach(function (name) {
      add(schemaSection, h("details", { class: "op", id: "schema-" + name, "data-search": name.toLowerCase() },
        h("summary", {}, h("code", { class: "path" }, name), h("span", { class: "summary" }, schemas[name].description || "")),
        h("div", { class: "op-body" }, schemaView(Object.assign({}, schemas[name], { description: undefined })))));
    });
    add(main, schemaSection);
    openHash();
  }

  /** #op-... or #schema-... opens that entry (links from the nav, or shared by URL). */
  function openHash() {
    var target = location.hash ? document.getElementById(decodeURIComponent(location.hash.slice(1))) : null;
    if (target && target.tagName === "DETAILS") { target.open = true; target.scrollIntoView(); }
  }

  function applyFilter() {
    var q = document.getElementById("filter").value.trim().toLowerCase();
    document.querySelectorAll("[data-search]").forEach(function (el) { el.classList.toggle("hidden", !!q && el.getAttribute("data-search").indexOf(q) < 0); });
    document.querySelectorAll("section.tag").forEach(function (s) {
      s.classList.toggle("hidden", !!q && !s.querySelector("details.op:not(.hidden)"));
    });
  }

  var tokenInput = document.getElementById("token");
  tokenInput.value = sessionStorage.getItem(TOKEN_KEY) || "";
  tokenInput.addEventListener("change", function () { sessionStorage.setItem(TOKEN_KEY, tokenInput.value.trim()); });
  document.getElementById("filter").addEventListener("input", applyFilter);
  window.addEventListener("hashchange", function () { if (doc) openHash(); });

  fetch(DOC_URL).then(function (res) {
    if (!res.ok) throw new Error(DOC_URL + " answered " + res.status);
    return res.json();
  }).then(function (d) { doc = d; render(); }).catch(function (err) {
    document.getElementById("main").replaceChildren(h("p", { class: "error" }, "Could not load " + DOC_URL + ": " + err.message));
  });
})();
</script>
</body>
</html>
`;
