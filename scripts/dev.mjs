#!/usr/bin/env node
// `npm start`: prepare local secrets and the local D1 (the migrations, then the demo clients and keys of
// seed.sql, both idempotent), then run `wrangler dev` offline with the cron test endpoint, the Resource
// Manager and the sample workers of examples/ in one session (so the service bindings resolve). Extra
// arguments go to wrangler dev.
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync } from "node:fs";
import { DEV_CONFIGS } from "./local-wrangler.mjs";

const env = { ...process.env, CLOUDFLARE_CF_FETCH_ENABLED: "false", WRANGLER_SEND_METRICS: "false", CI: "true" };
const wrangler = (args) => spawnSync("npx", ["--no-install", "wrangler", ...args], { stdio: "inherit", env });

if (!existsSync(".dev.vars")) {
  copyFileSync(".dev.vars.example", ".dev.vars");
  console.log("created .dev.vars from .dev.vars.example (local secrets)");
}
// A local D1 made by an earlier version is upgraded in place: its tables are kept, later migrations add the rest.
for (const args of [["d1", "migrations", "apply", "DB", "--local"], ["d1", "execute", "DB", "--local", "--file", "seed.sql"]]) {
  const r = wrangler(args);
  if (r.status !== 0) process.exit(r.status ?? 1);
}
const dev = spawn(
  "npx",
  ["--no-install", "wrangler", "dev", ...DEV_CONFIGS, "--ip", "127.0.0.1", "--port", process.env.PORT ?? "8787", "--test-scheduled", ...process.argv.slice(2)],
  { stdio: "inherit", env: { ...env, CI: process.env.CI ?? "" } },
);
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => dev.kill(sig));
dev.on("exit", (code) => process.exit(code ?? 0));
