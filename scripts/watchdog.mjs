#!/usr/bin/env node
// Run a command (CI: `npm test`), passing its output through, and stop it when it has printed nothing
// for --idle seconds: a hang, not a slow test (the slowest test file takes under 30 s and vitest
// reports every file as it ends). A hung run is run once more, saying so; a run that fails is never
// rerun. Exit status: the command's, or 124 when the last run hung too.
//
//   node scripts/watchdog.mjs [--idle 300] [--attempts 2] -- npm test
//
// Why: full runs used to stop reporting with every process idle (0% CPU) and no test timeout firing,
// and CI would then wait out its 90 minutes. That hang's cause is found and fixed (a log line's RPC
// call that was never answered: test/support/setup.ts, docs/architecture.md, Tests and CI); the
// watchdog stays, so that a hang of any other cause costs minutes, not the CI run.

import { spawn } from "node:child_process";

const argv = process.argv.slice(2);
const sep = argv.indexOf("--");
if (sep < 0 || sep === argv.length - 1) {
  console.error("usage: node scripts/watchdog.mjs [--idle SECONDS] [--attempts N] -- COMMAND [ARGS...]");
  process.exit(2);
}
const opts = new Map();
for (let i = 0; i < sep; i += 2) opts.set(argv[i], argv[i + 1]);
const IDLE_S = Number(opts.get("--idle") ?? 300);
const ATTEMPTS = Number(opts.get("--attempts") ?? 2);
if (!(IDLE_S > 0) || !(ATTEMPTS >= 1)) {
  console.error("watchdog: --idle must be > 0 and --attempts >= 1");
  process.exit(2);
}
const [command, ...args] = argv.slice(sep + 1);

/** One run: resolves with its exit status, or "hung" after IDLE_S seconds without output. */
function run() {
  return new Promise((resolve) => {
    // Its own process group, so that a hung run is stopped with everything it started (workerd).
    const child = spawn(command, args, { stdio: ["inherit", "pipe", "pipe"], detached: true });
    let timer;
    let hung = false;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        hung = true;
        console.error(`\nwatchdog: no output for ${IDLE_S} s: stopping the run (process group ${child.pid})`);
        try { process.kill(-child.pid, "SIGKILL"); } catch { /* already gone */ }
      }, IDLE_S * 1000);
    };
    arm();
    child.stdout.on("data", (d) => { process.stdout.write(d); arm(); });
    child.stderr.on("data", (d) => { process.stderr.write(d); arm(); });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve(hung ? "hung" : code ?? (signal ? 128 : 1));
    });
  });
}

for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
  const result = await run();
  if (result !== "hung") process.exit(result);
  if (attempt < ATTEMPTS) console.error(`watchdog: the run hung; running it again (attempt ${attempt + 1} of ${ATTEMPTS})`);
}
console.error(`watchdog: every run hung (${ATTEMPTS}); failing`);
process.exit(124);
