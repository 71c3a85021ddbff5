#!/usr/bin/env node
// Fills vendor/swagger-ui/ (not kept in git) with Swagger UI's browser bundle from node_modules: the
// swagger-ui-dist devDependency, pinned in package.json, so the files are exactly those of the lockfile.
// The worker bundles them as text modules (wrangler's rule for *.txt) and serves them at /docs/swagger-ui/
// (src/routes/docs-files.ts): no static-assets router in front of the API (docs/decisions/006).
// Run by npm install (postinstall), npm start, npm run deploy and .ci/run; run `npm run docs:assets` by
// hand after changing the version.
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const FROM = join(ROOT, "node_modules", "swagger-ui-dist");
const TO = join(ROOT, "vendor", "swagger-ui");
/** What /docs loads, and the licence texts that must travel with the bundle (Apache-2.0); `.txt` makes each a text module. */
const FILES = ["swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"];

if (!existsSync(join(FROM, "package.json"))) {
  console.error("docs-assets: node_modules/swagger-ui-dist is missing: run npm install (it is a devDependency)");
  process.exit(1);
}
// A clean copy: no file of an earlier version is left behind.
rmSync(TO, { recursive: true, force: true });
mkdirSync(TO, { recursive: true });
for (const file of FILES) copyFileSync(join(FROM, file), join(TO, `${file}.txt`));
// The licence the bundle's header points at, next to the bundle.
copyFileSync(join(FROM, "swagger-ui-bundle.js.LICENSE.txt"), join(TO, "swagger-ui-bundle.js.LICENSE.txt"));
const { version } = JSON.parse(readFileSync(join(FROM, "package.json"), "utf8"));
console.log(`docs-assets: Swagger UI ${version} -> vendor/swagger-ui/`);
