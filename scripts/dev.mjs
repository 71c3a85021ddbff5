#!/usr/bin/env node
// `npm start`: prepare local secrets and the local D1 (schema + demo data, idempotent), then run
// `wrangler dev` offline with the cron test endpoint, the Resource Manager and the sample workers of
// examples/ in one session (so the service bindings resolve). Extra arguments go to wrangler dev.
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync } from "node:fs";
import { DEV_CONFIGS } from "./local-wrangler.mjs";

const env = { ...process.env, CLOUDFLARE_CF_FETCH_ENABLED: "false", WRANGLER_SEND_METRICS: "false" };
const wrangler = (args, opts = {}) => spawnSync("npx", ["--no-install", "wrangler", ...args], { stdio: "inherit", env, ...opts });

if (!existsSync(".dev.vars")) {
  copyFileSync(".dev.vars.example", ".dev.vars");
  console.log("created .dev.vars from .dev.vars.example (local secrets)");
}
// Columns added to tables that existed before them: CREATE TABLE IF NOT EXISTS does not add them to a
// local D1 made by an older version, so add each one; "duplicate column" means it is already there.
for (const [table, column] of [["api_keys", "name TEXT"], ["client_quotas", "weight INTEGER CHECK (weight IS NULL OR weight BETWEEN 1 AND 1000)"]]) {
  const r = wrangler(["d1", "execute", "DB", "--local", "--command", `ALTER TABLE ${table} ADD COLUMN ${column}`], { stdio: "pipe", encoding: "utf8" });
  if (r.status !== 0 && !/duplicate column|no such table/i.test(`${r.stdout}${r.stderr}`)) {
    process.stderr.write(`${r.stdout}${r.stderr}`);
    process.exit(r.status ?? 1);
  }
}
for (const file of ["schema.sql", "seed.sql"]) {
  const r = wrangler(["d1", "execute", "DB", "--local", "--file", file]);
  if (r.status !== 0) process.exit(r.status ?? 1);
}
const dev = spawn(
  "npx",
  ["--no-install", "wrangler", "dev", ...DEV_CONFIGS, "--ip", "127.0.0.1", "--port", process.env.PORT ?? "8787", "--test-scheduled", ...process.argv.slice(2)],
  { stdio: "inherit", env },
);
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => dev.kill(sig));
dev.on("exit", (code) => process.exit(code ?? 0));
