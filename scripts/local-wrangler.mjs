// What the scripts that run the service under a local `wrangler dev` share (ops/check-metrics.mjs, scripts/docs-check.mjs,
// test/browser/dashboard-service.mjs, npm start): the environment, the configs of one session, a free
// port, and wrangler children in their own process groups.
import { spawn } from "node:child_process";
import { createWriteStream, readdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
export const WRANGLER = join(ROOT, "node_modules", "wrangler", "bin", "wrangler.js");
export const HOST = "127.0.0.1";

/** The Resource Manager and the sample workers of examples/ in one session, so the service bindings resolve. */
export const DEV_CONFIGS = ["wrangler.toml", "examples/content-generator/wrangler.toml", "examples/notifier/wrangler.toml"].flatMap((c) => ["-c", c]);

/**
 * Offline and quiet. The inspector proxy is dev tooling these runs do not need: it POSTs every console
 * line to wrangler's node process (see bench/queue.mjs); VSCODE_INSPECTOR_OPTIONS makes wrangler skip it.
 */
export const WRANGLER_ENV = {
  ...process.env,
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
  WRANGLER_SEND_METRICS: "false",
  FORCE_COLOR: "0",
  NO_COLOR: "1",
  VSCODE_INSPECTOR_OPTIONS: "{}",
};

/** A wrangler child in its own process group (node, workerd, esbuild), so the whole tree can be ended. */
export function spawnWrangler(args) {
  return spawn(process.execPath, [WRANGLER, ...args], { cwd: ROOT, env: WRANGLER_ENV, detached: true, stdio: ["ignore", "pipe", "pipe"] });
}

/** Signal a child's whole process group; a group already gone is fine. */
export function killGroup(child, signal) {
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

/** A port nothing listens on now, on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, HOST, () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * A wrangler child (see spawnWrangler) whose output goes to `logFile` (at most `capBytes`) with its last
 * lines kept for error messages: `child.exited` resolves with { code, signal }, `child.tail()` gives them.
 */
export function startWrangler(args, { logFile, env, capBytes = Infinity, tailLines = 60 } = {}) {
  const child = env
    ? spawn(process.execPath, [WRANGLER, ...args], { cwd: ROOT, env, detached: true, stdio: ["ignore", "pipe", "pipe"] })
    : spawnWrangler(args);
  const log = logFile ? createWriteStream(logFile, { flags: "a" }) : null;
  const tail = [];
  let written = 0;
  const keep = (chunk) => {
    if (written < capBytes) {
      written += chunk.length;
      log?.write(written <= capBytes ? chunk : `\n[log capped at ${capBytes} bytes; further output dropped]\n`);
    }
    tail.push(chunk.toString());
    while (tail.length > tailLines) tail.shift();
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  child.exited = new Promise((resolve) => child.on("exit", (code, signal) => {
    log?.end();
    resolve({ code, signal });
  }));
  child.tail = () => tail.join("").split("\n").slice(-30).join("\n");
  return child;
}

/** Run `sqlFile` into the local D1 under `persist` with one `wrangler d1 execute`, stopped after 90 s; throws with its output's end when it fails. */
export async function executeD1File({ persist, sqlFile, logFile }) {
  const d1 = startWrangler(["d1", "execute", "DB", "--local", "--persist-to", persist, "--yes", "--file", sqlFile], { logFile });
  const timer = setTimeout(() => killGroup(d1, "SIGKILL"), 90_000);
  const applied = await d1.exited;
  clearTimeout(timer);
  if (applied.code !== 0) throw new Error(`wrangler d1 execute failed (${applied.signal ?? applied.code}):\n${d1.tail()}`);
}

/** The first port from `first` on such that it and port + 1000 (wrangler's inspector) are both free. */
export async function freePortPair(first, span = 60) {
  for (let p = first; p < first + span; p++) {
    if ((await portFree(p)) && (await portFree(p + 1000))) return p;
  }
  throw new Error(`no free port pair (p, p+1000) from ${first} to ${first + span - 1}`);
}

function portFree(port) {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, HOST, () => server.close(() => resolve(true)));
  });
}

/**
 * The SQL that builds a fresh local D1 as a deployment's is built: every migration of `dir`/migrations in
 * order, then the demo clients and keys of seed.sql. One file for one `wrangler d1 execute` call, for
 * throwaway databases (tests, benchmarks); `npm start` applies the migrations with wrangler's own command.
 */
export function freshD1Sql(dir = ROOT) {
  const migrations = join(dir, "migrations");
  const files = readdirSync(migrations).filter((f) => f.endsWith(".sql")).sort((a, b) => parseInt(a) - parseInt(b));
  return [...files.map((f) => join(migrations, f)), join(dir, "seed.sql")].map((f) => readFileSync(f, "utf8")).join("\n");
}
