/// <reference path="../text-modules.d.ts" />
import { Hono } from "hono";
import { fnv1a } from "../domain/hash";
import type { AppEnv } from "../http/context";
// Swagger UI, copied from node_modules by scripts/docs-assets.mjs and bundled as text modules (wrangler's
// default rule for *.txt; src/text-modules.d.ts types them). Served by the worker rather than by Workers
// static assets: an assets router in front of every request cost the consume hot path more CPU than its
// whole decision (docs/decisions/006-docs-served-by-the-worker.md).
import BUNDLE from "../../vendor/swagger-ui/swagger-ui-bundle.js.txt";
import BUNDLE_LICENSE from "../../vendor/swagger-ui/swagger-ui-bundle.js.LICENSE.txt";
import STYLES from "../../vendor/swagger-ui/swagger-ui.css.txt";
import LICENSE from "../../vendor/swagger-ui/LICENSE.txt";
import NOTICE from "../../vendor/swagger-ui/NOTICE.txt";

/** /docs's own script: Swagger UI over this worker's OpenAPI document. A file, since the page runs no inline script. */
const INIT = `// /docs: Swagger UI over this worker's own OpenAPI document.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  deepLinking: true,
  // Operations open with their parameters and "Try it out" ready; requests go to this origin only.
  tryItOutEnabled: true,
  displayRequestDuration: true,
  // No badge from the public validator service: the page loads nothing from another origin.
  validatorUrl: null,
});
`;

const JS = "text/javascript; charset=utf-8";
const TEXT = "text/plain; charset=utf-8";

/** The files /docs loads, and the licence texts that travel with Swagger UI (Apache-2.0). */
export const DOCS_FILES: Record<string, { body: string; type: string }> = {
  "/docs/init.js": { body: INIT, type: JS },
  "/docs/swagger-ui/swagger-ui-bundle.js": { body: BUNDLE, type: JS },
  "/docs/swagger-ui/swagger-ui-bundle.js.LICENSE.txt": { body: BUNDLE_LICENSE, type: TEXT },
  "/docs/swagger-ui/swagger-ui.css": { body: STYLES, type: "text/css; charset=utf-8" },
  "/docs/swagger-ui/LICENSE": { body: LICENSE, type: TEXT },
  "/docs/swagger-ui/NOTICE": { body: NOTICE, type: TEXT },
};

/** A strong validator per file: the files change only with a deploy, so their length and a cheap hash name them. */
function etagOf(body: string): string {
  return `"${body.length.toString(36)}-${fnv1a(body).toString(36)}"`;
}
const ETAGS = new Map<string, string>();

/**
 * GET (and HEAD) of the files above; not part of the OpenAPI document (they are the reference page's
 * parts, not API). An hour in caches, then revalidated by ETag; `nosniff` and same-origin only.
 */
export function docsFileRoutes() {
  const app = new Hono<AppEnv>();
  for (const [path, file] of Object.entries(DOCS_FILES)) {
    app.get(path, (c) => {
      let etag = ETAGS.get(path);
      if (!etag) ETAGS.set(path, (etag = etagOf(file.body)));
      const headers = {
        "content-type": file.type,
        "cache-control": "public, max-age=3600",
        etag,
        "x-content-type-options": "nosniff",
        "cross-origin-resource-policy": "same-origin",
      };
      if (c.req.header("if-none-match") === etag) return c.body(null, 304, headers);
      return c.body(file.body, 200, headers);
    });
  }
  return app;
}
