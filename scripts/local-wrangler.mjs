// What the scripts that run the service under a local `wrangler dev` share (ops/check-metrics.mjs,
// test/browser/dashboard.browser.mjs, npm start): the environment, the configs of one session, a free
// port, and wrangler children in their own process groups.
import { spawn } from "node:child_process";
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
