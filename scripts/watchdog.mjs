#!/usr/bin/env node
// Run a command (CI: `npm test`), passing its output through, and stop it when it has printed nothing
// for --idle seconds: a hang, not a slow test (the slowest test file takes under 30 s and vitest
// reports every file as it ends). A hung run is run once more, saying so. So is a run that failed only
// because vitest's pool could not start a test file ("[vitest-pool]: Failed to start", with no test
// failed: that file's tests never ran). Any other failing run is never rerun. Exit status: the
// command's, or 124 when the last run hung too.
//
//   node scripts/watchdog.mjs [--idle 300] [--attempts 2] -- npm test
//
// Why: full runs used to stop reporting with every process idle (0% CPU) and no test timeout firing,
// and CI would then wait out its 90 minutes. That hang's cause is found and fixed (a log line's RPC
// call that was never answered: test/support/setup.ts, docs/architecture.md, Tests and CI); the
// watchdog stays, so that a hang of any other cause costs minutes, not the CI run. The pool's start
// failure is miniflare's: its synchronous call into a new runtime once read no answer (an assertion in
// miniflare's SynchronousFetcher) in one of about fifteen full runs, every test that ran having passed.

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

/** vitest could not start a test file, and no test failed (the summary counts no failure). */
const POOL_START_FAILED = /\[vitest-pool\]: Failed to start/;
const TEST_FAILED = /\b\d+ failed\b/;
const ANSI = /\x1b\[[0-9;]*m/g;

/** Whether a failed run's output shows only the pool's start failure (see the header). */
function onlyPoolStartFailed(output) {
  const text = output.replace(ANSI, "");
  return POOL_START_FAILED.test(text) && !TEST_FAILED.test(text);
}

/** One run: resolves with its exit status or "hung" (after IDLE_S seconds without output), and its output. */
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
    const output = [];
    child.stdout.on("data", (d) => { process.stdout.write(d); output.push(d); arm(); });
    child.stderr.on("data", (d) => { process.stderr.write(d); output.push(d); arm(); });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ status: hung ? "hung" : code ?? (signal ? 128 : 1), output: Buffer.concat(output).toString("utf8") });
    });
  });
}

for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
  const { status, output } = await run();
  const last = attempt === ATTEMPTS;
  if (status === "hung") {
    if (!last) console.error(`watchdog: the run hung; running it again (attempt ${attempt + 1} of ${ATTEMPTS})`);
    continue;
  }
  if (status !== 0 && !last && onlyPoolStartFailed(output)) {
    console.error(`watchdog: the run failed only because vitest's pool could not start a test file (no test failed); running it again (attempt ${attempt + 1} of ${ATTEMPTS})`);
    continue;
  }
  process.exit(status);
}
console.error(`watchdog: the last of ${ATTEMPTS} runs hung; failing`);
process.exit(124);
